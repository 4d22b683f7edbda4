# syntax=docker/dockerfile:1
# The Presswork control plane: gRPC, grpc-web and the dashboard on one port, plus the
# `presswork` CLI (its health check and administration). Build from the repository root:
#   docker build -f deploy/docker/control-plane.Dockerfile -t presswork-control-plane .

FROM node:20-bookworm-slim AS dashboard
WORKDIR /src/web
COPY web/package.json web/package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY proto /src/proto
COPY web ./
RUN npm run gen && npm run build

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p presswork-control-plane -p presswork-cli

FROM debian:bookworm-slim
# tini is PID 1: it forwards SIGTERM (the control plane shuts down gracefully) and reaps.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates tini \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/presswork --create-home presswork
COPY --from=build /src/target/release/presswork-control-plane /src/target/release/presswork /usr/local/bin/
COPY --from=dashboard /src/web/dist /usr/share/presswork/web
USER 10001:10001
WORKDIR /var/lib/presswork
ENV PRESSWORK_LISTEN=0.0.0.0:7070 \
    PRESSWORK_WEB_DIR=/usr/share/presswork/web \
    PRESSWORK_DATABASE=sqlite:///var/lib/presswork/presswork.db
EXPOSE 7070
HEALTHCHECK --interval=10s --timeout=3s --start-period=15s --retries=3 \
    CMD ["presswork", "--server", "http://127.0.0.1:7070", "health"]
ENTRYPOINT ["/usr/bin/tini", "--", "presswork-control-plane"]
