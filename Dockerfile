# syntax=docker/dockerfile:1
#
# The trailwatch binary on Debian slim: the image the ECS services of
# infra/central.yaml run (collector, enricher, api --aws, backfill).
#
#   docker build -t trailwatch:0.1.0 .
#   docker run --rm trailwatch:0.1.0 --help
#
# Build on the architecture the tasks run on (the stack's CpuArchitecture),
# or use `docker buildx build --platform linux/arm64`.

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
# The caches keep downloaded crates and compiled dependencies between builds;
# the binary is copied out of the cached target directory in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p trailwatch-cli \
 && install -m 0755 target/release/trailwatch /usr/local/bin/trailwatch

FROM debian:bookworm-slim
# ca-certificates: TLS to the AWS APIs and webhooks. bash (part of the base
# image) serves the task definitions' health checks.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 trailwatch \
 && useradd --system --uid 10001 --gid trailwatch --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin trailwatch
COPY --from=build /usr/local/bin/trailwatch /usr/local/bin/trailwatch
USER 10001:10001
# 8080: the GraphQL API; 9101 and 9102: /metrics and /healthz of the collector
# and the enricher (TRAILWATCH_METRICS_LISTEN in the task definitions).
EXPOSE 8080 9101 9102
ENTRYPOINT ["trailwatch"]
CMD ["--help"]
