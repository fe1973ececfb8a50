//! `crashLoop`: a container restarting too often, or waiting in `CrashLoopBackOff`.
//!
//! From kube-state-metrics, with selector `{S}`, window `W` and a restart count `N`:
//!
//! ```text
//! restarts  = max by (namespace, pod, container) (increase(kube_pod_container_status_restarts_total{S}[W]))
//! backoff   = max by (namespace, pod, container) (kube_pod_container_status_waiting_reason{reason="CrashLoopBackOff", S})
//!
//! condition: restarts > N or (restarts and on (namespace, pod, container) backoff == 1)
//!            value: restartsInWindow
//! ```
//!
//! Input checked for presence and freshness: the restart counter.
//!
//! One restart an hour never reaches `N` within a short window; a container stuck in back-off
//! fires even when its restarts are spaced out by the growing back-off delay.

use crate::playbook::TriggerKind;
use crate::playbook::compile::defaults;
use crate::signal::{Input, SignalQueries, range, select};

const BY: &str = "by (namespace, pod, container)";

/// The queries of a `crashLoop` trigger; `None` for other kinds.
pub fn queries(kind: &TriggerKind) -> Option<SignalQueries> {
    let TriggerKind::CrashLoop {
        selector,
        restarts,
        window,
    } = kind
    else {
        return None;
    };
    let restarts_series = select("kube_pod_container_status_restarts_total", &[selector]);
    let restarts_in_window = format!("max {BY} (increase({restarts_series}[{}]))", range(*window));
    let backoff = format!(
        "max {BY} ({})",
        select(
            r#"kube_pod_container_status_waiting_reason{reason="CrashLoopBackOff"}"#,
            &[selector]
        )
    );
    Some(SignalQueries {
        condition: format!(
            "{restarts_in_window} > {restarts} or ({restarts_in_window} and on (namespace, pod, container) ({backoff} == 1))"
        ),
        value: "restartsInWindow",
        values: Vec::new(),
        inputs: vec![Input {
            name: "restarts",
            selector: restarts_series,
            by: BY.to_string(),
        }],
        stale_after: defaults::STALE_AFTER,
    })
}
