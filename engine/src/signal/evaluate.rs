//! Evaluates a trigger's condition against Prometheus at one instant.
//!
//! Every way an evaluation can fail — Prometheus unreachable, an HTTP or PromQL error, a
//! timeout, a result of the wrong type, an input of a built-in signal with no series at all —
//! becomes an [`Observation::Inconclusive`] with the reason, never an empty (healthy-looking)
//! result. For built-in signals the inputs are checked alongside the condition: one small
//! summary query (how many series each input has, and only the signals whose inputs are stale),
//! then, when some signal holds or is tracked, whether those signals' inputs are still there
//! (a query naming just them). So the answers stay small however many containers a selector
//! matches, and each signal that matters is judged present and fresh, stale, or absent.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use prometheus_http_query::Client;
use prometheus_http_query::response::Data;

use super::state::{Freshness, LabelSet, Observation, Sample};
use super::{PART_LABEL, SignalQueries};

/// Why an evaluator cannot be created.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The Prometheus URL is not usable.
    #[error("invalid Prometheus URL `{url}`")]
    Url {
        /// The URL given.
        url: String,
        /// The client's reason.
        #[source]
        source: prometheus_http_query::Error,
    },
}

/// `Result` with this module's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Runs instant queries against one Prometheus.
#[derive(Clone)]
pub struct Evaluator {
    client: Client,
    timeout: Duration,
    /// A `label="value"` matcher added to every selector of every query (see [`super::scope`]),
    /// and the label dropped from the answers.
    scope: Option<(String, String)>,
    /// Matchers added to every selector of every query, their labels kept in the answers: the
    /// Salve's namespaces or node ([`crate::scope::Scope::matchers`]).
    matchers: Vec<promql_parser::label::Matcher>,
}

impl std::fmt::Debug for Evaluator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Evaluator")
            .field("url", &self.client.base_url())
            .field("timeout", &self.timeout)
            .field("scope", &self.scope)
            .field(
                "matchers",
                &self
                    .matchers
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Evaluator {
    /// An evaluator for the Prometheus at `url` (such as `http://127.0.0.1:9090`), giving up on
    /// a query after `timeout`.
    pub fn new(url: &str, timeout: Duration) -> Result<Self> {
        let client = url.parse::<Client>().map_err(|source| Error::Url {
            url: url.to_string(),
            source,
        })?;
        Ok(Evaluator {
            client,
            timeout,
            scope: None,
            matchers: Vec::new(),
        })
    }

    /// The same evaluator, asking only for series that `matchers` select: each is added to
    /// every selector of every query it runs (a trigger's, a `verify`'s, a `wait_for`'s, a WASM
    /// step's), so none can forget it. An expression that cannot be scoped is not sent: the
    /// query fails, and what asked it is inconclusive.
    pub fn restricted(mut self, matchers: Vec<promql_parser::label::Matcher>) -> Self {
        self.matchers.extend(matchers);
        self
    }

    /// The same evaluator, asking only for series labelled `label="value"`: every query it
    /// runs gets that matcher in each of its selectors.
    pub fn scoped(self, label: &str, value: &str) -> Self {
        Evaluator {
            scope: Some((label.to_string(), value.to_string())),
            ..self
        }
    }

    /// Evaluates `queries.condition` at `at`, and the freshness of its inputs: the series that
    /// hold, or why nothing can be concluded.
    pub async fn observe(&self, queries: &SignalQueries, at: DateTime<Utc>) -> Observation {
        self.observe_tracking(queries, at, &[]).await
    }

    /// [`observe`](Self::observe), also checking whether the inputs of the `tracked` signals
    /// (pending or firing ones that may have stopped holding) are still there.
    pub async fn observe_tracking(
        &self,
        queries: &SignalQueries,
        at: DateTime<Utc>,
        tracked: &[LabelSet],
    ) -> Observation {
        let (asked, later) = tracked.split_at(tracked.len().min(PRESENCE_BATCH));
        let Some(inputs_query) = queries.inputs_query(asked) else {
            return match self.instant(&queries.condition, at).await {
                Ok(samples) => Observation::Holds(samples),
                Err(reason) => Observation::Inconclusive(reason),
            };
        };
        let (holds, summary) = tokio::join!(
            self.instant(&queries.condition, at),
            self.instant(&inputs_query, at)
        );
        let holds = match holds {
            Ok(holds) => holds,
            Err(reason) => return Observation::Inconclusive(reason),
        };
        let summary = match summary {
            Ok(summary) => summary,
            Err(reason) => return Observation::Inconclusive(format!("checking inputs: {reason}")),
        };
        let Summary { stale, mut present } = match judge_summary(queries, summary) {
            Ok(summary) => summary,
            Err(reason) => return Observation::Inconclusive(reason),
        };
        // Signals the first round trip could not ask about: newly holding ones (a range
        // function can hold over inputs that are gone) and tracked ones beyond the batch.
        let asked: BTreeSet<&LabelSet> = asked.iter().collect();
        let rest: Vec<LabelSet> = holds
            .iter()
            .map(|s| &s.labels)
            .chain(later)
            .filter(|labels| !asked.contains(labels) && !stale.contains_key(*labels))
            .cloned()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        for keys in rest.chunks(PRESENCE_BATCH) {
            let Some(query) = queries.presence_query(keys) else {
                continue;
            };
            match self.instant(&query, at).await {
                Ok(samples) => {
                    for (_, labels, _) in parts(samples) {
                        *present.entry(labels).or_default() += 1;
                    }
                }
                Err(reason) => {
                    return Observation::Inconclusive(format!("checking inputs: {reason}"));
                }
            }
        }
        let all = queries.inputs.len();
        let mut inputs: BTreeMap<LabelSet, Freshness> = present
            .into_iter()
            .filter(|(_, count)| *count == all)
            .map(|(labels, _)| (labels, Freshness::Fresh))
            .collect();
        inputs.extend(
            stale
                .into_iter()
                .map(|(labels, reason)| (labels, Freshness::Stale(reason))),
        );
        Observation::Checked { holds, inputs }
    }

    /// The further values of every signal at `at`, by the signal's labels.
    pub async fn values(
        &self,
        queries: &SignalQueries,
        at: DateTime<Utc>,
    ) -> std::result::Result<BTreeMap<LabelSet, BTreeMap<String, f64>>, String> {
        let Some(query) = queries.values_query() else {
            return Ok(BTreeMap::new());
        };
        let mut values: BTreeMap<LabelSet, BTreeMap<String, f64>> = BTreeMap::new();
        for (part, labels, value) in parts(self.instant(&query, at).await?) {
            values.entry(labels).or_default().insert(part, value);
        }
        Ok(values)
    }

    /// One instant query at `at`, as samples (labels without `__name__`).
    pub async fn instant(
        &self,
        expr: &str,
        at: DateTime<Utc>,
    ) -> std::result::Result<Vec<Sample>, String> {
        let scoped;
        let expr = match &self.scope {
            None if self.matchers.is_empty() => expr,
            scope => {
                let mut matchers = self.matchers.clone();
                if let Some((label, value)) = scope {
                    matchers.push(super::scope::equal(label, value));
                }
                scoped = super::scope::scope_with(expr, &matchers)?;
                scoped.as_str()
            }
        };
        let query = self
            .client
            .query(expr)
            .at(at.timestamp())
            .timeout(i64::try_from(self.timeout.as_millis()).unwrap_or(i64::MAX))
            .get();
        let response = match tokio::time::timeout(self.timeout, query).await {
            Ok(Ok(response)) => response,
            Ok(Err(e)) => return Err(format!("prometheus query failed: {e}")),
            Err(_) => {
                return Err(format!(
                    "prometheus query timed out after {:?}",
                    self.timeout
                ));
            }
        };
        match response.data() {
            Data::Vector(series) => Ok(series
                .iter()
                .map(|s| Sample {
                    labels: s
                        .metric()
                        .iter()
                        .filter(|(k, _)| {
                            *k != "__name__" && self.scope.as_ref().is_none_or(|(l, _)| l != *k)
                        })
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect::<LabelSet>(),
                    value: s.sample().value(),
                })
                .collect()),
            Data::Scalar(_) => Err("the condition returned a scalar; expected a vector".into()),
            Data::Matrix(_) => {
                Err("the condition returned a range vector; expected a vector".into())
            }
        }
    }
}

/// Splits the series of a combined query into (part name, the series' own labels, value).
fn parts(samples: Vec<Sample>) -> impl Iterator<Item = (String, LabelSet, f64)> {
    samples.into_iter().filter_map(|mut sample| {
        let part = sample.labels.remove(PART_LABEL)?;
        Some((part, sample.labels, sample.value))
    })
}

/// How many signals one presence query asks about (the query grows with each).
const PRESENCE_BATCH: usize = 50;

/// What the inputs summary says about the signals.
struct Summary {
    /// Signals whose inputs are stale, with why.
    stale: BTreeMap<LabelSet, String>,
    /// Signals asked about, with how many of their inputs are present.
    present: BTreeMap<LabelSet, usize>,
}

/// Reads the inputs summary: every input must have series; which signals' inputs are stale,
/// and how many inputs the signals asked about have.
fn judge_summary(
    queries: &SignalQueries,
    summary: Vec<Sample>,
) -> std::result::Result<Summary, String> {
    let mut counted = BTreeSet::new();
    let mut stale: BTreeMap<LabelSet, String> = BTreeMap::new();
    let mut present: BTreeMap<LabelSet, usize> = BTreeMap::new();
    for (part, labels, _) in parts(summary) {
        if let Some(input) = part.strip_prefix("count:") {
            counted.insert(input.to_string());
        } else if let Some(input) = part.strip_prefix("stale:") {
            stale.entry(labels).or_insert_with(|| {
                format!(
                    "the newest `{input}` sample is older than staleAfter ({}s)",
                    queries.stale_after.as_secs()
                )
            });
        } else {
            *present.entry(labels).or_default() += 1;
        }
    }
    if let Some(input) = queries.inputs.iter().find(|i| !counted.contains(i.name)) {
        return Err(format!(
            "input `{}` has no series: `{}` matches nothing",
            input.name, input.selector
        ));
    }
    Ok(Summary { stale, present })
}
