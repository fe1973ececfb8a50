# syntax=docker/dockerfile:1
#
# Salve's image: `salve` and the bundled playbooks (with their WASM steps and runbooks) and
# policies, on a small non-root runtime.
#
#   docker build -t ghcr.io/salve-dev/salve:0.1.0 .
#
# A static binary (musl, static-pie: `ldd` says "statically linked") on distroless `static`,
# which adds only CA certificates, /etc/passwd and its `nonroot` user (65532, what the chart runs
# as) — no libc, no shell. The three C libraries Salve links are built into it by musl-gcc:
# aws-lc (rustls' crypto, through aws-lc-sys), SQLite (rusqlite, bundled) and mimalloc, the
# allocator of the musl build (musl's own serializes the engine's threads: `salve validate` of
# 1,000 playbooks took 2.2 times as long; see engine/Cargo.toml). The target follows the build
# machine's architecture (x86_64 or aarch64).
#
# Not built in CI (no container daemon runs there); the same `cargo build --target
# x86_64-unknown-linux-musl` was built and run outside a container (deploy/README.md).

ARG RUST_VERSION=1.95

FROM docker.io/library/rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
# musl-gcc for the C libraries; the WASM steps are components for wasm32-unknown-unknown,
# linked by rustup's wasm-component-ld.
RUN apt-get update \
 && apt-get install -y --no-install-recommends musl-tools \
 && rm -rf /var/lib/apt/lists/* \
 && rustup target add "$(uname -m)-unknown-linux-musl" wasm32-unknown-unknown
COPY . .
# Cache the registry and the target directory between builds (BuildKit).
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    bash wasm-sdk/build.sh \
 && target="$(uname -m)-unknown-linux-musl" \
 && TARGET_CC=musl-gcc cargo build --locked --release -p salve --target "$target" \
 && install -D -m 0755 "target/$target/release/salve" /out/usr/bin/salve \
 && strip /out/usr/bin/salve \
 && mkdir -p /out/usr/share/salve /out/var/lib/salve \
 && cp -r playbooks /out/usr/share/salve/playbooks \
 && cp -r policies /out/usr/share/salve/policies \
 && rm -rf /out/usr/share/salve/playbooks/schema

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/usr /usr
COPY --from=build --chown=65532:65532 /out/var/lib/salve /var/lib/salve
USER 65532:65532
WORKDIR /var/lib/salve
# mimalloc commits memory as it is used and returns what is freed at once: with its defaults
# (eager arenas, delayed purge) the idle engine held 31.5 MiB anonymous instead of 9.8 MiB.
ENV SALVE_JOURNAL=/var/lib/salve/journal.db \
    XDG_CACHE_HOME=/var/lib/salve/cache \
    MIMALLOC_ARENA_EAGER_COMMIT=0 \
    MIMALLOC_PURGE_DELAY=0
EXPOSE 9464
ENTRYPOINT ["/usr/bin/salve"]
CMD ["run", "--playbooks", "/usr/share/salve/playbooks", "--policy", "/usr/share/salve/policies/default.yaml", "--listen", "0.0.0.0:9464"]
LABEL org.opencontainers.image.source="https://github.com/salve-dev/salve" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.description="Salve: a declarative self-healing engine for Kubernetes"
