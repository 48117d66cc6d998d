"""The pure core: documents become events and messages, and a batch is relayed.

No module here imports an SDK, reads a setting or knows a host; ports (``Publisher``,
``QuarantineStore``, ``Inbox``) come with in-memory backends that share contract tests with
the adapters.
"""
