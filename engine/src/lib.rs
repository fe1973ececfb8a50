//! Salve: a declarative self-healing engine for Kubernetes.
//!
//! Playbooks (YAML, kept in Git) say what to watch for and how to heal it; an autonomy policy
//! says how far Salve may act without a human. This crate loads and validates both
//! ([`playbook::load`]), keeps the active set hot-reloaded ([`playbook::watch`]), and will grow
//! the rest of the pipeline described in the design notes: signals, incidents, plans, the risk
//! gate, executors and the journal.

pub mod action;
pub mod actions;
pub mod advisor;
pub mod alertmanager;
pub mod api;
pub mod app;
pub mod approval;
pub mod check;
pub mod cli;
pub mod clock;
pub mod condition;
pub mod correlate;
pub mod crd;
pub mod demo;
pub mod diagnostic;
pub mod executor;
pub mod gate;
pub mod incident;
pub mod journal;
pub mod kube_fake;
pub mod lease;
pub mod metrics;
pub mod plan;
pub mod playbook;
pub mod policy;
mod process;
pub mod prometheus;
pub mod rbac;
pub mod risk;
pub mod schema;
pub mod scope;
pub mod series;
pub mod signal;
pub mod state;
pub mod telemetry;
pub mod template;
pub mod testing;
pub mod wasm;
pub mod yaml;
