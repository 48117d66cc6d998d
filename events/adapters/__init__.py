"""Adapters: the only modules that import the Azure SDKs. They take SDK objects (clients,
containers) and never read settings; each SDK's errors are translated in one table."""
