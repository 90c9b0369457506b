"""Inputs for the offline demo: a Reddit-style submission dump made from local text.

Every CPython install ships the text of its own documentation (`pydoc_data.topics`); the
demo posts one page per documentation topic, at a loopback address, to made-up
subreddits, with the mix of posts a real dump has: karma below and above the bar, the
same page posted several times with tracking parameters, self posts, NSFW posts, images,
Wikipedia, a video host, a broken line and string timestamps from 2014's drift.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from pydoc_data.topics import topics

from scraping.dumps import zstd

DEMO_HOST = "127.0.0.1:8642"
SUBREDDITS = ("python", "programming", "learnprogramming", "coding", "compsci")
DEMO_START = 1_400_000_000  # May 2014


def page_urls(host: str = DEMO_HOST) -> list[str]:
    """One URL per documentation topic: the pages the demo web serves."""
    return [f"http://{host}/docs/{name}.html" for name in sorted(topics)]


def demo_records(host: str = DEMO_HOST, seed: int = 2019) -> list[dict]:
    """Submission records for the demo dump, deterministic for a seed."""
    rng = random.Random(seed)
    records: list[dict] = []

    def post(url: str, **fields: object) -> None:
        number = len(records)
        record = {
            "id": f"demo{number:05d}",
            "url": url,
            "title": fields.pop("title", url.rsplit("/", 1)[-1]),
            "score": rng.choice([0, 1, 2, 3, 5, 8, 13, 40, 120]),
            "created_utc": DEMO_START + number * 3_600,
            "subreddit": rng.choice(SUBREDDITS),
            "is_self": False,
            "over_18": False,
            "domain": url.split("/")[2] if "://" in url else "",
        }
        record.update(fields)
        records.append(record)

    for url in page_urls(host):
        post(url)
        if rng.random() < 0.3:  # reposted, with a click-tracking parameter
            post(f"{url}?utm_source=reddit&utm_medium=social", score=rng.choice([1, 2]))
    for i in range(10):
        permalink = f"https://www.reddit.com/r/python/comments/demo{i}/self_post/"
        post(permalink, is_self=True, domain="self.python", score=50)
    for i in range(5):
        post(f"http://{host}/docs/nsfw-{i}.html", over_18=True, score=30)
        post(f"https://i.imgur.com/demo{i}.jpg", score=200)
        post(f"https://en.wikipedia.org/wiki/Python_{i}", score=90)
        post(f"https://www.youtube.com/watch?v=demo{i}", score=70)
        post(f"http://{host}/files/archive-{i}.zip", score=12)
        post(f"ftp://{host}/pub/{i}", score=9)
    for record in records[::7]:  # 2014's dumps wrote created_utc as a string
        record["created_utc"] = str(record["created_utc"])
    return records


def write_demo_dump(folder: Path, host: str = DEMO_HOST) -> Path:
    """`RS_demo.zst` in `folder`, with one corrupt line as real dumps have."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps(r, ensure_ascii=False) for r in demo_records(host)]
    lines.insert(len(lines) // 2, '{"id": "truncated", "url": "http://')
    path = folder / "RS_demo.zst"
    data = ("\n".join(lines) + "\n").encode()
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(zstd.compress(data, level=3))
    tmp.replace(path)
    return path
