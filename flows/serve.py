"""`python -m flows.serve`: one process that serves the project's deployments on this machine.

    build-webtext/default, train-gpt2/default, evaluate-zero-shot/default

The names and parameters are prefect.yaml's, so `prefect deployment run build-webtext/default`
and `run_deployment("train-gpt2/default")` work the same against a served process as against
work pools; here every run executes in a subprocess of this one, with its environment
(WEBTEXT_STORE, WEBTEXT_RUNS, PREFECT_API_URL). It runs until stopped (Ctrl-C or SIGTERM).
Parameters never hold secrets: Reddit credentials come from the environment or Secret blocks.
"""

from __future__ import annotations

import argparse
import os

from prefect import serve
from prefect.deployments.runner import RunnerDeployment
from prefect.types.entrypoint import EntrypointType

from flows.build import build_webtext
from flows.evaluate import evaluate_zero_shot_flow
from flows.train import train_gpt2_flow

DEPLOYMENT = "default"
# How often the process asks the server for runs to start (Prefect's default is 10 s): the
# build waits on its training run, so each poll's delay is paid twice.
POLL_SECONDS = 2.0
DEPLOYMENTS = ("build-webtext/default", "train-gpt2/default", "evaluate-zero-shot/default")


def local_gpus() -> int:
    """GPUs on this machine; 0 makes train-gpt2 run one CPU process."""
    import torch

    return torch.cuda.device_count()


def deployments() -> list[RunnerDeployment]:
    """The deployments of prefect.yaml, to run in this process instead of on work pools."""
    # A module path, not a file path: the flows are found wherever the package is installed.
    common = {"entrypoint_type": EntrypointType.MODULE_PATH}
    return [
        build_webtext.to_deployment(
            DEPLOYMENT,
            description="Build every stage's next version, incrementally: links, fetch, "
            "extract, dedup, tokenize, then train-gpt2/default, then evaluate.",
            parameters={
                "dumps": [],
                "incremental": True,
                # As on the pools: 124M, refused at once on a machine without a GPU.
                "train": {"model": "124M", "max_steps": 600_000},
                "train_deployment": DEPLOYMENTS[1],
            },
            **common,
        ),
        train_gpt2_flow.to_deployment(
            DEPLOYMENT,
            description="Train GPT-2 on the latest tokens version; starts evaluate-zero-shot "
            "after.",
            parameters={"model": "124M", "gpus_per_node": local_gpus()},
            **common,
        ),
        evaluate_zero_shot_flow.to_deployment(
            DEPLOYMENT,
            description="Zero-shot evaluation of a model version as in the GPT-2 paper.",
            parameters={"checkpoint": "latest"},
            **common,
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description="Serve the deployments on this machine.")
    parser.add_argument(
        "--limit",
        type=int,
        default=4,
        help="Flow runs executing at once (a build and its training run are two)",
    )
    parser.add_argument(
        "--poll-seconds",
        type=float,
        default=POLL_SECONDS,
        help="Seconds between asking the server for runs to start",
    )
    args = parser.parse_args()
    api = os.environ.get("PREFECT_API_URL", "(Prefect's ephemeral API)")
    print(f"serving {', '.join(DEPLOYMENTS)} against {api}", flush=True)
    # No schedules to pause: stopping the process must leave the deployments runnable.
    serve(
        *deployments(),
        limit=args.limit,
        query_seconds=args.poll_seconds,
        pause_on_shutdown=False,
    )


if __name__ == "__main__":
    main()
