"""Benchmarks: `python -m bench` runs the main() of every bench/<area>_<what>.py module."""
