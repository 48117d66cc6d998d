"""Handlers of this deployment's declared consumers (``serviceBus.consumers[].handler``)."""
