# syntax=docker/dockerfile:1
# sales-ingest container image: built with the official Rust image, run on
# debian:bookworm-slim as a non-root user with nothing but the binary and the CA
# certificates added.
#
#   docker build -t sales-ingest .
#   docker run --rm -p 50051:50051 -p 8001:8001 \
#     -e KAFKA_BOOTSTRAP_SERVERS=broker:9092 -e MONGODB_URL=mongodb://mongo:27017 sales-ingest
#
# Needs a Docker engine with BuildKit (the default since Docker 23). It could not be
# built on the project's machines (no engine); tests/api/deploy/dockerfile.rs checks it statically
# and checks that the binary needs no shared library bookworm-slim lacks.

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS build
# rdkafka's cmake-build compiles the bundled librdkafka and (ssl-vendored) a static
# OpenSSL, so the image needs no libssl: cmake, a C/C++ toolchain, perl, and
# curl's headers (librdkafka includes curl/curl.h even with curl disabled).
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake g++ make pkg-config \
      libcurl4-openssl-dev perl ca-certificates \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock build.rs ./
COPY proto ./proto
COPY src ./src
# Cargo loads every workspace member, so their sources come too (only the server is built).
COPY clients/ingestctl ./clients/ingestctl
COPY bench ./bench
COPY test-support ./test-support
# Cache mounts keep the registry and the target dir between builds.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin sales-ingest \
 && install -D -m 0755 target/release/sales-ingest /out/sales-ingest

FROM debian:${DEBIAN_RELEASE}-slim AS runtime
# The binary links only glibc, libgcc_s and zlib (all in bookworm-slim) and uses the
# system trust store for TLS (mongodb+srv / TLS brokers).
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /out/sales-ingest /usr/local/bin/sales-ingest
USER 10001:10001
# gRPC (IngestEvents, IngestAdmin, Health, reflection) and HTTP (/metrics, /health,
# /stats, the status page at /).
EXPOSE 50051 8001
ENV GRPC_ADDR=0.0.0.0:50051 \
    HTTP_ADDR=0.0.0.0:8001
# gRPC health of the whole server: SERVING only while MongoDB (and Kafka, when enabled)
# is reachable. Keep the address in step with GRPC_ADDR's port.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
  CMD ["sales-ingest", "healthcheck", "127.0.0.1:50051"]
# SIGTERM starts the graceful shutdown (drain, flush, commit) bounded by
# SHUTDOWN_TIMEOUT (30 s): give `docker stop` / Kubernetes a longer grace period.
STOPSIGNAL SIGTERM
ENTRYPOINT ["sales-ingest"]
