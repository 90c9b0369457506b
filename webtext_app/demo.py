"""Inputs for the offline demo: a Reddit-style submission dump pointing at the demo web.

`webtext_app.demo_web` serves a small site of real text (CPython's own documentation) and
fault pages on loopback; the dump posts every one of its pages and fault URLs to made-up
subreddits, with the mix of posts a real dump has: karma below and above the bar, the
same page reposted with tracking parameters (so only summed karma clears the bar), self
posts, NSFW posts, images, Wikipedia, a video host, an archive, an ftp link, a broken line
and string timestamps from 2014's drift.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import urlsplit

from scraping.dumps import zstd
from webtext_app.demo_web import site_urls

SUBREDDITS = ("python", "programming", "learnprogramming", "coding", "compsci")
DEMO_START = 1_400_000_000  # May 2014
PAGE_KINDS = ("article", "mirror", "library", "private")
SCORES = (0, 1, 2, 3, 5, 8, 13, 40, 120)  # a third below the default bar of 3
# `fetch-pages` options for the demo: the site is ours and on loopback, so no politeness
# delay, and a short timeout so its slow-loris page costs seconds, not a minute.
DEMO_FETCH = {
    "allow_loopback": True,
    "connections": 16,
    "per_host_connections": 8,
    "per_host_delay": 0.0,
    "total_timeout": 5.0,
}
# The demo's dataset is small: a vocabulary of GPT-2's size would have nothing to learn.
DEMO_TOKENIZE = {"vocab_size": 4_096, "val_fraction": 0.05}


def demo_records(base_url: str, seed: int = 2019) -> list[dict]:
    """Submission records for the demo dump, deterministic for a base URL and seed."""
    rng = random.Random(seed)
    base_url = base_url.rstrip("/")
    host = urlsplit(base_url).netloc
    records: list[dict] = []

    def post(url: str, **fields: object) -> None:
        number = len(records)
        record = {
            "id": f"demo{number:05d}",
            "url": url,
            "title": url.rsplit("/", 1)[-1],
            "score": rng.choice(SCORES),
            "created_utc": DEMO_START + number * 3_600,
            "subreddit": rng.choice(SUBREDDITS),
            "is_self": False,
            "over_18": False,
            "domain": url.split("/")[2] if "://" in url else "",
        }
        record.update(fields)
        records.append(record)

    urls = site_urls(base_url)
    for kind in PAGE_KINDS:
        for url in urls[kind]:
            post(url)
            # Pages that got little karma are the ones reposted (30% of articles in all),
            # with click tracking: only their summed karma decides whether they clear the bar.
            repost = 0.6 if records[-1]["score"] < 3 else 0.15
            if kind == "article" and rng.random() < repost:
                post(f"{url}?utm_source=reddit&utm_medium=social", score=rng.choice([1, 2]))
    for kind, fault_urls in urls.items():
        if kind not in PAGE_KINDS:
            for url in fault_urls:  # above the bar: the crawler must meet every fault
                post(url, score=rng.choice([5, 8, 13, 40]))
    for i in range(10):
        permalink = f"https://www.reddit.com/r/python/comments/demo{i}/self_post/"
        post(permalink, is_self=True, domain="self.python", score=50)
    for i in range(5):
        post(f"{base_url}/docs/nsfw-{i}.html", over_18=True, score=30)
        post(f"https://i.imgur.com/demo{i}.jpg", score=200)
        post(f"https://en.wikipedia.org/wiki/Python_{i}", score=90)
        post(f"https://www.youtube.com/watch?v=demo{i}", score=70)
        post(f"{base_url}/files/archive-{i}.zip", score=12)
        post(f"ftp://{host}/pub/{i}", score=9)
    for record in records[::7]:  # 2014's dumps wrote created_utc as a string
        record["created_utc"] = str(record["created_utc"])
    return records


def write_demo_dump(folder: Path, base_url: str) -> Path:
    """`RS_demo.zst` in `folder` for the site at `base_url`, with one corrupt line as real
    dumps have."""
    return write_dump(folder / "RS_demo.zst", demo_records(base_url))


def write_dump(path: Path, records: Iterable[dict], bad_line: bool = True) -> Path:
    """`records` as a zstd Reddit-style dump at `path`, written atomically; with `bad_line`,
    one corrupt line in the middle, as real dumps have."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps(r, ensure_ascii=False) for r in records]
    if bad_line:
        lines.insert(len(lines) // 2, '{"id": "truncated", "url": "http://')
    data = ("\n".join(lines) + "\n").encode()
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(zstd.compress(data, level=3))
    tmp.replace(path)
    return path


# The demo trains the smallest model for about a minute on CPU: enough to see the loss fall
# and to exercise training, checkpoints, resumption and the export, not to learn English.
DEMO_TRAIN = {
    "model": "tiny",
    "max_steps": 300,
    "gpus_per_node": 0,
    "batch_size": 16,
    "extra_args": [
        *("--warmup-steps", "30"),
        *("--eval-interval", "100"),
        *("--checkpoint-interval", "100"),
    ],
}
# Slices of real evaluation sets shipped with the package (webtext_app/demo_eval/SOURCES.md).
DEMO_EVAL_DATA = Path(__file__).parent / "demo_eval"
DEMO_EVALUATE = {
    "tasks": ["lambada", "wikitext2", "winograd"],
    "eval_data": str(DEMO_EVAL_DATA),
    "max_new_tokens": 40,
}


def kept_dump_port(path: Path) -> int | None:
    """The demo web's port that a dump kept from an earlier run points at, if it can be read.

    A new run serves the web on it again when it can: the same dump, byte for byte, is the
    same links version, so the whole build can be reused."""
    try:
        first = zstd.decompress(path.read_bytes()).split(b"\n", 1)[0]
        return urlsplit(json.loads(first)["url"]).port
    except (OSError, ValueError, KeyError, TypeError, zstd.ZstdError):
        return None
