"""The Prefect wiring: flows run the stage functions and publish counts and links."""

from __future__ import annotations

import pytest

from webtext.demo import demo_records, write_demo_dump
from webtext.store import Store

pytestmark = pytest.mark.usefixtures("prefect_server")


def test_build_webtext_runs_collect_links_and_publishes_artifacts(tmp_path) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from flows.build import build_webtext

    dump = write_demo_dump(tmp_path / "inputs")
    store_url = str(tmp_path / "store")
    refs = build_webtext(dumps=[str(dump)], store_url=store_url)
    store = Store(store_url)
    counts = store.manifest(refs["links"]).stats["counts"]
    records = demo_records()
    assert counts["records"] == len(records) and counts["malformed_line"] == 1
    assert counts["links"] > 0 and counts["karma_below_min"] > 0

    with get_client(sync_client=True) as client:
        keys = ArtifactFilterKey(any_=["links-counts", "links-version"])
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(key=keys))
    table = next(a for a in artifacts if a.key == "links-counts")
    assert '"links"' in str(table.data) and str(counts["links"]) in str(table.data)
    link = next(a for a in artifacts if a.key == "links-version")
    assert refs["links"].version in str(link.data)

    # The scheduler's rerun over the same dump is incremental: nothing new, same version.
    assert build_webtext(dumps=[str(dump)], store_url=store_url) == refs
