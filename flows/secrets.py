"""Reddit credentials at run time: the environment first, else Prefect Secret blocks.

Loaded inside the flow run, never passed as parameters or job variables: Prefect stores
those in plain text on the deployment and shows them in the UI.
"""

from __future__ import annotations

import os

from prefect.blocks.system import Secret

from scraping.reddit_api import RedditApiError, RedditCredentials

# Secret block names, one per value: `prefect block create secret` or the UI makes them.
SECRET_BLOCKS = {
    "REDDIT_CLIENT_ID": "reddit-client-id",
    "REDDIT_CLIENT_SECRET": "reddit-client-secret",
    "REDDIT_USER_AGENT": "reddit-user-agent",
}


def reddit_credentials() -> RedditCredentials:
    values = {}
    for variable, block in SECRET_BLOCKS.items():
        value = os.environ.get(variable)
        if not value:
            try:
                value = Secret.load(block).get()
            except ValueError:  # no such block
                value = None
        if value:
            values[variable] = value
    missing = sorted(set(SECRET_BLOCKS) - set(values))
    if missing:
        names = ", ".join(f"{v} (or Secret block {SECRET_BLOCKS[v]!r})" for v in missing)
        raise RedditApiError(f"Reddit credentials missing: {names}")
    return RedditCredentials.from_env(values)
