//! Built-in signal kinds: the PromQL each one asks Prometheus, written out so that an SRE can
//! read, paste and check it.
//!
//! Every built-in kind becomes a [`SignalQueries`]: a `condition` whose result series are the
//! signals that hold right now (with alerting-rule semantics, an empty result means "nothing
//! holds", never "healthy by accident": missing inputs are the evaluator's concern), and named
//! `values` queries, aggregated by the same labels, that give each signal its numbers.
//!
//! | kind | condition |
//! |---|---|
//! | `memoryLeak` | `(limit - working set) / deriv(working set[window]) < horizon`, growth above the minimum |
//! | `latency` | `histogram_quantile(q, sum by (le, by...) (rate(metric_bucket[window]))) > threshold` |
//! | `crashLoop` | `increase(restarts[window]) > restarts`, or waiting in `CrashLoopBackOff` |
//! | `errorRate` | `sum by (by...) (rate(errors[window])) / sum by (by...) (rate(total[window])) > ratio` |
//!
//! `event` triggers read the Kubernetes API instead: see [`kube_event`].

pub mod crash_loop;
pub mod error_rate;
pub mod evaluate;
pub mod evaluation;
pub mod kube_event;
pub mod latency;
pub mod live;
pub mod memory_leak;
pub mod scope;
pub mod state;

use std::time::Duration;

use crate::playbook::{Trigger, TriggerKind};
use state::LabelSet;

/// What one trigger asks Prometheus at each evaluation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignalQueries {
    /// Returns one series per signal that holds now; its value is the signal's main value.
    pub condition: String,
    /// The name of the condition's value (`secondsToOOM`, `ratio`, ...).
    pub value: &'static str,
    /// Further values of each signal, by name, matched to the condition's series by labels.
    /// Asked only when a signal is pending or firing.
    pub values: Vec<(&'static str, String)>,
    /// The series the condition reads, checked at every evaluation so that a signal whose
    /// inputs are stale or gone is inconclusive rather than resolved. Empty for `promql`
    /// triggers, whose inputs Salve cannot match to the result's series.
    pub inputs: Vec<Input>,
    /// An input whose newest sample is older than this is stale.
    pub stale_after: Duration,
}

/// One input series of a built-in signal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Input {
    /// A name for messages (`workingSet`, `limit`, ...).
    pub name: &'static str,
    /// Its vector selector.
    pub selector: String,
    /// The aggregation that matches its series to the condition's (`by (namespace, pod)`).
    pub by: String,
}

/// The label that names the input or value a series of a combined query belongs to.
pub const PART_LABEL: &str = "salve_part";

impl SignalQueries {
    /// A bare condition (a `promql` trigger's): its value is called `value`, no inputs are
    /// checked and no further values asked.
    pub fn new(condition: impl Into<String>) -> Self {
        SignalQueries {
            condition: condition.into(),
            value: "value",
            values: Vec::new(),
            inputs: Vec::new(),
            stale_after: crate::playbook::compile::defaults::STALE_AFTER,
        }
    }

    /// One small query about the inputs as a whole: how many series each has
    /// (`count:<input>`, none when it has no series at all) and which signals' inputs are
    /// stale (`stale:<input>`, the age in seconds of the newest sample, only when older than
    /// `stale_after`); with the presence of the `tracked` signals' inputs (see
    /// [`presence_query`](Self::presence_query)) in the same round trip. `None` without inputs.
    /// Fresh inputs, the usual case, return nothing per signal, so the answer stays small
    /// however many containers a selector matches.
    pub fn inputs_query(&self, tracked: &[LabelSet]) -> Option<String> {
        let stale = self.stale_after.as_secs();
        let summary = combine(self.inputs.iter().flat_map(|input| {
            let count = format!("count({})", input.selector);
            let old = format!(
                "min {} (time() - timestamp({})) > {stale}",
                input.by, input.selector
            );
            [
                (format!("count:{}", input.name), count),
                (format!("stale:{}", input.name), old),
            ]
        }))?;
        Some(match self.presence_query(tracked) {
            Some(presence) => format!("{summary} or {presence}"),
            None => summary,
        })
    }

    /// One query for whether the inputs of the signals `keys` (label sets, as the condition's
    /// series carry them) are there now: a series per key and input present (part =
    /// `<input>`); `None` without inputs or keys.
    pub fn presence_query(&self, keys: &[LabelSet]) -> Option<String> {
        combine(self.inputs.iter().flat_map(|input| {
            keys.iter().map(move |key| {
                let matchers: Vec<String> = key
                    .iter()
                    .map(|(k, v)| format!("{k}={}", quote(v)))
                    .collect();
                let selector = select(&input.selector, &[&format!("{{{}}}", matchers.join(", "))]);
                (
                    input.name.to_string(),
                    format!("group {} ({selector})", input.by),
                )
            })
        }))
    }

    /// One query for every further value, each series labelled with [`PART_LABEL`] = the
    /// value's name; `None` without values.
    pub fn values_query(&self) -> Option<String> {
        combine(
            self.values
                .iter()
                .map(|(name, expr)| ((*name).to_string(), expr.clone())),
        )
    }
}

/// `label_replace(a, PART, "name", "", "") or ...`: one round trip for several queries whose
/// series carry the same labels.
fn combine(parts: impl Iterator<Item = (String, String)>) -> Option<String> {
    let parts: Vec<String> = parts
        .map(|(name, expr)| format!(r#"label_replace({expr}, "{PART_LABEL}", "{name}", "", "")"#))
        .collect();
    (!parts.is_empty()).then(|| parts.join(" or "))
}

/// A PromQL string literal (JSON's escaping is a subset PromQL reads).
pub fn quote(value: &str) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "\"\"".to_string())
}

/// The queries of `kind`, or `None` for kinds that are not evaluated against Prometheus
/// (events, schedules, alerts). Inputs are stale after the default time; see [`for_trigger`].
pub fn queries(kind: &TriggerKind) -> Option<SignalQueries> {
    match kind {
        TriggerKind::Promql { expr } => Some(SignalQueries::new(expr.as_str())),
        TriggerKind::MemoryLeak { .. } => memory_leak::queries(kind),
        TriggerKind::Latency { .. } => latency::queries(kind),
        TriggerKind::CrashLoop { .. } => crash_loop::queries(kind),
        TriggerKind::ErrorRate { .. } => error_rate::queries(kind),
        TriggerKind::Event { .. } | TriggerKind::Schedule { .. } | TriggerKind::Alert { .. } => {
            None
        }
    }
}

/// The queries of `trigger`, with its own `staleAfter`.
pub fn for_trigger(trigger: &Trigger) -> Option<SignalQueries> {
    queries(&trigger.kind).map(|q| SignalQueries {
        stale_after: trigger.stale_after,
        ..q
    })
}

/// A vector selector: `metric` (a name, optionally with `{matchers}`) with the matchers of
/// every `selectors` entry (`{a="b"}` texts, possibly empty) added.
///
/// The inputs were parsed when the playbook compiled, so joining their matcher lists as text
/// is exact.
pub fn select(metric: &str, selectors: &[&str]) -> String {
    let (name, own) = match metric.find('{') {
        Some(open) => (&metric[..open], inner(&metric[open..])),
        None => (metric, ""),
    };
    let matchers: Vec<&str> = std::iter::once(own)
        .chain(selectors.iter().map(|s| inner(s)))
        .map(str::trim)
        .filter(|m| !m.is_empty())
        .collect();
    if matchers.is_empty() {
        name.trim().to_string()
    } else {
        format!("{}{{{}}}", name.trim(), matchers.join(", "))
    }
}

/// The matchers inside `{...}`, without the braces.
fn inner(selector: &str) -> &str {
    let selector = selector.trim();
    selector
        .strip_prefix('{')
        .and_then(|s| s.strip_suffix('}'))
        .unwrap_or(selector)
        .trim()
        .trim_end_matches(',')
}

/// A duration as PromQL writes it, in whole seconds (`300s`), or milliseconds when shorter.
pub fn range(duration: Duration) -> String {
    if duration.subsec_millis() == 0 {
        format!("{}s", duration.as_secs())
    } else {
        format!("{}ms", duration.as_millis())
    }
}

/// `by (a, b)` for an aggregation.
pub fn by(labels: &[String]) -> String {
    format!("by ({})", labels.join(", "))
}

/// A number as PromQL writes it (no exponent surprises for whole numbers).
pub fn number(value: f64) -> String {
    if value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{value:.0}")
    } else {
        format!("{value}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_merge_into_one_matcher_list() {
        assert_eq!(select("up", &[]), "up");
        assert_eq!(select("up", &["", "{}"]), "up");
        assert_eq!(
            select(
                r#"kube_pod_container_resource_limits{resource="memory"}"#,
                &[r#"{namespace="prod"}"#]
            ),
            r#"kube_pod_container_resource_limits{resource="memory", namespace="prod"}"#
        );
        assert_eq!(
            select(
                "http_requests_total",
                &[r#"{service="a", }"#, r#"{code=~"5.."}"#]
            ),
            r#"http_requests_total{service="a", code=~"5.."}"#
        );
        assert_eq!(select("x", &[r#"{pod=~"a{1,3}"}"#]), r#"x{pod=~"a{1,3}"}"#);
    }

    #[test]
    fn ranges_and_numbers_read_like_promql() {
        assert_eq!(range(Duration::from_secs(1800)), "1800s");
        assert_eq!(range(Duration::from_millis(1500)), "1500ms");
        assert_eq!(number(5.0), "5");
        assert_eq!(number(0.05), "0.05");
    }

    #[test]
    fn every_generated_query_parses() {
        use crate::playbook::load::load_paths;
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../playbooks");
        let loaded = load_paths(&[root]);
        assert!(!loaded.has_errors(), "{:?}", loaded.diagnostics);
        let mut checked = 0;
        for playbook in &loaded.playbooks {
            let Some(q) = queries(&playbook.trigger.kind) else {
                continue;
            };
            let key = LabelSet::from([("pod".to_string(), "a\\b\"c".to_string())]);
            let combined = [q.inputs_query(&[key]), q.values_query()];
            for expr in std::iter::once(&q.condition).chain(combined.iter().flatten()) {
                promql_parser::parser::parse(expr)
                    .unwrap_or_else(|e| panic!("{}: {expr}: {e}", playbook.name));
                checked += 1;
            }
        }
        assert!(checked >= 8, "only {checked} queries checked");
    }
}
