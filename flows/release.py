"""`outputs`: a model's output dataset (samples beside held-out WebText) and the baseline
detectors' table, as artifacts: the paper's layout, and accuracy by document length."""

from __future__ import annotations

import base64

from prefect import flow, task
from prefect.artifacts import create_image_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from flows.artifacts import ProgressReporter, publish_version
from release.detection import LENGTH_PNG, detect
from release.outputs import OutputOptions, publish_outputs
from webtext.config import open_store
from webtext.store import StageResult, Store, VersionRef


@task(cache_policy=NO_CACHE, persist_result=False)
def outputs_task(
    store: Store, model: VersionRef, options: OutputOptions, device: str | None
) -> StageResult:
    with ProgressReporter(f"Samples and documents of {model} written") as progress:
        return publish_outputs(store, model, options, device=device, progress=progress)


@task(cache_policy=NO_CACHE, persist_result=False)
def detection_task(
    store: Store, outputs: VersionRef, batch_tokens: int, device: str | None
) -> StageResult:
    return detect(store, outputs, batch_tokens=batch_tokens, device=device)


@flow(name="outputs", log_prints=True)
def outputs_flow(
    model_version: str = "latest",
    train_samples: int = 5_000,
    valid_samples: int = 500,
    test_samples: int = 500,
    max_length: int | None = None,
    top_k: list[int] | None = None,
    temperature: float = 1.0,
    seed: int = 0,
    batch_size: int = 32,
    detect_outputs: bool = True,
    batch_tokens: int = 8192,
    device: str | None = None,
    store_url: str | None = None,
) -> VersionRef:
    """Sample a `model` version unconditionally (one setting per `top_k`, 0 = none; default
    pure sampling and top-k 40) into train/valid/test JSONL files beside as many held-out
    WebText documents, then (`detect_outputs`) train and score the baseline detectors."""
    options = OutputOptions.from_user(locals())
    store = open_store(store_url)
    model = store.resolve("model", model_version)
    outputs = outputs_task(store, model, options, device)
    publish_version(store, outputs.ref, outputs.stats["counts"], outputs.reused, "Output dataset")
    if not detect_outputs:
        return outputs.ref
    detection = detection_task(store, outputs.ref, batch_tokens, device)
    counts = detection.stats["counts"]
    publish_version(store, detection.ref, counts, detection.reused, "Detection baselines")
    create_table_artifact(
        key="outputs-detection-table",
        table=detection.stats["table"],
        description=f"Test accuracy (%) of the detectors on {outputs.ref}, in the layout of "
        "OpenAI's gpt-2-output-dataset table (model x temperature 1 / top-k 40)",
    )
    png = store.fs.cat_file(f"{store.version_dir(detection.ref)}/{LENGTH_PNG}")
    create_image_artifact(
        key="outputs-detection-by-length",
        # A data: URI renders in the UI with no server to host the file.
        image_url="data:image/png;base64," + base64.b64encode(png).decode("ascii"),
        description=f"TF-IDF detector's test accuracy by document length, {outputs.ref}",
    )
    return outputs.ref
