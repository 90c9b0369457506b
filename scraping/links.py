"""The link stage: Reddit submissions in, one `links` version out.

Three steps, so memory stays bounded at WebText scale (hundreds of millions of
submissions):

1. filter: stream every source (dumps, API listings, the previous version's submissions),
   apply the per-submission rules, and spill survivors into `partitions` Parquet files by
   a hash of their normalised URL. Several dumps are filtered in parallel processes.
2. aggregate, one partition at a time: drop repeats of a post id (a post seen in two dumps
   or in a dump and the API counts once, with its highest score), then group by URL.
3. keep URLs whose summed karma reaches `min_karma`; write them and the deduplicated
   submissions into the version.

The karma rule: a URL's karma is the sum of the scores of all distinct submissions that
link to it (after normalisation), so a page posted three times with 1 point each passes,
as a page upvoted once to 3 does. Submissions below the bar are kept in the version's
`submissions` table, so a later incremental run can still lift their URL over it.
"""

from __future__ import annotations

import builtins
import json
import logging
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any

import msgspec
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from fsspec import AbstractFileSystem

from scraping import link_filters as rules
from scraping.dumps import (
    CORRUPT,
    TRUNCATED,
    DumpCutShort,
    LineError,
    RedditRecord,
    dump_size,
    read_submissions,
)
from scraping.link_filters import LinkFilters, Submission, SubmissionFilter
from scraping.reddit_api import (
    ListingFailure,
    ListingSpec,
    RedditApiError,
    RedditCredentials,
    iter_listing_submissions,
)
from webtext.parquet import RollingParquetWriter, release_arrow_memory, without_huge_pages
from webtext.stage import (
    Map,
    NoProgress,
    PartResult,
    Progress,
    Stage,
    StageWrite,
    options_from,
    run_stage,
)
from webtext.store import StageResult, Store, VersionRef, input_fingerprint, put_atomic

STAGE = Stage("links", __name__)
log = logging.getLogger(__name__)

SUBMISSIONS_SCHEMA = pa.schema(
    [
        ("post_id", pa.string()),
        ("url", pa.string()),
        ("domain", pa.string()),
        ("karma", pa.int64()),
        ("subreddit", pa.string()),
        ("created_utc", pa.int64()),
        ("title", pa.string()),
    ]
)
LINKS_SCHEMA = pa.schema(
    [
        ("url", pa.string()),
        ("domain", pa.string()),
        ("karma", pa.int64()),
        ("submissions", pa.int64()),
        ("subreddits", pa.list_(pa.string())),
        ("first_seen", pa.timestamp("s", tz="UTC")),
        ("last_seen", pa.timestamp("s", tz="UTC")),
        ("post_ids", pa.list_(pa.string())),
    ]
)
MAX_REPORTED_LINE_ERRORS = 100
_SPILL = "spill"  # in the version's staging folder, never published
_STATS = "stats.json"  # a dump's spill folder: what its filter counted and skipped
API_SOURCE = "reddit-api"  # malformed API items are listed as reddit-api:<n>
# Rows a spill holds per partition before writing them: with 16 partitions, at most 8K
# submissions (~6 MiB as Python objects, ~750 bytes each) are held, whatever the dumps'
# size. At 2,048 a partition, 32K rows were 18 MiB more at 10^5 submissions than the 10^4
# a small run holds: the peak grew with the input until it reached the bound.
_SPILL_BATCH = 512


# Dumps that stopped early, by how (see `scraping.dumps.DumpCutShort`).
CUT_SHORT_COUNTS = {TRUNCATED: "dumps_truncated", CORRUPT: "dumps_corrupt"}


@dataclass
class SourceStats:
    """What one source contributed: counts by reason, the first bad lines and records
    (where and why), and the dumps that stopped early."""

    counts: Counter[str] = field(default_factory=Counter)
    line_errors: list[str] = field(default_factory=list)
    failed_files: list[str] = field(default_factory=list)
    failed_listings: list[ListingFailure] = field(default_factory=list)

    def skipped(self, reason: str, detail: str) -> None:
        """Count one input skipped for `reason`; `detail` says where (file:line) and why."""
        self.counts[reason] += 1
        if len(self.line_errors) < MAX_REPORTED_LINE_ERRORS:
            self.line_errors.append(detail)
            log.warning("skipped (%s) %s", reason, detail)

    def line_error(self, error: LineError) -> None:
        self.skipped(error.reason, str(error))

    def cut_short(self, error: DumpCutShort) -> None:
        self.counts[CUT_SHORT_COUNTS[error.kind]] += 1
        self.failed_files.append(str(error))
        log.error("stopped reading a dump early, keeping what came before: %s", error)

    def as_json(self) -> dict[str, Any]:
        """What a dump's part hands back (a listing's failures never come from a part)."""
        return {
            "counts": dict(self.counts),
            "line_errors": self.line_errors,
            "failed_files": self.failed_files,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SourceStats:
        return cls(Counter(data["counts"]), data["line_errors"], data["failed_files"])

    def merge(self, other: SourceStats) -> None:
        self.counts.update(other.counts)
        room = MAX_REPORTED_LINE_ERRORS - len(self.line_errors)
        self.line_errors.extend(other.line_errors[: max(room, 0)])
        self.failed_files.extend(other.failed_files)
        self.failed_listings.extend(other.failed_listings)


class _Spill:
    """Survivors of one source's filter, partitioned by URL hash: `<folder>/part-NNNNN.parquet`
    on `fs` (the version's staging folder, which every worker sees)."""

    def __init__(self, fs: AbstractFileSystem, folder: str, partitions: int) -> None:
        if fs.exists(folder):  # a killed try's half, written again whole
            fs.rm(folder, recursive=True)
        self.fs = fs
        self.folder = folder
        self.partitions = partitions
        self._rows: list[list[Submission]] = [[] for _ in range(partitions)]
        self._writers: dict[int, tuple[Any, pq.ParquetWriter]] = {}

    def add(self, submission: Submission) -> None:
        part = zlib.crc32(submission.url.encode()) % self.partitions
        rows = self._rows[part]
        rows.append(submission)
        if len(rows) >= _SPILL_BATCH:
            self._flush(part)

    def _flush(self, part: int) -> None:
        rows = self._rows[part]
        if not rows:
            return
        columns = {name: [getattr(r, name) for r in rows] for name in SUBMISSIONS_SCHEMA.names}
        table = pa.table(columns, schema=SUBMISSIONS_SCHEMA)
        if part not in self._writers:
            self.fs.makedirs(self.folder, exist_ok=True)
            handle = self.fs.open(f"{self.folder}/{_spill_name(part)}", "wb")
            self._writers[part] = (handle, pq.ParquetWriter(handle, SUBMISSIONS_SCHEMA))
        self._writers[part][1].write_table(table)
        rows.clear()

    def close(self) -> None:
        for part in range(self.partitions):
            self._flush(part)
        for handle, writer in self._writers.values():
            writer.close()
            handle.close()


def _spill_name(part: int) -> str:
    return f"part-{part:05d}.parquet"


def _filter_into(
    records: Iterable[tuple[int, RedditRecord]],
    source: str,
    check: SubmissionFilter,
    spill: _Spill,
    stats: SourceStats,
) -> None:
    """Filter (position, record) pairs of `source` into `spill`; a malformed record is
    reported as `source:position`."""
    counts = stats.counts
    for position, record in records:
        counts["records"] += 1
        outcome = check(record)
        if isinstance(outcome, str):
            if outcome == rules.MALFORMED_RECORD:
                stats.skipped(outcome, f"{source}:{position}: {_malformed(record)}")
            else:
                counts[outcome] += 1
        else:
            counts["passed"] += 1
            spill.add(outcome)


def _malformed(record: RedditRecord) -> str:
    """The fields the filter requires, as read: the bad one is missing or out of range."""
    fields = ("id", "url", "score", "created_utc")
    shown = ", ".join(f"{name}={getattr(record, name)!r:.80}" for name in fields)
    return f"malformed record (a field missing or out of range): {shown}"


def _filter_dump(
    path: str, filters: LinkFilters, spill: _Spill, on_bytes: Callable[[int], None] | None = None
) -> SourceStats:
    """Filter one dump into the spill; a truncated or corrupt stream keeps what came
    before it."""
    stats = SourceStats()
    try:
        records = read_submissions(path, stats.line_error, on_bytes)
        _filter_into(records, path, SubmissionFilter(filters), spill, stats)
    except DumpCutShort as exc:
        stats.cut_short(exc)
    finally:
        spill.close()
    return stats


def filter_dump_part(
    store_url: str,
    spill_dir: str,
    filters: LinkFilters,
    partitions: int,
    item: tuple[str, str],
) -> PartResult:
    """Filter one dump (`item`: its spill folder's name, its path) into
    `<spill_dir>/<name>/`, with what it counted and skipped in `stats.json` there: a plain
    function of plain arguments, so any executor runs it on any worker that sees the store
    and the dump."""
    name, path = item
    without_huge_pages()  # this may be a fresh worker process
    fs = Store(store_url).fs
    stats = _filter_dump(path, filters, _Spill(fs, f"{spill_dir}/{name}", partitions))
    put_atomic(fs, f"{spill_dir}/{name}/{_STATS}", json.dumps(stats.as_json()).encode())
    return PartResult({})


def _api_records(
    credentials: RedditCredentials,
    listings: list[ListingSpec],
    api_url: str | None,
    stats: SourceStats,
) -> Iterator[RedditRecord]:
    # A listing failing part way keeps what it yielded; the version says it is incomplete.
    items = iter_listing_submissions(
        credentials, listings, api_url=api_url, stats=stats.counts, failures=stats.failed_listings
    )
    for number, item in enumerate(items, 1):
        try:
            yield number, msgspec.convert(item, RedditRecord)
        except msgspec.ValidationError as exc:
            # Counted as a dump's undecodable line is: it never becomes a record.
            stats.skipped(rules.MALFORMED_LINE, f"{API_SOURCE}:{number}: {exc}")


def _previous_records(store: Store, ref: VersionRef) -> Iterator[tuple[int, RedditRecord]]:
    """(row number, record) for an earlier version's submissions, to pass through today's
    filters."""
    number = 0
    for entry in store.manifest(ref).files:
        if not entry.path.startswith("submissions/"):
            continue
        with store.open_verified(ref, entry) as handle:
            for batch in pq.ParquetFile(handle).iter_batches(batch_size=65_536):
                for row in batch.to_pylist():
                    number += 1
                    yield (
                        number,
                        RedditRecord(
                            id=row["post_id"],
                            url=row["url"],
                            title=row["title"],
                            score=row["karma"],
                            created_utc=row["created_utc"],
                            subreddit=row["subreddit"],
                        ),
                    )


def _aggregate(
    fs: AbstractFileSystem, paths: list[str], min_karma: int
) -> tuple[pa.Table, pa.Table, Counter[str]]:
    """(links kept, distinct submissions, counts) for one URL partition: its spill files,
    one per source, in `paths`' order."""
    tables = []
    for path in paths:
        with fs.open(path, "rb") as handle:
            tables.append(pq.read_table(handle, schema=SUBMISSIONS_SCHEMA))
    table = pa.concat_tables(tables) if tables else SUBMISSIONS_SCHEMA.empty_table()
    counts: Counter[str] = Counter()
    # A post seen more than once (two dumps, dump and API, the previous version) counts
    # once, with the highest score it was seen with. Ordered aggregation needs one thread.
    posts = table.group_by("post_id", use_threads=False).aggregate(
        [
            ("karma", "max"),
            ("url", "first"),
            ("domain", "first"),
            ("subreddit", "first"),
            ("created_utc", "min"),
            ("title", "first"),
        ]
    )
    posts = posts.rename_columns([n.removesuffix("_first") for n in posts.column_names])
    posts = posts.rename_columns({"karma_max": "karma", "created_utc_min": "created_utc"}).select(
        SUBMISSIONS_SCHEMA.names
    )
    counts["duplicate_submissions"] = table.num_rows - posts.num_rows
    by_url = posts.group_by("url", use_threads=False).aggregate(
        [
            ("domain", "first"),
            ("karma", "sum"),
            ("post_id", "count"),
            ("subreddit", "distinct"),
            ("created_utc", "min"),
            ("created_utc", "max"),
            ("post_id", "list"),
        ]
    )
    keep = pc.greater_equal(by_url["karma_sum"], min_karma)
    counts["urls"] = by_url.num_rows
    counts[rules.KARMA_BELOW_MIN] = by_url.num_rows - (pc.sum(keep).as_py() or 0)
    links = by_url.filter(keep)
    links = pa.table(
        {
            "url": links["url"],
            "domain": links["domain_first"],
            "karma": links["karma_sum"],
            "submissions": links["post_id_count"],
            "subreddits": links["subreddit_distinct"],
            "first_seen": links["created_utc_min"].cast(pa.timestamp("s", tz="UTC")),
            "last_seen": links["created_utc_max"].cast(pa.timestamp("s", tz="UTC")),
            "post_ids": links["post_id_list"],
        },
        schema=LINKS_SCHEMA,
    ).sort_by("url")
    return links, posts.sort_by("url"), counts


@dataclass(frozen=True)
class LinkOptions:
    """Every setting of the link stage: the only place their defaults live. The CLI and
    the flows build it with `from_user`."""

    filters: LinkFilters = field(default_factory=LinkFilters)
    partitions: int = 16  # URL hash partitions: memory ~ input / partitions
    rows_per_file: int = 1_000_000
    workers: int = 2  # processes filtering dumps in parallel, when no `map` is given

    @classmethod
    def from_user(cls, parameters: Mapping[str, Any]) -> LinkOptions:
        """From an entry point's parameters, by name, as typed: ISO dates, blocklists as
        files (see `LinkFilters.from_options`)."""
        filters = LinkFilters.from_options(**options_from(LinkFilters, parameters))
        own = options_from(cls, parameters)
        own.pop("filters", None)
        return cls(filters, **own)

    def parameters(self) -> dict[str, Any]:
        """What the output depends on (not `workers`: any number gives the same bytes)."""
        return {
            "filters": self.filters.parameters(),
            "partitions": self.partitions,
            "rows_per_file": self.rows_per_file,
        }


def collect_links(
    store: Store,
    dumps: Iterable[str] = (),
    listings: Iterable[ListingSpec] = (),
    options: LinkOptions | None = None,
    *,
    credentials: RedditCredentials | None = None,
    api_url: str | None = None,
    previous: VersionRef | None = None,
    map: Map | None = None,
    progress: Progress | None = None,
) -> StageResult:
    """Build (or reuse) the `links` version for these sources and settings.

    `previous` merges the submissions of an earlier `links` version, for incremental runs
    over new dumps. Listings need `credentials`; `api_url` points PRAW at another host.
    Each dump is a task on `map` (a Prefect task runner's in the flows; by default
    `options.workers` processes here): every worker must read the dumps' paths or URLs.
    `progress` counts the dumps' compressed bytes, as dumps finish.
    """
    options = options or LinkOptions()
    progress = progress or NoProgress()
    without_huge_pages()
    dumps = list(dumps)
    listings = list(listings)
    if not dumps and not listings and previous is None:
        raise ValueError("collect_links needs at least one dump, listing or previous version")
    if listings and credentials is None:
        raise ValueError("Reddit API listings need credentials")
    sources: list[Any] = [input_fingerprint(path) for path in dumps]
    included: list[Any] = []
    if previous is not None:
        # Incremental: dumps already folded into the previous version are not read again.
        included = store.manifest(previous).stats.get("all_sources", [])
        dumps = [p for p, s in zip(dumps, sources, strict=True) if s not in included]
        sources = [s for s in sources if s not in included]
        if not dumps and not listings:
            log.info("every dump is already in %s; nothing to do", previous)
            return StageResult(previous, True, store.manifest(previous).stats)
    if listings:
        # A listing changes minute by minute: each collection is its own version.
        sources.append(
            {"listings": [str(s) for s in listings], "collected_at": datetime.now(UTC).isoformat()}
        )

    def build(work: StageWrite) -> None:
        for path in dumps:
            _refuse_comment_dump(path)
        spill_dir = f"{work.out.tmp_dir}/{_SPILL}"
        stats = _filter_dumps(store, work, dumps, spill_dir, options, map, progress)
        fs = work.out.fs
        if listings:
            api_stats = SourceStats()
            spill = _Spill(fs, f"{spill_dir}/api", options.partitions)
            records = _api_records(credentials, listings, api_url, api_stats)
            _filter_into(records, API_SOURCE, SubmissionFilter(options.filters), spill, api_stats)
            spill.close()
            nothing_read = not (dumps or previous or api_stats.counts["api_submissions"])
            if api_stats.failed_listings and nothing_read:  # no version to keep anything in
                raise RedditApiError("; ".join(builtins.map(str, api_stats.failed_listings)))
            stats.merge(api_stats)
        if previous is not None:
            # Re-filtered, so a rule tightened since (a longer blocklist) applies to all.
            spill = _Spill(fs, f"{spill_dir}/previous", options.partitions)
            kept = SourceStats()
            records = _previous_records(store, previous)
            check = SubmissionFilter(options.filters)
            _filter_into(records, f"{previous} submissions", check, spill, kept)
            spill.close()
            stats.counts["previous_submissions"] = kept.counts["records"]
            stats.counts["previous_dropped"] = kept.counts["records"] - kept.counts["passed"]
        spilled: dict[str, list[str]] = {}
        for path in sorted(fs.find(spill_dir)):  # sources in name order: api, dump-*, previous
            spilled.setdefault(path.rsplit("/", 1)[1], []).append(path)
        links = RollingParquetWriter(work.out, "links", LINKS_SCHEMA, options.rows_per_file)
        posts = RollingParquetWriter(
            work.out, "submissions", SUBMISSIONS_SCHEMA, options.rows_per_file
        )
        for part in range(options.partitions):
            paths = spilled.get(_spill_name(part), [])
            kept_links, distinct, counts = _aggregate(fs, paths, options.filters.min_karma)
            links.write(kept_links)
            posts.write(distinct)
            stats.counts.update(counts)
            del kept_links, distinct
            release_arrow_memory()  # each partition's peak, not the sum of their leftovers
        links.close()
        posts.close()
        if fs.exists(spill_dir):
            fs.rm(spill_dir, recursive=True)
        stats.counts["links"] = links.rows
        work.counts.update(_ordered_counts(stats.counts))
        work.stats["line_errors"] = stats.line_errors
        work.stats["failed_files"] = stats.failed_files
        work.stats["failed_listings"] = [str(failure) for failure in stats.failed_listings]
        work.stats["incomplete"] = bool(stats.failed_files or stats.failed_listings)
        work.stats["all_sources"] = included + sources

    parameters = {"sources": sources, **options.parameters()}
    inputs = (previous,) if previous else ()
    # Resumable: a killed run keeps the dumps it had filtered (the spill is not published).
    return run_stage(store, STAGE, inputs, parameters, build, resumable=True)


def _filter_dumps(
    store: Store,
    work: StageWrite,
    dumps: list[str],
    spill_dir: str,
    options: LinkOptions,
    map: Map | None,
    progress: Progress,
) -> SourceStats:
    """Filter every dump into `<spill_dir>/dump-NNNNN/`, a part each on `map` (by default
    `options.workers` processes of this machine); what they counted, merged in dump order."""
    names = [f"dump-{i:05d}" for i in range(len(dumps))]
    task = partial(filter_dump_part, store.root_url, spill_dir, options.filters, options.partitions)
    sizes = {name: dump_size(path) for name, path in zip(names, dumps, strict=True)}
    inputs = dict(zip(names, dumps, strict=True))
    with ExitStack() as stack:
        if map is None:
            parallel = options.workers > 1 and len(dumps) > 1
            pool = ProcessPoolExecutor(max_workers=options.workers) if parallel else None
            map = stack.enter_context(pool).map if pool else builtins.map
        work.run_parts(names, task, map, progress, inputs=inputs, weights=sizes)
    stats = SourceStats()
    for name in names:
        done = json.loads(work.out.fs.cat_file(f"{spill_dir}/{name}/{_STATS}"))
        stats.merge(SourceStats.from_json(done))
    return stats


def _ordered_counts(counts: Counter[str]) -> dict[str, int]:
    """Every reason, zeros included, in pipeline order, then any source-specific counts."""
    order = [
        "records",
        *(r for r in rules.DROP_REASONS if r != rules.KARMA_BELOW_MIN),
        "passed",
        "previous_submissions",
        "previous_dropped",
        "duplicate_submissions",
        "urls",
        rules.KARMA_BELOW_MIN,
        "links",
        *CUT_SHORT_COUNTS.values(),
    ]
    ordered = {name: counts.get(name, 0) for name in order}
    ordered.update({name: counts[name] for name in sorted(counts) if name not in ordered})
    return ordered


def _refuse_comment_dump(path: str) -> None:
    """Fail before any work when a comment dump is among the inputs. A dump cut short
    before its first record is not refused here: reading it records that, as it does for
    a dump cut short later."""
    try:
        for _ in read_submissions(path, lambda error: None):
            return
    except DumpCutShort:
        return
