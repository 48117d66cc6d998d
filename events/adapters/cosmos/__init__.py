"""Cosmos DB adapters: quarantine and inbox stores, outbox writer, event store, change feed
and leases, and the one table that translates Cosmos DB errors."""
