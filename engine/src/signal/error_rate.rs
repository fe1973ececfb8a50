//! `errorRate`: the share of failed requests above a ratio.
//!
//! For the counter `M` (default `http_requests_total`), selector `{S}`, failed-request
//! matchers `{E}` (default `{code=~"5.."}`), window `W`, labels `L` (default
//! `namespace, service`) and ratio `R`:
//!
//! ```text
//! errors = sum by (L) (rate(M{S, E}[W]))
//! total  = sum by (L) (rate(M{S}[W]))
//!
//! condition: errors / total > R          value: ratio
//! ```
//!
//! Values carried: `ratio`, `errorsPerSecond`, `requestsPerSecond`. Input checked for
//! presence and freshness: the request counter, per `L` (an absent error series is no
//! errors, not missing data).
//!
//! A service with no failed requests has no `errors` series and does not match; one with no
//! traffic has a zero `total`, a NaN ratio, and does not fire either.

use crate::playbook::TriggerKind;
use crate::playbook::compile::defaults;
use crate::signal::{Input, SignalQueries, by, number, range, select};

/// The queries of an `errorRate` trigger; `None` for other kinds.
pub fn queries(kind: &TriggerKind) -> Option<SignalQueries> {
    let TriggerKind::ErrorRate {
        selector,
        metric,
        error_selector,
        ratio,
        window,
        by: labels,
    } = kind
    else {
        return None;
    };
    let window = range(*window);
    let by = by(labels);
    let errors = format!(
        "sum {by} (rate({}[{window}]))",
        select(metric, &[selector, error_selector])
    );
    let requests = select(metric, &[selector]);
    let total = format!("sum {by} (rate({requests}[{window}]))");
    let ratio_expr = format!("{errors} / {total}");
    Some(SignalQueries {
        condition: format!("{ratio_expr} > {}", number(*ratio)),
        value: "ratio",
        values: vec![("errorsPerSecond", errors), ("requestsPerSecond", total)],
        inputs: vec![Input {
            name: "requests",
            selector: requests,
            by,
        }],
        stale_after: defaults::STALE_AFTER,
    })
}
