# syntax=docker/dockerfile:1
#
# Salve's image: `salve` and the bundled playbooks (with their WASM steps and runbooks) and
# policies, on a small non-root runtime.
#
#   docker build -t ghcr.io/salve-dev/salve:0.1.0 .
#
# Why glibc on distroless `cc` rather than a static musl binary on `static`: Salve links three C
# libraries — aws-lc (rustls' crypto, through aws-lc-sys), SQLite (rusqlite, bundled) and, via
# wasmtime, nothing C but a JIT that wants a fast allocator. All three build with the Debian
# toolchain as they do in CI; for musl they would need a musl cross C compiler, and musl's
# allocator is slow under the engine's many threads. distroless/cc-debian12 adds only glibc,
# libgcc and CA certificates (~25 MB) to the binary, and its `nonroot` user (65532) is what
# the chart runs as. The build stage is Debian 12 too, so the glibc versions match.
#
# Not built in CI (no container daemon runs there); see deploy/README.md.

ARG RUST_VERSION=1.95

FROM docker.io/library/rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
# The WASM steps are components for this target, linked by rustup's wasm-component-ld.
RUN rustup target add wasm32-unknown-unknown
COPY . .
# Cache the registry and the target directory between builds (BuildKit).
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    bash wasm-sdk/build.sh \
 && cargo build --locked --release -p salve \
 && install -D -m 0755 target/release/salve /out/usr/bin/salve \
 && mkdir -p /out/usr/share/salve /out/var/lib/salve \
 && cp -r playbooks /out/usr/share/salve/playbooks \
 && cp -r policies /out/usr/share/salve/policies \
 && rm -rf /out/usr/share/salve/playbooks/schema

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/usr /usr
COPY --from=build --chown=65532:65532 /out/var/lib/salve /var/lib/salve
USER 65532:65532
WORKDIR /var/lib/salve
ENV SALVE_JOURNAL=/var/lib/salve/journal.db \
    XDG_CACHE_HOME=/var/lib/salve/cache
EXPOSE 9464
ENTRYPOINT ["/usr/bin/salve"]
CMD ["run", "--playbooks", "/usr/share/salve/playbooks", "--policy", "/usr/share/salve/policies/default.yaml", "--listen", "0.0.0.0:9464"]
LABEL org.opencontainers.image.source="https://github.com/salve-dev/salve" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.description="Salve: a declarative self-healing engine for Kubernetes"
