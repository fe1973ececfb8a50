//! Evaluates a trigger's condition against Prometheus at one instant.
//!
//! Every way an evaluation can fail — Prometheus unreachable, an HTTP or PromQL error, a
//! timeout, a result of the wrong type — becomes an [`Observation::Inconclusive`] with the
//! reason, never an empty (healthy-looking) result.

use std::time::Duration;

use chrono::{DateTime, Utc};
use prometheus_http_query::Client;
use prometheus_http_query::response::Data;

use super::SignalQueries;
use super::state::{LabelSet, Observation, Sample};

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
}

impl std::fmt::Debug for Evaluator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Evaluator")
            .field("url", &self.client.base_url())
            .field("timeout", &self.timeout)
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
        Ok(Evaluator { client, timeout })
    }

    /// Evaluates `queries.condition` at `at`: the series that hold, or why nothing can be
    /// concluded.
    pub async fn observe(&self, queries: &SignalQueries, at: DateTime<Utc>) -> Observation {
        match self.instant(&queries.condition, at).await {
            Ok(samples) => Observation::Holds(samples),
            Err(reason) => Observation::Inconclusive(reason),
        }
    }

    /// One instant query at `at`, as samples (labels without `__name__`).
    pub async fn instant(
        &self,
        expr: &str,
        at: DateTime<Utc>,
    ) -> std::result::Result<Vec<Sample>, String> {
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
                        .filter(|(k, _)| *k != "__name__")
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
