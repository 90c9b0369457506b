"""docker/compose.yaml, checked without a Docker engine.

The file is interpolated the way Compose does it, then validated against the Compose
Specification's JSON schema, vendored in tests/compose-spec/: `schema/compose-spec.json` of
github.com/compose-spec/compose-go at commit e70e961c3a3acebf0800b882f1afb3dbf1fb74a2 (the
schema Docker Compose embeds and validates every file with), Apache-2.0, licence beside it.
To update: replace the file with a newer one from that path and note the commit here.

The rest checks what the schema cannot: that the stack agrees with prefect.yaml, the
Dockerfiles and flows.secrets. Where a Compose v2 CLI is installed, `config -q` runs too.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from flows.secrets import SECRET_BLOCKS

REPO_ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = REPO_ROOT / "docker" / "compose.yaml"
SCHEMA_FILE = Path(__file__).resolve().parent / "compose-spec" / "compose-spec.json"
# Test-only values for the variables the file requires.
TEST_ENV = {
    "POSTGRES_PASSWORD": "test-only-password",
    "MINIO_ROOT_USER": "test-only-user",
    "MINIO_ROOT_PASSWORD": "test-only-minio-password",
}


# --- interpolation, as Compose does it (values only, no nesting) ---------------------------

# $$ | $NAME | ${NAME} | ${NAME<op>arg} with op one of :- - :? ? :+ + | anything else
_VARIABLE = re.compile(
    r"\$(?:(?P<escaped>\$)"
    r"|(?P<bare>[A-Za-z_][A-Za-z0-9_]*)"
    r"|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}$]*))?\}"
    r"|(?P<invalid>))"
)


class InterpolationError(ValueError):
    pass


def _substitute(text: str, env: dict[str, str]) -> str:
    def replace(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        if match["invalid"] is not None:
            raise InterpolationError(f"invalid interpolation in {text!r}")
        name = match["bare"] or match["braced"]
        value, op, arg = env.get(name), match["op"], match["arg"]
        is_set = value is not None and (value != "" or not op or not op.startswith(":"))
        if op in (":-", "-"):
            return value if is_set else arg
        if op in (":?", "?"):
            if not is_set:
                raise InterpolationError(f"required variable {name} is missing: {arg}")
            return value
        if op in (":+", "+"):
            return arg if is_set else ""
        return value or ""  # an unset variable is an empty string (Compose warns)

    return _VARIABLE.sub(replace, text)


def interpolate(node: Any, env: dict[str, str]) -> Any:
    if isinstance(node, str):
        return _substitute(node, env)
    if isinstance(node, dict):
        return {key: interpolate(value, env) for key, value in node.items()}
    if isinstance(node, list):
        return [interpolate(value, env) for value in node]
    return node


def schema_errors(path: Path, env: dict[str, str]) -> list[str]:
    """What Compose's loader would refuse in the file: interpolation, then the schema."""
    try:
        document = interpolate(yaml.safe_load(path.read_text()), env)
    except (yaml.YAMLError, InterpolationError) as error:
        return [str(error)]
    schema = json.loads(SCHEMA_FILE.read_text())
    validator = jsonschema.validators.validator_for(schema)(schema)
    return [
        f"{'.'.join(map(str, error.absolute_path)) or '<top>'}: {error.message}"
        for error in validator.iter_errors(document)
    ]


# --- the file as Compose reads it ------------------------------------------------------------


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    """The file before interpolation: where secrets would show."""
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def services(raw: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return interpolate(raw, TEST_ENV)["services"]


@pytest.fixture(scope="module")
def deployments() -> list[dict[str, Any]]:
    return yaml.safe_load((REPO_ROOT / "prefect.yaml").read_text())["deployments"]


def environment(service: dict[str, Any]) -> dict[str, str | None]:
    env = service.get("environment") or {}
    if isinstance(env, list):  # the `- NAME=value` / `- NAME` form
        pairs = (item.partition("=") for item in env)
        return {name: value if sep else None for name, sep, value in pairs}
    return env


def mounts(service: dict[str, Any]) -> dict[str, str]:
    """Container path -> volume name or host path, for the short `source:target` form."""
    return {m.split(":")[1]: m.split(":")[0] for m in service.get("volumes", [])}


def dockerfile_of(image: str, services: dict[str, dict[str, Any]]) -> Path:
    """The Dockerfile of the service that builds `image`."""
    for service in services.values():
        if service.get("image") == image and "build" in service:
            build = service["build"]
            context = (COMPOSE_FILE.parent / build["context"]).resolve()
            return context / build.get("dockerfile", "Dockerfile")
    raise AssertionError(f"no service builds {image}")


def instruction(dockerfile: Path, name: str) -> str:
    """The argument of the last `name` instruction (the one in force)."""
    found = re.findall(rf"^{name}\s+(.+)$", dockerfile.read_text(), flags=re.MULTILINE)
    assert found, f"{dockerfile.name} has no {name}"
    return found[-1].strip()


def argv(service: dict[str, Any], services: dict[str, dict[str, Any]]) -> list[str]:
    """The container's command line: entrypoint + command, the image's where not overridden.

    As in Docker, overriding the entrypoint drops the image's CMD.
    """
    dockerfile = dockerfile_of(service["image"], services)

    def as_list(value: str | list[str]) -> list[str]:
        return shlex.split(value) if isinstance(value, str) else list(value)

    if "entrypoint" in service:
        return as_list(service["entrypoint"]) + as_list(service.get("command", []))
    entrypoint = json.loads(instruction(dockerfile, "ENTRYPOINT"))
    command = service.get("command") or json.loads(instruction(dockerfile, "CMD"))
    return entrypoint + as_list(command)


def ours(services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The services running an image built here (the others run their image's own command)."""
    built = {service["image"] for service in services.values() if "build" in service}
    return {name: service for name, service in services.items() if service["image"] in built}


def workers(services: dict[str, dict[str, Any]]) -> dict[str, str]:
    """Service name -> the work pool it polls, for every service that runs a worker."""
    pools = {}
    for name, service in ours(services).items():
        args = argv(service, services)
        line = " ".join(args)
        if "prefect worker start" in line:
            flag = next(i for i, arg in enumerate(args) if arg in ("--pool", "-p"))
            pools[name] = args[flag + 1]
    return pools


# --- the Compose Specification ---------------------------------------------------------------


def test_the_vendored_schema_is_a_valid_json_schema() -> None:
    schema = json.loads(SCHEMA_FILE.read_text())
    jsonschema.validators.validator_for(schema).check_schema(schema)
    assert (SCHEMA_FILE.parent / "LICENSE").read_text().lstrip().startswith("Apache License")


def test_the_compose_file_follows_the_compose_specification() -> None:
    assert schema_errors(COMPOSE_FILE, TEST_ENV) == []


@pytest.mark.parametrize(
    ("original", "broken"),
    [
        ("    healthcheck:", "    healthchek:"),  # a typo'd service key
        ("              capabilities:", "              capabilites:"),  # deep inside deploy
        ("\nvolumes:\n", "\nvolume:\n"),  # a typo'd top-level key
        ("shm_size: 16gb", "shm_size: [16gb]"),  # a wrong type
        ("${POSTGRES_PASSWORD:?", "$(POSTGRES_PASSWORD:?"),  # broken interpolation
    ],
)
def test_a_broken_copy_is_rejected(tmp_path: Path, original: str, broken: str) -> None:
    text = COMPOSE_FILE.read_text()
    assert original in text
    copy_path = tmp_path / "compose.yaml"
    copy_path.write_text(text.replace(original, broken, 1))
    assert schema_errors(copy_path, TEST_ENV)


def test_the_database_password_must_be_given() -> None:
    errors = schema_errors(COMPOSE_FILE, {})
    assert errors and "POSTGRES_PASSWORD" in errors[0]


def test_references_resolve(raw: dict[str, Any], services: dict[str, dict[str, Any]]) -> None:
    """What Compose checks after the schema: named volumes declared, dependencies exist."""
    declared = set(raw.get("volumes") or {})
    for name, service in services.items():
        for mount in service.get("volumes", []):
            source = mount.split(":", 1)[0] if isinstance(mount, str) else mount.get("source")
            if source and not source.startswith((".", "/", "~", "$")):
                assert source in declared, f"{name} mounts undeclared volume {source}"
        for dependency in service.get("depends_on") or {}:
            assert dependency in services, f"{name} depends on unknown {dependency}"


def test_healthcheck_times_are_go_durations(services: dict[str, dict[str, Any]]) -> None:
    duration = re.compile(r"^(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+$")
    for name, service in services.items():
        for key, value in (service.get("healthcheck") or {}).items():
            if key in ("interval", "timeout", "start_period", "start_interval"):
                assert duration.match(value), f"{name}.healthcheck.{key}: {value!r}"


# --- the stack: workers, pools, images -------------------------------------------------------


def test_every_worker_polls_a_pool_of_prefect_yaml_and_every_pool_has_one(
    services: dict[str, dict[str, Any]], deployments: list[dict[str, Any]]
) -> None:
    pools = {deployment["work_pool"]["name"] for deployment in deployments}
    polled = workers(services)
    assert polled, "no service runs a Prefect worker"
    assert set(polled.values()) <= pools
    assert pools <= set(polled.values()), "a deployment's pool has no worker"


def test_the_deploy_service_creates_the_pools_and_deploys_everything(
    services: dict[str, dict[str, Any]], deployments: list[dict[str, Any]]
) -> None:
    script = " ".join(argv(services["deploy"], services))
    for pool in {deployment["work_pool"]["name"] for deployment in deployments}:
        assert pool in script
    assert "prefect work-pool create" in script
    assert re.search(r"prefect (--no-prompt )?deploy --all", script)


def test_code_folders_match_the_deployments_working_directories(
    services: dict[str, dict[str, Any]], deployments: list[dict[str, Any]]
) -> None:
    top_pull = yaml.safe_load((REPO_ROOT / "prefect.yaml").read_text()).get("pull", [])
    deploy = services["deploy"]
    workdir = deploy.get("working_dir") or instruction(
        dockerfile_of(deploy["image"], services), "WORKDIR"
    )
    # `prefect deploy` reads prefect.yaml in its working directory: the checkout's, mounted.
    assert mounts(deploy)[f"{workdir}/prefect.yaml"] == "../prefect.yaml"
    by_pool = {pool: services[name] for name, pool in workers(services).items()}
    for deployment in deployments:
        steps = deployment.get("pull", top_pull)
        step = next(s for s in steps if "prefect.deployments.steps.set_working_directory" in s)
        directory = step["prefect.deployments.steps.set_working_directory"]["directory"]
        # `{{ $PWD }}` is resolved where `prefect deploy` runs: the deploy service.
        directory = directory.replace("{{ $PWD }}", workdir)
        worker = by_pool[deployment["work_pool"]["name"]]
        dockerfile = dockerfile_of(worker["image"], services)
        assert directory == worker.get("working_dir", instruction(dockerfile, "WORKDIR"))


def test_the_gpu_pool_runs_in_the_image_its_deployment_names(
    services: dict[str, dict[str, Any]], deployments: list[dict[str, Any]]
) -> None:
    by_pool = {pool: services[name] for name, pool in workers(services).items()}
    for deployment in deployments:
        image = (deployment["work_pool"].get("job_variables") or {}).get("image")
        if image:
            assert by_pool[deployment["work_pool"]["name"]]["image"] == image


def test_built_images_have_their_dockerfiles(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        if "build" in service:
            dockerfile = dockerfile_of(service["image"], services)
            assert dockerfile.is_file(), f"{name}: {dockerfile} is missing"
        elif service["image"].startswith("webtext-"):
            # Ours, never pulled: another service must build it.
            assert dockerfile_of(service["image"], services).is_file()


def test_the_trainer_reserves_gpus_and_keeps_tini(services: dict[str, dict[str, Any]]) -> None:
    (name,) = [name for name, pool in workers(services).items() if pool == "webtext-gpu"]
    trainer = services[name]
    devices = trainer["deploy"]["resources"]["reservations"]["devices"]
    assert any(
        device.get("driver") == "nvidia"
        and "gpu" in device.get("capabilities", [])
        and (device.get("count") == "all" or int(device.get("count", 0)) >= 1)
        for device in devices
    )
    # tini forwards a cancellation to torchrun's whole process group (trainer.Dockerfile).
    assert argv(trainer, services)[0].endswith("tini")


def test_workers_share_the_store(services: dict[str, dict[str, Any]]) -> None:
    volumes_of_store = set()
    for name in workers(services):
        store = environment(services[name])["WEBTEXT_STORE"]
        assert store in mounts(services[name]), f"{name}: {store} is not on a volume"
        volumes_of_store.add(mounts(services[name])[store])
    assert len(volumes_of_store) == 1, volumes_of_store


def test_the_server_runs_on_postgresql(
    raw: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    (name,) = [
        n for n, s in ours(services).items() if "server start" in " ".join(argv(s, services))
    ]
    server = services[name]
    url = environment(server)["PREFECT_API_DATABASE_CONNECTION_URL"]
    match = re.fullmatch(r"postgresql\+asyncpg://(\w+):(.+)@([\w-]+):5432/(\w+)", url)
    assert match, url
    user, password, host, database = match.groups()
    postgres = services[host]
    assert postgres["image"].startswith("postgres:")
    assert environment(postgres) == {
        "POSTGRES_USER": user,
        "POSTGRES_DB": database,
        "POSTGRES_PASSWORD": password,
    }
    assert "test" in postgres["healthcheck"]
    assert server["depends_on"][host]["condition"] == "service_healthy"
    assert mounts(postgres)["/var/lib/postgresql/data"] in raw["volumes"]  # a named volume
    assert any(str(port).endswith(":4200:4200") for port in server["ports"])
    for other in workers(services):
        assert environment(services[other])["PREFECT_API_URL"] == f"http://{name}:4200/api"


# --- secrets ---------------------------------------------------------------------------------

_SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|KEY|CREDENTIAL|CLIENT_ID|USER_AGENT")
_REFERENCE_ONLY = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*(:?\?[^}]*)?\}")  # no default


def test_no_secret_is_written_in_the_file(raw: dict[str, Any]) -> None:
    for name, service in raw["services"].items():
        for variable, value in environment(service).items():
            if _SECRET_NAME.search(variable):
                assert value is None or _REFERENCE_ONLY.fullmatch(str(value)), (
                    f"{name}: {variable} has a literal value"
                )
    # Passwords inside URLs (user:password@host) must be references too.
    text = COMPOSE_FILE.read_text()
    for password in re.findall(r"://[^:/\s]+:([^@\s]+)@", text):
        assert _REFERENCE_ONLY.fullmatch(password), password


def test_reddit_credentials_pass_through_to_the_data_worker(
    raw: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    (name,) = [name for name, pool in workers(services).items() if pool == "webtext-cpu"]
    env = environment(raw["services"][name])
    for variable in SECRET_BLOCKS:  # the names flows.secrets reads
        assert variable in env and env[variable] is None, variable


# --- the real Compose CLI, where one is installed --------------------------------------------


def _compose_cli() -> list[str] | None:
    """A Compose v2 command line: `docker compose` or a standalone v2 `docker-compose`."""
    for command in (["docker", "compose"], ["docker-compose"]):
        if shutil.which(command[0]) is None:
            continue
        version = subprocess.run(
            [*command, "version", "--short"], capture_output=True, text=True, check=False
        )
        if version.returncode == 0 and version.stdout.strip().lstrip("v").startswith("2"):
            return command
    return None


def test_the_compose_cli_agrees(tmp_path: Path) -> None:
    """`config -q` needs no engine. Optional: the schema tests above are the CI check."""
    command = _compose_cli()
    if command is None:
        pytest.skip("no Compose v2 CLI installed (docker compose / docker-compose)")
    # --env-file /dev/null: a developer's docker/.env must not change the outcome.
    base = [*command, "--project-directory", str(COMPOSE_FILE.parent), "--env-file", os.devnull]
    env = {k: v for k, v in os.environ.items() if k not in TEST_ENV}

    def config(path: Path, extra_env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*base, "-f", str(path), "config", "-q"],
            env={**env, **extra_env},
            capture_output=True,
            text=True,
            check=False,
        )

    result = config(COMPOSE_FILE, TEST_ENV)
    assert result.returncode == 0, result.stderr
    assert config(COMPOSE_FILE, {}).returncode != 0  # POSTGRES_PASSWORD is required
    broken = tmp_path / "compose.yaml"
    broken.write_text(COMPOSE_FILE.read_text().replace("capabilities:", "capabilites:"))
    assert config(broken, TEST_ENV).returncode != 0


def test_interpolation_matches_compose_rules() -> None:
    env = {"SET": "v", "EMPTY": ""}
    cases = {
        "$$SET": "$SET",
        "${SET}": "v",
        "$SET/x": "v/x",
        "${UNSET}": "",
        "${EMPTY:-d}": "d",
        "${EMPTY-d}": "",
        "${UNSET-d}": "d",
        "${SET:+alt}": "alt",
        "${EMPTY:+alt}": "",
        "${EMPTY+alt}": "alt",
        "${EMPTY?e}": "",
    }
    for text, expected in cases.items():
        assert interpolate(text, env) == expected, text
    for text in ("${EMPTY:?e}", "${UNSET?e}", "${SET", "$ x", "${A:-${B}}"):
        with pytest.raises(InterpolationError):
            interpolate(text, env)


def test_dask_workers_reach_the_scheduler_and_the_store(
    services: dict[str, dict[str, Any]],
) -> None:
    """The flows' task_runner=dask://dask-scheduler:8786 reaches the scheduler, its workers
    write where the pipeline worker commits, and may start the page pool."""
    scheduler = argv(services["dask-scheduler"], services)
    assert scheduler[:2] == ["dask", "scheduler"] and "8786" in scheduler
    worker = services["dask-worker"]
    assert "tcp://dask-scheduler:8786" in argv(worker, services)
    env = environment(worker)
    assert env["DASK_DISTRIBUTED__WORKER__DAEMON"] == "False"
    (pipeline,) = [name for name, pool in workers(services).items() if pool == "webtext-cpu"]
    assert env["WEBTEXT_STORE"] == environment(services[pipeline])["WEBTEXT_STORE"]
    store = env["WEBTEXT_STORE"]
    assert mounts(worker)[store] == mounts(services[pipeline])[store]
    assert env["PREFECT_API_URL"] == environment(services[pipeline])["PREFECT_API_URL"]


def test_the_s3_credentials_are_minios_for_every_store_user(
    services: dict[str, dict[str, Any]],
) -> None:
    minio = environment(services["minio"])
    for name in ("pipeline", "dask-worker", "trainer", "bucket"):
        env = environment(services[name])
        assert env["AWS_ACCESS_KEY_ID"] == minio["MINIO_ROOT_USER"], name
        assert env["AWS_SECRET_ACCESS_KEY"] == minio["MINIO_ROOT_PASSWORD"], name
        assert env["AWS_ENDPOINT_URL"] == "http://minio:9000", name
