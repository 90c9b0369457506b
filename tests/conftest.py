"""Shared test fixtures: the real-data folder, one Prefect test server and one S3-compatible
server per session."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent

# Prefect reads these when a flow first runs: keep its home, results and telemetry out of
# the user's machine and out of earlier test sessions (a cached result would come back).
_PREFECT_HOME = tempfile.mkdtemp(prefix="webtext-tests-prefect-")
os.environ["PREFECT_HOME"] = _PREFECT_HOME
os.environ["PREFECT_RESULTS_LOCAL_STORAGE_PATH"] = os.path.join(_PREFECT_HOME, "results")
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")


def _test_data_root() -> Path:
    return Path(os.environ.get("WEBTEXT_TEST_DATA", REPO_ROOT.parent / "shared" / "data"))


def data_missing(message: str) -> NoReturn:
    """Real test data is missing: a skip on a fresh clone, a failure under CI."""
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def test_data() -> Path:
    """The shared folder of real data; skipped on a fresh clone, a failure under CI."""
    root = _test_data_root()
    if not root.is_dir():
        data_missing(f"real test data not found at {root} (set WEBTEXT_TEST_DATA)")
    return root


@pytest.fixture(scope="session")
def prefect_server():
    """One temporary Prefect server (SQLite) for every flow test of the session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=60):
        yield


@pytest.fixture
def sample_dump(test_data: Path) -> Path:
    """The 31 real Pushshift submissions, 2005 to 2024."""
    return test_data / "reddit" / "pushshift" / "test_submissions.ndjson"


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory):
    """`webtext demo`'s orchestration, run once per session: a Prefect server, `flows.serve`
    and the build-webtext deployment run, training fewer steps than the demo. The server stays
    up until the session ends, for the UI check; then every process it started must be gone."""
    from webtext_app.demo_run import demo_session
    from webtext_app.prefect_server import free_port, session_alive

    root = tmp_path_factory.mktemp("demo")
    with demo_session(
        root / "work", str(root / "artifacts"), port=free_port(), train={"max_steps": 40}
    ) as run:
        yield run
    left = [pid for pid in run.pids if session_alive(pid)]
    assert not left, f"processes of the demo's sessions {left} still run"


S3_BUCKET = "webtext-tests"


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory) -> Iterator[str]:
    """An S3-compatible server for the session: moto's, in this process, on a free loopback
    port, with one bucket. Clients find it as they would find AWS: the endpoint and dummy
    credentials in the usual environment variables (no AWS config file of the user's)."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # a line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    no_config = str(tmp_path_factory.mktemp("aws") / "none")
    settings = {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "test-key-id",
        "AWS_SECRET_ACCESS_KEY": "test-secret-key",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": no_config,
        "AWS_SHARED_CREDENTIALS_FILE": no_config,
    }
    before = {name: os.environ.get(name) for name in settings}
    os.environ.update(settings)
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()  # none made before, for another endpoint
    s3fs.S3FileSystem().mkdir(S3_BUCKET)
    try:
        yield endpoint
    finally:
        server.stop()
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@pytest.fixture
def s3_store_url(s3_endpoint: str) -> str:
    """A store URL of its own on the session's S3 server: `s3://bucket/<random prefix>`."""
    return f"s3://{S3_BUCKET}/store-{uuid.uuid4().hex[:12]}"


def status_after(code: str, *args: str) -> str:
    """/proc/self/status of a fresh Python process (the repository importable) after it
    runs `code` with `args` as sys.argv[1:]; the test is skipped where the kernel does not
    report huge pages there."""
    if "THP_enabled" not in Path("/proc/self/status").read_text():
        pytest.skip("the kernel does not report THP_enabled")
    root = str(Path(__file__).resolve().parent.parent)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
    code += "; print(open('/proc/self/status').read())"
    done = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, check=True
    )
    return done.stdout
