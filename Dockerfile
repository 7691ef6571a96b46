# syntax=docker/dockerfile:1.7
# Stages: `builder` compiles the release binary; `service` (default) holds only that binary;
# `runner` holds Python with the pinned lm-eval plus the same binary, used as the in-pod driver.
#   docker build -t lm-eval-aas .                          the service
#   docker build -t lm-eval-aas-runner --target runner .   the runner (--runner-image)
# scripts/check-dockerfile lints this file, checks its stages and replays the runner's environment.

FROM rust:1.95-bookworm AS builder
WORKDIR /src
COPY . .
# The registry and target caches persist between builds, so only changed crates recompile.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked && cp target/release/lm-eval-aas /usr/local/bin/lm-eval-aas

FROM python:3.11-slim-bookworm AS runner
# Any UID works (OpenShift's restricted SCC assigns one): nothing is written outside /tmp and the pod's emptyDirs.
ENV HOME=/tmp \
    HF_HOME=/tmp/hf \
    HF_DATASETS_OFFLINE=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    PATH=/opt/venv/bin:$PATH
COPY runner/requirements.txt /opt/lm-eval-aas/requirements.txt
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check -r /opt/lm-eval-aas/requirements.txt
COPY tasks /opt/lm-eval-aas/tasks
COPY --from=builder /usr/local/bin/lm-eval-aas /usr/local/bin/lm-eval-aas
USER 1001:0
ENTRYPOINT ["/usr/local/bin/lm-eval-aas", "driver", "--echo", "--"]

FROM gcr.io/distroless/cc-debian12:nonroot AS service
COPY --from=builder /usr/local/bin/lm-eval-aas /usr/local/bin/lm-eval-aas
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/lm-eval-aas", "serve"]
