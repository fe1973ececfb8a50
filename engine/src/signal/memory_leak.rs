//! `memoryLeak`: a container's working set projected to reach its memory limit within
//! `horizon`, from the least-squares trend (`deriv`) over `window`.
//!
//! With the defaults (cAdvisor's working set, kube-state-metrics' limit), a selector `{S}`,
//! window `W`, horizon `H` seconds and a minimum growth `G` bytes per second:
//!
//! ```text
//! usage    = max by (namespace, pod, container) (container_memory_working_set_bytes{container!="", container!="POD", S})
//! limit    = max by (namespace, pod, container) (kube_pod_container_resource_limits{resource="memory", S})
//! growth   = max by (namespace, pod, container) (deriv(container_memory_working_set_bytes{container!="", container!="POD", S}[W]))
//!
//! condition: (limit - usage) / (growth > G) < H          value: secondsToOOM
//! ```
//!
//! Values carried by each signal: `secondsToOOM`, `growthMiBPerMinute` (growth × 60 / 2²⁰),
//! `percentOfLimit` (100 × usage / limit), `workingSetBytes` and `limitBytes`. Inputs checked
//! for presence and freshness: the working set and the limit.
//!
//! `deriv` fits a line through every sample of the window, so a garbage collector's sawtooth
//! whose peaks do not rise has a slope near zero and a projected OOM far away: it does not fire.
//! A container without a limit has no `limit` series and never matches.

use crate::playbook::TriggerKind;
use crate::playbook::compile::defaults;
use crate::signal::{Input, SignalQueries, number, range, select};

const BY: &str = "by (namespace, pod, container)";
const BYTES_PER_MIB: f64 = 1024.0 * 1024.0;

/// The queries of a `memoryLeak` trigger; `None` for other kinds.
pub fn queries(kind: &TriggerKind) -> Option<SignalQueries> {
    let TriggerKind::MemoryLeak {
        selector,
        window,
        horizon,
        min_growth_mib_per_minute,
        usage_metric,
        limit_metric,
    } = kind
    else {
        return None;
    };
    // cAdvisor also reports the pod's own cgroup (no container) and the pause container.
    let real_containers = if usage_metric == defaults::USAGE_METRIC {
        r#"{container!="", container!="POD"}"#
    } else {
        ""
    };
    let usage_series = select(usage_metric, &[real_containers, selector]);
    let usage = format!("max {BY} ({usage_series})");
    let limit_series = select(limit_metric, &[selector]);
    let limit = format!("max {BY} ({limit_series})");
    let growth = format!("max {BY} (deriv({usage_series}[{}]))", range(*window));
    let min_growth = min_growth_mib_per_minute * BYTES_PER_MIB / 60.0;
    let condition = format!(
        "({limit} - {usage}) / ({growth} > {}) < {}",
        number(min_growth),
        horizon.as_secs()
    );
    Some(SignalQueries {
        condition,
        value: "secondsToOOM",
        inputs: vec![
            Input {
                name: "workingSet",
                selector: usage_series,
                by: BY.to_string(),
            },
            Input {
                name: "limit",
                selector: limit_series,
                by: BY.to_string(),
            },
        ],
        stale_after: defaults::STALE_AFTER,
        values: vec![
            (
                "growthMiBPerMinute",
                format!("{growth} * 60 / {}", number(BYTES_PER_MIB)),
            ),
            ("percentOfLimit", format!("100 * {usage} / {limit}")),
            ("workingSetBytes", usage),
            ("limitBytes", limit),
        ],
    })
}
