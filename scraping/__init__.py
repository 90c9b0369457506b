"""Getting the web text: Reddit links, fetching pages, extracting their main text.

Plain, typed Python with no Prefect imports, usable from a notebook; `flows/` wires it.
"""
