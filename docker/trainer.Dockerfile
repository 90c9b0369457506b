# The CUDA trainer: the train-gpt2 flow and torchrun on a node's GPUs. Prefect's
# Kubernetes worker passes its command (`prefect flow-run execute`) as the container's
# args; the multi-node Job passes `python -m torch.distributed.run ...` the same way.
# Build from the repository root: docker build -f docker/trainer.Dockerfile -t webtext-trainer .
# The base image only adds the driver's settings: torch's CUDA wheels bring their own CUDA
# runtime, cuDNN and NCCL, so a cudnn-runtime base would ship them twice.
FROM nvidia/cuda:12.8.1-base-ubuntu24.04

# PyTorch's index for the CUDA build of the pinned torch (cu126, cu128, ...).
ARG TORCH_CUDA=cu128

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    WEBTEXT_STORE=/data/artifacts \
    WEBTEXT_RUNS=/data/runs \
    WEBTEXT_EVAL_DATA=/data/eval

# The base image's tag fixes the Ubuntu release; Ubuntu drops superseded package versions
# from its archive, so exact pins would break later builds.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv tini ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv "$VIRTUAL_ENV"

# torch first, as its own layer: it is most of the image and changes least often.
RUN pip install --index-url "https://download.pytorch.org/whl/${TORCH_CUDA}" torch==2.13.0

WORKDIR /opt/webtext
COPY pyproject.toml README.md prefect.yaml ./
COPY webtext ./webtext
COPY webtext_app ./webtext_app
COPY flows ./flows
COPY scraping ./scraping
COPY dedup ./dedup
COPY training ./training
COPY evaluation ./evaluation
COPY release ./release
# torch==2.13.0 is already satisfied by the CUDA build, so pip keeps it.
RUN pip install . \
    && useradd --create-home --uid 10001 webtext \
    && mkdir -p /data/artifacts /data/runs && chown -R webtext /data

USER 10001
VOLUME ["/data"]
# tini as PID 1 reaps torchrun's workers and, with -g, passes a cancellation's SIGTERM to
# the whole process group; whatever command Kubernetes gives runs under it.
ENTRYPOINT ["/usr/bin/tini", "-g", "--"]
CMD ["prefect", "flow-run", "execute"]
