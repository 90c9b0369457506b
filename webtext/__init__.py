"""Shared plumbing of the webtext pipeline: settings, the versioned artifact store, the CLI.

Stage packages (`scraping`, `dedup`, `training`, `evaluation`) import from here; nothing
here imports a stage package except the command line (`webtext.cli`).
"""

__version__ = "0.1.0"
