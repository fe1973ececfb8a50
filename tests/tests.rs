//! Salve's integration tests: one binary, one module per area.
//!
//! Every test here drives real components: the real `salve` binary, the real file system
//! (with real inotify events for hot reload), and a real Prometheus (Debian's package) serving
//! backfilled scenarios.

mod actions;
mod alertmanager;
mod demo;
mod events;
mod journal;
mod kube_fake;
mod prometheus;
mod reload;
mod remediation;
mod signals;
mod validate;
mod wasm;
