"""The Prefect wiring: flows run the stage functions and publish counts and links."""

from __future__ import annotations

import pytest

from webtext.store import Store
from webtext_app.demo import DEMO_FETCH, DEMO_TOKENIZE, demo_records, write_demo_dump
from webtext_app.demo_web import DemoWeb

pytestmark = pytest.mark.usefixtures("prefect_server")


def test_build_webtext_runs_collect_links_and_publishes_artifacts(tmp_path) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from flows.build import build_webtext

    with DemoWeb() as web:
        dump = write_demo_dump(tmp_path / "inputs", web.base_url)
        store_url = str(tmp_path / "store")
        refs = build_webtext(
            dumps=[str(dump)],
            fetch=DEMO_FETCH,
            tokenize=DEMO_TOKENIZE,
            until="tokenize",
            store_url=store_url,
        )
        store = Store(store_url)
        counts = store.manifest(refs["links"]).stats["counts"]
        records = demo_records(web.base_url)
        assert counts["records"] == len(records) and counts["malformed_line"] == 1
        assert counts["links"] > 0 and counts["karma_below_min"] > 0
        fetched = store.manifest(refs["fetch"]).stats["counts"]
        assert store.manifest(refs["fetch"]).parents[0] == refs["links"]
        assert fetched["attempted"] == counts["links"]  # one row per link
        assert fetched["fetched"] > 0 and fetched["robots_disallowed"] > 0
        assert fetched["timeout"] > 0 and fetched["refused_address"] > 0
        extracted = store.manifest(refs["extract"]).stats["counts"]
        assert extracted["pages"] == fetched["fetched"] and extracted["documents"] > 50
        published = store.manifest(refs["dedup"]).stats["counts"]
        assert published["documents_in"] == extracted["documents"]
        assert published["near_duplicates"] > 0  # the demo web's mirrors
        tokens = store.manifest(refs["tokenize"]).stats["counts"]
        # Which documents go to val hangs on a hash of their URLs, and so on the demo web's
        # port: ~80 documents at 5% can leave val empty (tests/test_token_shards checks splits).
        assert tokens["train_tokens"] + tokens["val_tokens"] > 10_000

        with get_client(sync_client=True) as client:
            names = ["links-counts", "links-version", "fetches-counts", "webtext-counts"]
            names += ["build-webtext-counts", "build-webtext-versions"]
            keys = ArtifactFilterKey(any_=names)
            artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(key=keys))
        # Other tests share the server: pick this run's artifacts by the versions they name.
        table = next(
            a for a in artifacts if a.key == "links-counts" and str(refs["links"]) in a.description
        )
        assert '"links"' in str(table.data) and str(counts["links"]) in str(table.data)
        assert any(
            a.key == "links-version" and refs["links"].version in str(a.data) for a in artifacts
        )
        fetch_table = next(
            a
            for a in artifacts
            if a.key == "fetches-counts" and str(refs["fetch"]) in a.description
        )
        assert '"robots_disallowed"' in str(fetch_table.data)
        assert any(a.key == "webtext-counts" for a in artifacts)
        # The summary is updated after every stage: the last one names every version.
        versions = next(
            a
            for a in artifacts
            if a.key == "build-webtext-versions" and refs["tokenize"].version in str(a.data)
        )
        summary = max(
            (
                a
                for a in artifacts
                if a.key == "build-webtext-counts" and a.flow_run_id == versions.flow_run_id
            ),
            key=lambda a: a.created,
        )
        assert '"stage": "fetch"' in str(summary.data) and '"train_tokens"' in str(summary.data)

        # The scheduler's rerun over the same dump is incremental: nothing new, same version.
        rerun = build_webtext(
            dumps=[str(dump)],
            fetch=DEMO_FETCH,
            tokenize=DEMO_TOKENIZE,
            until="tokenize",
            store_url=store_url,
        )
        assert rerun == refs
        # The outcome table, for programs: each stage's version and whether it was reused.
        first, second = outcome_tables(refs["tokenize"])[-2:]
        assert [row["stage"] for row in first] == ["links", "fetch", "extract", "dedup", "tokenize"]
        for outcome, reused in ((first, False), (second, True)):
            assert all(row["state"] == "completed" and row["error"] == "" for row in outcome)
            assert {row["stage"]: row["version"] for row in outcome} == {
                stage: str(ref) for stage, ref in refs.items()
            }
            assert [row["reused"] for row in outcome] == [reused] * len(outcome)

        # The operator's run: no new dump and other fetch settings (the deployment's own).
        # Every URL was fetched before, so no stage publishes an empty version.
        latest = {stage: store.latest(stage) for stage in ("fetches", "documents", "webtext")}
        counts_before = {stage: len(store.versions(stage)) for stage in latest}
        operator = build_webtext(
            incremental=True,
            fetch={**DEMO_FETCH, "total_timeout": 7.0, "connections": 8},
            tokenize=DEMO_TOKENIZE,
            until="tokenize",
            store_url=store_url,
        )
        assert operator == refs
        assert {stage: len(store.versions(stage)) for stage in latest} == counts_before
        assert {stage: store.latest(stage) for stage in latest} == latest
        with get_client(sync_client=True) as client:
            keys = ArtifactFilterKey(any_=["build-webtext-nothing-new"])
            said = client.read_artifacts(artifact_filter=ArtifactFilter(key=keys))
        assert any(f"nothing new since {refs['dedup']}" in (a.description or "") for a in said)


def outcome_tables(ref=None) -> list[list[dict]]:
    """Every build's last OUTCOME_ARTIFACT (whose rows name `ref`), oldest first."""
    import json

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from flows.build import OUTCOME_ARTIFACT

    with get_client(sync_client=True) as client:
        keys = ArtifactFilterKey(any_=[OUTCOME_ARTIFACT])
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(key=keys))
    last = {}
    for artifact in sorted(artifacts, key=lambda a: a.created):
        rows = json.loads(artifact.data)
        if ref is None or any(row["version"] == str(ref) for row in rows):
            last[artifact.flow_run_id] = rows
    return list(last.values())


def test_collect_links_reads_reddit_secrets_from_prefect_blocks(
    tmp_path, test_data, monkeypatch, caplog
) -> None:
    from fake_reddit import FakeReddit
    from prefect.blocks.system import Secret

    from flows.links import collect_links_flow
    from flows.secrets import SECRET_BLOCKS

    for variable in SECRET_BLOCKS:
        monkeypatch.delenv(variable, raising=False)
    secret = "block-secret-4242"
    Secret(value="block-client-id").save(SECRET_BLOCKS["REDDIT_CLIENT_ID"], overwrite=True)
    Secret(value=secret).save(SECRET_BLOCKS["REDDIT_CLIENT_SECRET"], overwrite=True)
    Secret(value="webtext-tests/0.1").save(SECRET_BLOCKS["REDDIT_USER_AGENT"], overwrite=True)
    store_url = str(tmp_path / "store")
    caplog.set_level("DEBUG")
    with FakeReddit(test_data / "reddit" / "api-listings") as fake:
        ref = collect_links_flow(
            listings=["user/spez/top/all"], api_url=fake.url, store_url=store_url
        )
        token_requests = [r for r in fake.requests if r.method == "POST"]
    assert token_requests, "PRAW never asked the fake for a token"
    manifest = Store(store_url).manifest(ref)
    assert manifest.stats["counts"]["api_submissions"] > 0
    assert secret not in manifest.to_json()
    assert secret not in caplog.text


def test_missing_credentials_name_the_variables_and_blocks(monkeypatch) -> None:
    from flows.secrets import SECRET_BLOCKS, reddit_credentials
    from scraping.reddit_api import RedditApiError

    for variable in SECRET_BLOCKS:
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("REDDIT_CLIENT_ID", "from-env")
    # Block names that exist nowhere on the test server.
    monkeypatch.setitem(SECRET_BLOCKS, "REDDIT_CLIENT_SECRET", "absent-secret")
    monkeypatch.setitem(SECRET_BLOCKS, "REDDIT_USER_AGENT", "absent-agent")
    with pytest.raises(RedditApiError, match=r"REDDIT_CLIENT_SECRET \(or Secret block"):
        reddit_credentials()


def test_dedup_on_a_dask_cluster_gives_the_single_process_output(tmp_path) -> None:
    import datetime as dt
    from pydoc_data.topics import topics

    import pyarrow as pa
    import pyarrow.parquet as pq
    from distributed import LocalCluster

    from flows.dedup import dedup_flow
    from scraping.extract_stage import DOCUMENTS_SCHEMA

    names = sorted(name for name, text in topics.items() if len(text.split()) > 300)[:12]
    seen = dt.datetime(2017, 1, 1, tzinfo=dt.UTC)
    rows = [
        {
            "doc_id": f"d{i:02d}",
            "url": f"http://s.example/{i}",
            "text": topics[name],
            "karma": 3 + i,
            "first_seen": seen,
            "language": "en",
            "word_count": 1,
        }
        for i, name in enumerate(names + names[:2])  # two exact duplicates
    ]
    published = {}
    for runner in ("threads", "dask"):
        store = Store(str(tmp_path / runner))
        with store.write("documents", {"rows": len(rows)}, "test") as out:
            for part in range(2):  # two parts: two tasks to spread
                table = pa.Table.from_pylist(rows[part::2], schema=DOCUMENTS_SCHEMA)
                with out.open(f"documents/part-{part:05d}.parquet", rows=table.num_rows) as f:
                    pq.write_table(table, f)
        if runner == "dask":
            with LocalCluster(n_workers=2, threads_per_worker=1, processes=True) as cluster:
                ref = dedup_flow(store_url=store.root_url, task_runner=cluster.scheduler_address)
        else:
            ref = dedup_flow(store_url=store.root_url)
        manifest = store.manifest(ref)
        # Every file but the card, which names its inputs' creation times.
        files = {f.path: f.sha256 for f in manifest.files if f.path != "README.md"}
        published[runner] = (ref, files)
        assert manifest.stats["counts"]["exact_duplicates"] == 2
    assert published["threads"] == published["dask"]


def test_a_failed_stage_is_named_with_its_input(tmp_path, monkeypatch) -> None:
    import flows.build
    from flows.build import StageFailed, StagePolicy, build_webtext

    monkeypatch.setitem(flows.build.POLICIES, "links", StagePolicy(retries=0, timeout_s=60))
    missing = str(tmp_path / "RS_2017-13.zst")
    with pytest.raises(StageFailed, match=r"stage 'links' failed reading 1 dumps") as failure:
        build_webtext(dumps=[missing], until="links", store_url=str(tmp_path / "store"))
    assert "RS_2017-13.zst" in str(failure.value)
    assert failure.value.stage == "links" and "RS_2017-13.zst" in failure.value.error
    # The outcome table holds the same, for programs that watch the run (the demo).
    [row] = next(rows for rows in outcome_tables() if "RS_2017-13.zst" in rows[0]["error"])
    assert row == {
        "stage": "links", "version": "", "reused": None, "state": "failed",
        "error": failure.value.error,
    }  # fmt: skip
