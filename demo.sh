#!/usr/bin/env bash
# Salve's demo — the README's run command: installs Prometheus (Debian's package) when it is
# missing, then runs `salve demo`: a memory leak after a deploy, detected, diagnosed, planned,
# gated, rolled back and verified, against a real Prometheus and an in-process sandbox
# Kubernetes API. No cluster needed. Arguments go to `salve demo` (try --help).
set -euo pipefail
cd "$(dirname "$0")"
if ! command -v prometheus >/dev/null; then
    echo "salve demo needs Prometheus; installing Debian's prometheus package..." >&2
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus
fi
# The bundled playbooks run WASM steps built from wasm-sdk/examples: build those missing or
# older than their sources (rustup's wasm32-unknown-unknown target is added if needed).
stale=()
for dir in wasm-sdk/examples/*/; do
    name="$(basename "$dir")"
    wasm="playbooks/steps/$name.wasm"
    if [ ! -f "$wasm" ] || [ -n "$(find "$dir" wasm-sdk/src wasm-sdk/wit -newer "$wasm" -type f -print -quit)" ]; then
        stale+=("$name")
    fi
done
if [ "${#stale[@]}" -gt 0 ]; then
    echo "building the WASM steps the bundled playbooks use: ${stale[*]}..." >&2
    bash wasm-sdk/build.sh "${stale[@]}" >&2
fi
exec cargo run -q -p salve -- demo "$@"
