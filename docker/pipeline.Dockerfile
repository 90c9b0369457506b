# The CPU worker for the data stages (links, fetch, extract, dedup, tokenize).
# Build from the repository root: docker build -f docker/pipeline.Dockerfile -t webtext-pipeline .
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    WEBTEXT_STORE=/data/artifacts

WORKDIR /opt/webtext
COPY pyproject.toml README.md ./
COPY webtext ./webtext
COPY webtext_app ./webtext_app
COPY flows ./flows
COPY scraping ./scraping
COPY dedup ./dedup
COPY training ./training
COPY evaluation ./evaluation
COPY release ./release
# PyPI's Linux torch wheels bundle CUDA; this worker never trains, so take the CPU build.
# The s3 extra: the store and its inputs on S3 or an S3-compatible service (MinIO).
# (DL3013: ".[s3]" is this project, copied above; its dependencies are pinned in pyproject.)
# hadolint ignore=DL3013
RUN pip install --extra-index-url https://download.pytorch.org/whl/cpu ".[s3]" \
    && useradd --create-home --uid 10001 webtext \
    && mkdir -p /data/artifacts && chown webtext /data/artifacts

USER 10001
VOLUME ["/data"]
ENTRYPOINT ["webtext"]
CMD ["--help"]
