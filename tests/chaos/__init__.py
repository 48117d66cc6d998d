"""Seeded chaos test of the relay process against the local dev stack."""
