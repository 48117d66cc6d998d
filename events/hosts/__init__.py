"""Hosts: the composition root and what runs the core (Functions triggers, the long-running
processor, the command line). Only ``function_app.py`` and ``events/__main__.py`` import them."""
