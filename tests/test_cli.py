"""The `webtext` command, run in-process as a user would type it."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from webtext_app import cli

runner = CliRunner()


def run(*args: str) -> tuple[int, str]:
    try:
        result = runner.invoke(cli.app, list(args))
    except SystemExit as exc:  # pragma: no cover - typer exits through main() only
        return int(exc.code or 0), ""
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


def test_links_then_versions_then_show(tmp_path, sample_dump) -> None:
    store = str(tmp_path / "store")
    code, output = run("links", str(sample_dump), "--store", store, "--min-karma", "5")
    assert code == 0, output
    assert "links" in output and "self_post" in output
    code, output = run("versions", "links", "--store", store)
    assert code == 0 and "(latest)" in output
    code, output = run("show", "links", "--store", store)
    manifest = json.loads(output)
    assert manifest["parameters"]["filters"]["min_karma"] == 5
    assert manifest["stats"]["counts"]["links"] == 4


def test_expected_failures_print_one_clear_line(tmp_path, test_data, capsys, monkeypatch) -> None:
    comments = str(test_data / "reddit/pushshift/test_comments.ndjson")
    monkeypatch.setattr("sys.argv", ["webtext", "links", comments, "--store", str(tmp_path)])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    assert exit_info.value.code == 2  # a user error: the input given
    assert "looks like a comment dump" in capsys.readouterr().err
    monkeypatch.setattr("sys.argv", ["webtext", "show", "links", "--store", str(tmp_path)])
    with pytest.raises(SystemExit):
        cli.main()
    assert "has no versions yet" in capsys.readouterr().err


def test_listings_without_credentials_name_the_missing_variables(tmp_path, monkeypatch) -> None:
    for name in ("REDDIT_CLIENT_ID", "REDDIT_CLIENT_SECRET", "REDDIT_USER_AGENT"):
        monkeypatch.delenv(name, raising=False)
    result = runner.invoke(cli.app, ["links", "--listing", "r/news/top/week", "--store", "x"])
    assert "REDDIT_CLIENT_ID" in str(result.exception)


def test_blocklist_files_and_dates_replace_the_defaults(tmp_path, sample_dump) -> None:
    blocklist = tmp_path / "domains.txt"
    blocklist.write_text("# ours\npaulgraham.com\n")
    store = str(tmp_path / "store")
    args = ["--domain-blocklist", str(blocklist), "--created-before", "2005-06-23T18:50"]
    code, output = run("links", str(sample_dump), "--store", store, *args)
    assert code == 0, output
    counts = json.loads(run("show", "links", "--store", store)[1])["stats"]["counts"]
    # paulgraham.com is blocked; wired.com (18:50:02) is past the cut-off.
    assert counts["domain_blocklist"] == 1 and counts["links"] == 2


def test_fetch_after_links_on_the_demo_web(tmp_path) -> None:
    from webtext_app.demo import write_demo_dump
    from webtext_app.demo_web import DemoWeb

    store = str(tmp_path / "store")
    with DemoWeb() as web:
        dump = write_demo_dump(tmp_path / "inputs", web.base_url)
        assert run("links", str(dump), "--store", store)[0] == 0
        args = ["--allow-loopback", "--per-host-delay", "0", "--total-timeout", "2"]
        code, output = run("fetch", "--store", store, *args)
    assert code == 0, output
    assert "robots_disallowed" in output and "fetches version" in output
    counts = json.loads(run("show", "fetches", "--store", store)[1])["stats"]["counts"]
    links = json.loads(run("show", "links", "--store", store)[1])["stats"]["counts"]
    assert counts["attempted"] == links["links"] and counts["fetched"] > 100


def test_fetch_refuses_loopback_unless_allowed(tmp_path) -> None:
    from webtext_app.demo import write_demo_dump
    from webtext_app.demo_web import DemoWeb

    store = str(tmp_path / "store")
    with DemoWeb() as web:
        dump = write_demo_dump(tmp_path / "inputs", web.base_url)
        run("links", str(dump), "--store", store)
        code, output = run("fetch", "--store", store, "--total-timeout", "2")
    assert code == 0, output
    counts = json.loads(run("show", "fetches", "--store", store)[1])["stats"]["counts"]
    assert counts["fetched"] == 0 and counts["refused_address"] == counts["attempted"]
    assert sum(web.hits.values()) == 0  # not one request reached the server


def test_the_whole_chain_then_pull(tmp_path) -> None:
    from webtext_app.demo import write_demo_dump
    from webtext_app.demo_web import DemoWeb

    store = str(tmp_path / "store")
    with DemoWeb() as web:
        dump = write_demo_dump(tmp_path / "inputs", web.base_url)
        run("links", str(dump), "--store", store)
        run(
            "fetch",
            "--store",
            store,
            "--allow-loopback",
            "--per-host-delay",
            "0",
            "--total-timeout",
            "2",
        )
    code, output = run("extract", "--store", store, "--workers", "2")
    assert code == 0 and "documents version" in output, output
    code, output = run("dedup", "--store", store, "--workers", "2")
    assert code == 0 and "webtext version" in output, output
    counts = json.loads(run("show", "webtext", "--store", store)[1])["stats"]["counts"]
    assert counts["near_duplicates"] > 0  # the demo web's mirrors
    code, output = run("tokenize", "--store", store, "--vocab-size", "2000")
    assert code == 0 and "tokens" in output, output
    tokens = json.loads(run("show", "tokens", "--store", store)[1])["stats"]["counts"]
    assert tokens["train_tokens"] > 0
    code, output = run("pull", "latest", str(tmp_path / "copy"), "--store", store)
    assert code == 0 and "pulled" in output
    assert list((tmp_path / "copy" / "data").glob("*-part-00000.parquet"))
    assert (tmp_path / "copy" / "README.md").exists()
    # Re-extracting everything with a stricter filter: a full version, nothing fetched.
    code, output = run("rebuild", "--store", store, "--workers", "2", "--min-words", "400")
    assert code == 0 and "webtext version" in output, output
    full = json.loads(run("show", "webtext", "--store", store)[1])
    assert full["parameters"]["full"] and not [
        p for p in full["parents"] if p["stage"] == "webtext"
    ]
    assert full["stats"]["counts"]["documents_in"] < counts["documents_in"]


def test_an_input_with_no_links_goes_through_every_stage(tmp_path) -> None:
    dump = tmp_path / "RS_quiet.ndjson"
    record = {"id": "a", "url": "http://x.example/", "score": 1, "created_utc": 1_500_000_000}
    dump.write_text(json.dumps(record) + "\n")
    store = str(tmp_path / "store")
    for command in (
        ["links", str(dump)],
        ["fetch", "--allow-loopback"],
        ["extract", "--workers", "1"],
        ["dedup", "--workers", "1"],
        ["tokenize", "--vocab-size", "300"],
    ):
        code, output = run(*command, "--store", store)
        assert code == 0, output
    counts = json.loads(run("show", "webtext", "--store", store)[1])["stats"]["counts"]
    assert counts["documents_in"] == counts["published"] == 0


def test_demo_names_the_failed_stage_and_exits_non_zero(tmp_path, monkeypatch) -> None:
    """A build run that failed: the demo still stops what it started, then exits 1 naming the
    stage (the orchestration itself is tested in test_demo.py)."""
    from contextlib import contextmanager

    from webtext_app import demo_run

    stopped = []
    message = "Flow run encountered an exception: StageFailed: stage 'fetch' failed reading x"
    fetch = demo_run.StageOutcome("fetch", None, None, "failed", "DumpError: x")
    failed = demo_run.DemoRun(
        demo_run.DemoPaths(tmp_path), str(tmp_path / "store"), "http://127.0.0.1:4999/api",
        "1234", "brave-run", "FAILED", message, (fetch,), (),
    )  # fmt: skip

    @contextmanager
    def session(*args, **kwargs):
        try:
            yield failed
        finally:
            stopped.append(True)

    monkeypatch.setattr(demo_run, "demo_session", session)
    code, output = run("demo", "--workdir", str(tmp_path))
    assert code == 1
    assert stopped == [True]
    assert "http://127.0.0.1:4999/runs/flow-run/1234" in output
    assert "FAILED at stage fetch" in output and "failed reading x" in output
    assert f"PREFECT_HOME={tmp_path / 'prefect'}" in output
