"""What runs outside the test process: the deployment file and the worker image."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent


def test_the_default_deployment_points_at_build_webtext() -> None:
    from prefect.flows import load_flow_from_entrypoint

    config = yaml.safe_load((REPO_ROOT / "prefect.yaml").read_text())
    flows = {}
    for deployment in config["deployments"]:
        flow = load_flow_from_entrypoint(str(REPO_ROOT / deployment["entrypoint"]))
        assert set(deployment.get("parameters", {})) <= set(flow.parameters.properties)
        flows[f"{flow.name}/{deployment['name']}"] = deployment
    # `prefect deployment run build-webtext/default` resolves through these two names.
    assert "build-webtext/default" in flows
    assert "train-gpt2/default" in flows


def test_the_worker_image_copies_every_package() -> None:
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    packages = {
        p.rstrip("*") for p in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    }
    dockerfile = (REPO_ROOT / "docker" / "pipeline.Dockerfile").read_text()
    copied = set(re.findall(r"^COPY (\w+) \./\1$", dockerfile, flags=re.MULTILINE))
    assert packages == copied
