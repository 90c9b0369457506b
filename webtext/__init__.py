"""The ground floor of the webtext pipeline: settings, the versioned artifact store, the
published dataset's readers.

Stage packages (`scraping`, `dedup`, `training`, `evaluation`), `flows` and the application
layer (`webtext_app`: the CLI and the demo) import from here; nothing here imports any of
them (tests/test_layers.py checks).
"""

__version__ = "0.1.0"
