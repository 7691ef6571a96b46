# syntax=docker/dockerfile:1.7
# Stages: `builder` compiles the release binary; `service` (default) holds only that binary;
# `runner` holds Python with the pinned lm-eval plus the same binary, used as the in-pod driver.
#   docker build -t lm-eval-aas .                  the service
#   docker build -t lm-eval-aas-runner --target runner .

FROM rust:1.95-bookworm AS builder
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked && cp target/release/lm-eval-aas /usr/local/bin/lm-eval-aas

FROM python:3.11-slim-bookworm AS runner
ENV HOME=/tmp PIP_NO_CACHE_DIR=1 HF_HOME=/tmp/hf \
    HF_DATASETS_OFFLINE=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
RUN pip install "lm-eval[api]==0.4.13" pyyaml
COPY --from=builder /usr/local/bin/lm-eval-aas /usr/local/bin/lm-eval-aas
COPY tasks /opt/lm-eval-aas/tasks
# Any UID works (OpenShift's restricted SCC assigns one); HOME and caches are under /tmp.
USER 1001
ENTRYPOINT ["/usr/local/bin/lm-eval-aas", "driver", "--echo", "--"]

FROM gcr.io/distroless/cc-debian12:nonroot AS service
COPY --from=builder /usr/local/bin/lm-eval-aas /usr/local/bin/lm-eval-aas
COPY tasks /opt/lm-eval-aas/tasks
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/lm-eval-aas", "serve"]
