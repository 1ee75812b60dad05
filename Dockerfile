# Switchyard gateway image.
#
#   docker build -t switchyard .
#   docker run -p 127.0.0.1:18789:18789 -e SWITCHYARD_JWT_SECRET=$(openssl rand -hex 32) switchyard
#
# Configuration is by environment (README.md "Configuration"); the image
# listens on all interfaces, so the gateway refuses to start until
# credentials are configured (SWITCHYARD_JWT_SECRET, SWITCHYARD_API_KEYS, …).

# The toolchain the project is built and tested with; edition 2024 needs
# 1.85 or later.
ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-slim-bookworm AS build
WORKDIR /src

# make: the allocator, jemalloc, is built from its C sources by its -sys
# crate (the slim image has the C compiler, not make).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends make \
    && rm -rf /var/lib/apt/lists/*

# Dependencies first, against empty sources: this layer is reused for as
# long as Cargo.toml and Cargo.lock stay the same, so a code change
# recompiles only the switchyard crate.
COPY Cargo.toml Cargo.lock ./
RUN mkdir src \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs \
    && cargo build --release --locked \
    && rm -rf src

COPY src ./src
# COPY keeps the sources' modification times, which may be older than the
# placeholder build above: touch them so cargo rebuilds the crate itself.
RUN touch src/main.rs src/lib.rs \
    && cargo build --release --locked \
    && install -m 0755 target/release/switchyard /usr/local/bin/switchyard

FROM debian:bookworm-slim

# ca-certificates: rediss:// and OTLP over TLS; curl: the HEALTHCHECK.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/*

# A fixed numeric uid so that Kubernetes' runAsNonRoot can verify it.
RUN groupadd --system --gid 10001 switchyard \
    && useradd --system --uid 10001 --gid switchyard --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin switchyard

COPY --from=build /usr/local/bin/switchyard /usr/local/bin/switchyard

# lan = 0.0.0.0: a container is reached through its own interface. JSON
# logs for log collectors.
ENV SWITCHYARD_BIND=lan \
    SWITCHYARD_PORT=18789 \
    SWITCHYARD_LOG=info \
    SWITCHYARD_LOG_FORMAT=json

USER 10001:10001
EXPOSE 18789

# Liveness only: /ready turns 503 while Redis is away, which is not a reason
# to restart the container. (With SWITCHYARD_TLS_CERT set, override it with
# an https:// URL.)
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["/bin/sh", "-c", "curl -fsS -o /dev/null http://127.0.0.1:${SWITCHYARD_PORT:-18789}/health || exit 1"]

# SIGTERM (docker stop, Kubernetes) drains: /ready 503, clients told to
# reconnect, exit within limits.drain_deadline_ms (10 s by default), so
# give the container a longer stop timeout (docker stop -t 30).
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/switchyard"]
CMD ["serve"]
