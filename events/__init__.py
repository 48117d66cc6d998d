"""Cosmos DB change feed -> CloudEvents integration events -> Azure Service Bus."""
