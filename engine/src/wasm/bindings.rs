//! Rust bindings of the `salve:step` contract (`wasm-sdk/wit/step.wit`), generated at build
//! time: the host side of world `step`.
//!
//! Every import is async (the host may do I/O: PromQL, the Kubernetes API) and trappable (a
//! capability that is not granted traps the guest). The export is called asynchronously so
//! that a guest runs on a fiber the epoch deadline can interrupt.

#![allow(missing_docs, unreachable_pub, clippy::all)]

wasmtime::component::bindgen!({
    world: "step",
    path: "../wasm-sdk/wit",
    imports: { default: async | trappable },
    exports: { default: async },
});
