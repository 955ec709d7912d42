# syntax=docker/dockerfile:1
#
# authgate container image (multi-stage).
#
#   docker build -t authgate .                      # with the Keycloak backend (default features)
#   docker build --build-arg CARGO_FEATURES=--no-default-features -t authgate:oss .
#
# Stage "build" compiles the release binary with cargo's registry, git and
# target directories in BuildKit cache mounts, so a rebuild after a source
# change recompiles only authgate itself. Stage "runtime" is Debian slim with
# the binary, the CA certificates and a non-root user: templates and
# migrations are compiled into the binary, and TLS is rustls, so no OpenSSL
# or other shared library beyond glibc is needed at run time.

# The builder and the runtime share the Debian release, so the binary's glibc
# matches. Rust: the version CI builds with (Cargo.toml's rust-version is the
# minimum, 1.94).
ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

# ---------------------------------------------------------------- build
FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS build

# C code (aws-lc, SQLite, mimalloc, zstd) builds with the image's gcc;
# pingora's zlib-ng is built with cmake, which comes from Debian.
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /src
# Only what the binary is built from (tests, benches and docs stay out, so
# editing them does not invalidate this layer).
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY migrations ./migrations
COPY templates ./templates

# Extra cargo flags, e.g. --no-default-features for the open-source build.
ARG CARGO_FEATURES=""
# The dist profile (release with whole-program optimisation, see Cargo.toml)
# keeps release's line tables (debug = "line-tables-only") for backtraces on a
# developer's machine; in the image they would take ~110 MB, so they are
# stripped (symbol names stay, backtraces still name functions).
ENV CARGO_PROFILE_DIST_STRIP=debuginfo
# The target directory is a cache mount, gone after this step: the binary is
# copied out of it in the same step.
RUN --mount=type=cache,id=authgate-cargo-registry,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,id=authgate-cargo-git,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,id=authgate-target,target=/src/target,sharing=locked \
    cargo build --profile dist --locked --bin authgate ${CARGO_FEATURES} \
 && install -D -m 0755 target/dist/authgate /out/authgate \
 && /out/authgate --version

# ---------------------------------------------------------------- runtime
FROM debian:${DEBIAN_RELEASE}-slim AS runtime

# ca-certificates: the trust store for HTTPS to Keycloak and for TLS to
# PostgreSQL and SMTP servers. A fixed uid/gid (10001) so that Kubernetes'
# runAsNonRoot can check it and volumes can be chowned to it. /data is the
# only directory that user may write (see DATA_DIR below).
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 authgate \
 && useradd --system --uid 10001 --gid 10001 --home-dir /app --no-create-home \
      --shell /usr/sbin/nologin authgate \
 && mkdir -p /app /data \
 && chown 10001:10001 /data \
 && chmod 0750 /data

COPY --from=build /out/authgate /usr/local/bin/authgate
# No curl or wget here, and authgate has no health command: this probe
# speaks HTTP through bash's /dev/tcp (see the script).
COPY --chmod=0755 deploy/docker/healthcheck.sh /usr/local/bin/authgate-healthcheck

# Inside a container authgate must listen on all interfaces (its own default
# is 127.0.0.1). JSON logs for log collectors; override with LOG_FORMAT=text.
# DATA_DIR: with no DATABASE_URL (or POSTGRES_*) authgate runs on an embedded
# SQLite file there, keeps a generated SECRET_KEY there and, without
# SMTP_HOST, writes mails to DATA_DIR/outbox. So `docker run -p
# 127.0.0.1:5000:5000 authgate` works as it is; mount a volume on /data to
# keep that state. With PostgreSQL and SMTP configured nothing is written.
ENV APP_HOST=0.0.0.0 \
    APP_PORT=5000 \
    LOG_FORMAT=json \
    DATA_DIR=/data

# authgate reads an optional .env from its working directory: /app is empty
# and owned by root, so only a deliberately mounted file is read.
WORKDIR /app
USER 10001:10001
# 5000 is APP_PORT: HTTPS and HTTP/2 when TLS_CERT_FILE and TLS_KEY_FILE name
# a mounted certificate pair (reloaded when the files change), plain HTTP
# otherwise. 8080 is the usual HTTP_REDIRECT_PORT beside HTTPS: probes in
# clear (the HEALTHCHECK below then uses it) and redirects to HTTPS.
EXPOSE 5000 8080

# Liveness only (/health): a replica whose database is down stays "healthy"
# and answers 503, it is not restarted. `authgate serve` runs the migrations
# first (retrying for up to 30 s while PostgreSQL is not reachable), hence
# the start period.
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
  CMD ["/usr/local/bin/authgate-healthcheck", "/health"]

# authgate is PID 1 and handles SIGTERM itself: it stops accepting, lets
# in-flight requests finish for SHUTDOWN_GRACE_SECONDS (default 10), then
# exits. Give `docker stop -t` / stop_grace_period more than that.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/authgate"]
CMD ["serve"]
