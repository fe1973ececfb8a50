//! What a step may ask the host: the [`Host`] trait, the real one for a built guest and a
//! [`FakeHost`] with recorded answers for native unit tests.

use std::cell::RefCell;
use std::collections::BTreeMap;

use serde_json::Value;

/// How important a log line is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// Detail for whoever debugs the step.
    Debug,
    /// What the step saw and decided.
    Info,
    /// Something odd the step worked around.
    Warn,
    /// Something that went wrong.
    Error,
}

/// One sample of a PromQL instant vector.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Sample {
    /// The series' labels.
    pub labels: BTreeMap<String, String>,
    /// Its value now.
    pub value: f64,
}

impl Sample {
    /// A sample with no labels.
    pub fn new(value: f64) -> Self {
        Self {
            labels: BTreeMap::new(),
            value,
        }
    }

    /// With one more label.
    #[must_use]
    pub fn with_label(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.insert(name.into(), value.into());
        self
    }
}

/// The capabilities a step may use, each granted (linked) by the playbook: `log`, `query`,
/// `get` and `now`.
///
/// A step takes `&impl Host` (or `&dyn Host`) instead of calling the raw imports, so the same
/// function runs against the real host in the built component and against a [`FakeHost`] in a
/// native unit test (the raw imports cannot be called outside WebAssembly).
pub trait Host {
    /// Writes a line to the incident's journal and Salve's log.
    fn log(&self, level: Level, message: &str);

    /// Runs a PromQL instant query now; an error says why (capability refused, rate limit
    /// reached, Prometheus down, bad expression).
    fn query(&self, promql: &str) -> Result<Vec<Sample>, String>;

    /// Reads one Kubernetes object (of a kind and namespace the playbook allows) as JSON.
    fn get(&self, kind: &str, namespace: Option<&str>, name: &str) -> Result<Value, String>;

    /// The time now, in Unix milliseconds (there is no other clock in the sandbox).
    fn now(&self) -> i64;

    /// Logs at [`Level::Debug`].
    fn debug(&self, message: &str) {
        self.log(Level::Debug, message);
    }

    /// Logs at [`Level::Info`].
    fn info(&self, message: &str) {
        self.log(Level::Info, message);
    }

    /// Logs at [`Level::Warn`].
    fn warn(&self, message: &str) {
        self.log(Level::Warn, message);
    }

    /// Runs a query expected to give one number: `Ok(None)` when it gives no sample or a NaN
    /// (no traffic: `histogram_quantile` of nothing), an error when it gives several series
    /// (aggregate them in the expression, e.g. `max(...)`) or when the query fails.
    fn query_value(&self, promql: &str) -> Result<Option<f64>, String> {
        let samples = self.query(promql)?;
        match samples.as_slice() {
            [] => Ok(None),
            [sample] if sample.value.is_nan() => Ok(None),
            [sample] => Ok(Some(sample.value)),
            several => Err(format!(
                "`{promql}` gave {} series where one was expected: aggregate it",
                several.len()
            )),
        }
    }
}

/// A [`Host`] for native unit tests: recorded answers for queries and objects, a fixed clock,
/// and the lines the step logged.
///
/// A query or object with no recorded answer is an error, as an unknown object or a refused
/// query would be for the real host.
///
/// ```
/// use salve_step::{FakeHost, Host, Sample};
///
/// let host = FakeHost::new()
///     .with_query("up", vec![Sample::new(1.0)])
///     .with_now(1_700_000_000_000);
/// assert_eq!(host.query_value("up"), Ok(Some(1.0)));
/// assert!(host.query("down").is_err());
/// assert_eq!(host.queries(), ["up", "down"]);
/// ```
#[derive(Debug, Default)]
pub struct FakeHost {
    answers: BTreeMap<String, Result<Vec<Sample>, String>>,
    objects: BTreeMap<(String, Option<String>, String), Result<Value, String>>,
    now: i64,
    logs: RefCell<Vec<(Level, String)>>,
    queries: RefCell<Vec<String>>,
}

impl FakeHost {
    /// A host that knows nothing, at the Unix epoch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Answers `promql` with these samples (an empty list: no data).
    #[must_use]
    pub fn with_query(mut self, promql: impl Into<String>, samples: Vec<Sample>) -> Self {
        self.answers.insert(promql.into(), Ok(samples));
        self
    }

    /// Answers `promql` with one unlabelled sample.
    #[must_use]
    pub fn with_query_value(self, promql: impl Into<String>, value: f64) -> Self {
        self.with_query(promql, vec![Sample::new(value)])
    }

    /// Fails `promql` with this error (Prometheus down, limit reached, ...).
    #[must_use]
    pub fn with_query_error(mut self, promql: impl Into<String>, error: impl Into<String>) -> Self {
        self.answers.insert(promql.into(), Err(error.into()));
        self
    }

    /// Answers a `get` of this object with this JSON.
    #[must_use]
    pub fn with_object(
        mut self,
        kind: impl Into<String>,
        namespace: Option<&str>,
        name: impl Into<String>,
        object: Value,
    ) -> Self {
        let key = (kind.into(), namespace.map(str::to_string), name.into());
        self.objects.insert(key, Ok(object));
        self
    }

    /// Sets the time the host reports, in Unix milliseconds.
    #[must_use]
    pub fn with_now(mut self, unix_ms: i64) -> Self {
        self.now = unix_ms;
        self
    }

    /// The lines logged so far, in order.
    pub fn logs(&self) -> Vec<(Level, String)> {
        self.logs.borrow().clone()
    }

    /// The queries run so far, in order.
    pub fn queries(&self) -> Vec<String> {
        self.queries.borrow().clone()
    }
}

impl Host for FakeHost {
    fn log(&self, level: Level, message: &str) {
        self.logs.borrow_mut().push((level, message.to_string()));
    }

    fn query(&self, promql: &str) -> Result<Vec<Sample>, String> {
        self.queries.borrow_mut().push(promql.to_string());
        self.answers
            .get(promql)
            .cloned()
            .unwrap_or_else(|| Err(format!("fake host: no answer recorded for `{promql}`")))
    }

    fn get(&self, kind: &str, namespace: Option<&str>, name: &str) -> Result<Value, String> {
        let key = (
            kind.to_string(),
            namespace.map(str::to_string),
            name.to_string(),
        );
        self.objects.get(&key).cloned().unwrap_or_else(|| {
            Err(format!(
                "fake host: no {kind} {}{name} recorded",
                namespace.map(|ns| format!("{ns}/")).unwrap_or_default()
            ))
        })
    }

    fn now(&self) -> i64 {
        self.now
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn fake_host_answers_what_was_recorded() {
        let host = FakeHost::new()
            .with_query_value("a", 2.0)
            .with_query("none", vec![])
            .with_query_value("nan", f64::NAN)
            .with_query("two", vec![Sample::new(1.0), Sample::new(2.0)])
            .with_query_error("down", "prometheus is down")
            .with_object("Deployment", Some("prod"), "api", json!({"spec": {}}))
            .with_now(42);
        assert_eq!(host.query_value("a"), Ok(Some(2.0)));
        assert_eq!(host.query_value("none"), Ok(None));
        assert_eq!(host.query_value("nan"), Ok(None));
        assert!(host.query_value("two").is_err());
        assert_eq!(host.query("down"), Err("prometheus is down".into()));
        assert!(host.query("unknown").is_err());
        assert_eq!(
            host.get("Deployment", Some("prod"), "api"),
            Ok(json!({"spec": {}}))
        );
        assert!(host.get("Deployment", None, "api").is_err());
        assert_eq!(host.now(), 42);
        assert_eq!(
            host.queries(),
            ["a", "none", "nan", "two", "down", "unknown"]
        );
    }

    #[test]
    fn fake_host_records_logs_through_a_trait_object() {
        let host = FakeHost::new();
        let dyn_host: &dyn Host = &host;
        dyn_host.info("looked");
        dyn_host.log(Level::Error, "failed");
        assert_eq!(
            host.logs(),
            [
                (Level::Info, "looked".into()),
                (Level::Error, "failed".into())
            ]
        );
    }
}
