#!/usr/bin/env bash
# Builds every step under wasm-sdk/examples/ into a WebAssembly component with no WASI imports,
# written to playbooks/steps/<name>.wasm. Copy it for your own steps: set STEPS_DIR (crates to
# build, one per directory) and OUT_DIR.
#
# Only rustup's own tools are needed: the wasm32-unknown-unknown target and the
# `wasm-component-ld` linker that ships with the toolchain (`--wasi-adapter=none`: the step
# imports only the salve:step capabilities it calls).
#
#   bash wasm-sdk/build.sh            # all examples
#   bash wasm-sdk/build.sh pool-decision
set -euo pipefail

sdk="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$sdk/.." && pwd)"
steps_dir="${STEPS_DIR:-$sdk/examples}"
out_dir="${OUT_DIR:-$root/playbooks/steps}"
# A target directory of its own, so the guest build never waits on the host build's lock.
target_dir="${CARGO_TARGET_DIR:-$root/target/wasm-steps}"
target=wasm32-unknown-unknown

if ! rustup target list --installed | grep -qx "$target"; then
    rustup target add "$target"
fi

if [ "$#" -gt 0 ]; then
    names=("$@")
else
    names=()
    for manifest in "$steps_dir"/*/Cargo.toml; do
        names+=("$(basename "$(dirname "$manifest")")")
    done
fi
# A component linker instead of a core-module one; small, stripped release code.
export CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_LINKER=wasm-component-ld
export CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUSTFLAGS="-C link-arg=--wasi-adapter=none"
export CARGO_PROFILE_RELEASE_OPT_LEVEL=s
export CARGO_PROFILE_RELEASE_LTO=true
export CARGO_PROFILE_RELEASE_CODEGEN_UNITS=1
export CARGO_PROFILE_RELEASE_DEBUG=false
export CARGO_PROFILE_RELEASE_STRIP=true

mkdir -p "$out_dir"
for name in "${names[@]}"; do
    # `cargo rustc --crate-type cdylib`: a step crate is also an rlib (for its tests), and cargo
    # skips LTO for a package built as both, which costs about a fifth of the size.
    (cd "$root" && cargo rustc --quiet --release --crate-type cdylib --target "$target" \
        --target-dir "$target_dir" -p "$name")
    built="$target_dir/$target/release/${name//-/_}.wasm"
    wasm="$out_dir/$name.wasm"
    cp "$built" "$wasm"
    # A component starts with `\0asm` and version 0x0d, layer 1 (a core module: 1, layer 0).
    magic="$(head -c 8 "$wasm" | od -An -tx1 | tr -d ' \n')"
    if [ "$magic" != "0061736d0d000100" ]; then
        echo "error: $wasm is not a component (header $magic)" >&2
        exit 1
    fi
    printf '%-40s %8d bytes  imports: %s\n' "${wasm#"$root"/}" "$(wc -c <"$wasm")" \
        "$(grep -aoE 'salve:step/(log|query|get|now)@[0-9.]+' "$wasm" | sort -u | tr '\n' ' ')"
done
