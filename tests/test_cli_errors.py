"""User errors at the command line: one line naming the path or the argument, exit code 2,
no traceback; a store that fails its checks exits 1."""

from __future__ import annotations

import ast
from pathlib import Path

import pyarrow as pa
import pytest

from webtext.parquet import put_table
from webtext.stage import STAGE_NAMES
from webtext.store import Store
from webtext_app import cli


def webtext(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    """`webtext ARGS` through the console entry point: (exit code, stdout, stderr)."""
    monkeypatch.setattr("sys.argv", ["webtext", *args])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    out, err = capsys.readouterr()
    code = exit_info.value.code
    return (code if isinstance(code, int) else 0), out, err.strip()


def one_line_naming(err: str, *names: str) -> None:
    """One line says what failed (a progress bar may have drawn before it), naming it."""
    assert "Traceback" not in err, err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0] == err.splitlines()[-1], err
    for name in names:
        assert name in errors[0], err


def test_a_folder_given_as_a_dump_is_one_line(tmp_path, monkeypatch, capsys) -> None:
    folder = tmp_path / "dumps"
    folder.mkdir()
    store = str(tmp_path / "store")
    # Before: IsADirectoryError's traceback.
    code, _, err = webtext(monkeypatch, capsys, "links", str(folder), "--store", store)
    assert code == 2
    one_line_naming(err, str(folder))


def test_latest_that_is_a_folder_is_one_line(tmp_path, monkeypatch, capsys) -> None:
    store = tmp_path / "store"
    (store / "webtext" / "latest").mkdir(parents=True)
    code, _, err = webtext(monkeypatch, capsys, "show", "webtext", "--store", str(store))
    assert code == 2
    one_line_naming(err, str(store / "webtext" / "latest"))


def test_a_store_that_is_a_file_is_one_line(tmp_path, monkeypatch, capsys) -> None:
    store = tmp_path / "store"
    store.write_text("not a folder")
    code, _, err = webtext(monkeypatch, capsys, "show", "links", "--store", f"{store}/sub")
    assert code == 2
    one_line_naming(err, str(store))


def test_versions_refuses_names_that_are_not_stages(tmp_path, monkeypatch, capsys) -> None:
    store = tmp_path / "a" / "b" / "store"
    store.mkdir(parents=True)
    # Before: listed the folders outside the store.
    code, out, err = webtext(monkeypatch, capsys, "versions", "../../..", "--store", str(store))
    assert code == 2 and out == ""
    one_line_naming(err, "'../../..'", "links", "webtext")
    code, _, err = webtext(monkeypatch, capsys, "show", "nope", "--store", str(store))
    assert code == 2
    one_line_naming(err, "'nope'")


def test_an_archive_that_is_not_a_warc_is_one_line(tmp_path, monkeypatch, capsys) -> None:
    store = Store(str(tmp_path / "store"))
    with store.write("links", {"test": "archive"}, "test") as out:
        table = pa.table({"url": ["http://news.example/a"]})
        put_table(out, "links/part-00000.parquet", table)
    garbage = tmp_path / "garbage.warc.gz"
    garbage.write_bytes(bytes(range(256)) * 40)  # no WARC, no gzip member
    args = ("fetch", "--archive", str(garbage), "--store", store.root_url)
    code, _, err = webtext(monkeypatch, capsys, *args)
    assert code == 2
    one_line_naming(err, str(garbage))


def test_a_missing_version_or_bad_argument_is_one_line(tmp_path, monkeypatch, capsys) -> None:
    store = str(tmp_path / "store")
    code, _, err = webtext(
        monkeypatch, capsys, "show", "links", "--version", "abcdef012345", "--store", store
    )
    assert code == 2
    one_line_naming(err, "links/abcdef012345")
    code, _, err = webtext(
        monkeypatch, capsys, "links", str(tmp_path / "none.zst"), "--store", store
    )
    assert code == 2
    one_line_naming(err, str(Path(tmp_path / "none.zst")))


def test_the_stage_names_are_the_stage_packages_stages() -> None:
    """STAGE_NAMES, what the CLI accepts, names every `Stage(...)` the packages declare."""
    root = Path(__file__).resolve().parent.parent
    declared = set()
    for package in ("scraping", "dedup", "training", "evaluation"):
        for module in (root / package).glob("*.py"):
            for node in ast.walk(ast.parse(module.read_text())):
                if (
                    isinstance(node, ast.Call)
                    and getattr(node.func, "id", None) == "Stage"
                    and isinstance(node.args[0], ast.Constant)
                ):
                    declared.add(node.args[0].value)
    assert declared == set(STAGE_NAMES)


def test_verify_with_nothing_to_verify_says_so(tmp_path, monkeypatch, capsys) -> None:
    """A mistyped --store must not read as "every version verified"."""
    store = str(tmp_path / "no-such-store")
    code, out, _ = webtext(monkeypatch, capsys, "verify", "--store", store)
    assert code == 0 and out.strip() == f"no versions to verify in {store}"
