"""The application layer of the webtext pipeline: the command line and the local demo.

`cli` is the `webtext` command; `demo`, `demo_web`, `demo_run` and `prefect_server` run the
whole pipeline offline against a local Prefect server. This is the top floor: it imports the
ground package (`webtext`), the stage packages and `flows`; none of them imports it.
"""
