# syntax=docker/dockerfile:1
# A Presswork worker. It connects out to the control plane (PRESSWORK_CONTROL_PLANE) with a
# worker credential (PRESSWORK_WORKER_TOKEN) and serves its own gRPC health on port 7071.
# Build from the repository root:
#   docker build -f deploy/docker/worker.Dockerfile -t presswork-worker .

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p presswork-worker -p presswork-cli

FROM debian:bookworm-slim
# tini is PID 1: it forwards SIGTERM (the worker drains) and reaps the processes that report
# connectors and force-stopped jobs leave behind.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates tini \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/presswork --create-home presswork
COPY --from=build /src/target/release/presswork-worker /src/target/release/presswork /usr/local/bin/
USER 10001:10001
WORKDIR /var/lib/presswork
ENV PRESSWORK_OUTPUT_DIR=/var/lib/presswork/output \
    PRESSWORK_WORK_DIR=/var/lib/presswork/work \
    PRESSWORK_HEALTH_LISTEN=0.0.0.0:7071
EXPOSE 7071
# Healthy while connected to the control plane and taking jobs.
HEALTHCHECK --interval=10s --timeout=3s --start-period=15s --retries=3 \
    CMD ["presswork", "--server", "http://127.0.0.1:7071", "health", "--service", "presswork.worker"]
ENTRYPOINT ["/usr/bin/tini", "--", "presswork-worker"]
