//! `latency`: a latency quantile computed from a Prometheus histogram, above a threshold.
//!
//! For the histogram `M` (default `http_request_duration_seconds`), selector `{S}`, quantile
//! `Q`, window `W`, aggregation labels `L` (default `namespace, service`) and threshold `T`
//! seconds:
//!
//! ```text
//! condition: histogram_quantile(Q, sum by (le, L) (rate(M_bucket{S}[W]))) > T
//!            value: quantileSeconds
//! ```
//!
//! Input checked for presence and freshness: the buckets, per `L`.
//!
//! `rate` over `W` smooths single slow requests; `for` on the trigger decides how long the
//! breach must last. With no traffic in the window the quantile is NaN, which is never above
//! the threshold (and which the evaluator treats as inconclusive, not healthy).

use crate::playbook::TriggerKind;
use crate::playbook::compile::defaults;
use crate::signal::{Input, SignalQueries, number, range, select};

/// The queries of a `latency` trigger; `None` for other kinds.
pub fn queries(kind: &TriggerKind) -> Option<SignalQueries> {
    let TriggerKind::Latency {
        selector,
        metric,
        quantile,
        threshold,
        window,
        by,
    } = kind
    else {
        return None;
    };
    let (name, matchers) = match metric.find('{') {
        Some(open) => (&metric[..open], &metric[open..]),
        None => (metric.as_str(), ""),
    };
    let buckets = select(&format!("{name}_bucket{matchers}"), &[selector]);
    let mut labels = vec!["le".to_string()];
    labels.extend(by.iter().cloned());
    let quantile_expr = format!(
        "histogram_quantile({}, sum by ({}) (rate({buckets}[{}])))",
        number(*quantile),
        labels.join(", "),
        range(*window)
    );
    Some(SignalQueries {
        condition: format!("{quantile_expr} > {}", number(threshold.as_secs_f64())),
        value: "quantileSeconds",
        values: Vec::new(),
        inputs: vec![Input {
            name: "buckets",
            selector: buckets,
            by: crate::signal::by(by),
        }],
        stale_after: defaults::STALE_AFTER,
    })
}
