//! What a step is told: the incident's [`Context`], its [`Signal`]s and its [`Target`].

use std::collections::BTreeMap;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::Value;

/// Everything a step is told about the incident it is asked about.
///
/// Built by the SDK from the host's `context` record; tests build one with the `with_*`
/// methods.
#[derive(Clone, Debug, PartialEq)]
pub struct Context {
    /// The incident's id.
    pub incident: String,
    /// The playbook's name.
    pub playbook: String,
    /// The step's name in the playbook.
    pub step: String,
    /// The incident's firing signals, the root cause first.
    pub signals: Vec<Signal>,
    /// The target object.
    pub target: Target,
    /// The step's `config` from the playbook (`{}` when it has none).
    pub config: Value,
    /// The outputs of the steps that ran before this one, in order.
    pub outputs: Vec<StepOutput>,
}

impl Default for Context {
    fn default() -> Self {
        Self {
            incident: String::new(),
            playbook: String::new(),
            step: String::new(),
            signals: Vec::new(),
            target: Target::default(),
            config: Value::Object(serde_json::Map::new()),
            outputs: Vec::new(),
        }
    }
}

impl Context {
    /// The root cause: the first signal, if any.
    pub fn root_signal(&self) -> Option<&Signal> {
        self.signals.first()
    }

    /// The step's `config`, deserialized. Give the type `#[serde(default)]` fields so a
    /// playbook can leave them out, and `deny_unknown_fields` so a typo is an error, not a
    /// silently ignored setting.
    pub fn config<T: DeserializeOwned>(&self) -> Result<T, String> {
        T::deserialize(&self.config)
            .map_err(|e| format!("invalid config of step `{}`: {e}", self.step))
    }

    /// What an earlier step gave (`status`, `changed` and its outputs), if it ran.
    pub fn output_of(&self, step: &str) -> Option<&Value> {
        self.outputs
            .iter()
            .find(|o| o.step == step)
            .map(|o| &o.output)
    }

    /// With one more signal (the first one added is the root cause).
    #[must_use]
    pub fn with_signal(mut self, signal: Signal) -> Self {
        self.signals.push(signal);
        self
    }

    /// With this target.
    #[must_use]
    pub fn with_target(mut self, target: Target) -> Self {
        self.target = target;
        self
    }

    /// With this `config`.
    #[must_use]
    pub fn with_config(mut self, config: Value) -> Self {
        self.config = config;
        self
    }

    /// With the output of an earlier step.
    #[must_use]
    pub fn with_output(mut self, step: impl Into<String>, output: Value) -> Self {
        self.outputs.push(StepOutput {
            step: step.into(),
            output,
        });
        self
    }
}

/// What an earlier step of the plan gave.
#[derive(Clone, Debug, PartialEq)]
pub struct StepOutput {
    /// The step's name.
    pub step: String,
    /// Its output: `status`, `changed`, and its outputs.
    pub output: Value,
}

/// One firing signal of the incident.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Signal {
    /// Its labels (`namespace`, `pod`, ...).
    pub labels: BTreeMap<String, String>,
    /// Its main value, when it has one.
    pub value: Option<f64>,
    /// Its other named values (`secondsToOOM`, `growthMiBPerMinute`, ...).
    pub values: BTreeMap<String, f64>,
    /// When it started to hold, in Unix milliseconds, when known.
    pub active_since_ms: Option<i64>,
}

impl Signal {
    /// A signal with this main value.
    pub fn new(value: Option<f64>) -> Self {
        Self {
            value,
            ..Self::default()
        }
    }

    /// A named value, if the signal has it and it is a finite number (a NaN or an infinity
    /// counts as unknown, so a step fails safe on it).
    pub fn value_named(&self, name: &str) -> Option<f64> {
        self.values.get(name).copied().filter(|v| v.is_finite())
    }

    /// A label's value.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels.get(name).map(String::as_str)
    }

    /// How long it has held at `now_ms` (from [`Host::now`](crate::Host::now)), when known.
    pub fn active_for(&self, now_ms: i64) -> Option<Duration> {
        let since = self.active_since_ms?;
        u64::try_from(now_ms.checked_sub(since)?)
            .ok()
            .map(Duration::from_millis)
    }

    /// With one more named value.
    #[must_use]
    pub fn with_value(mut self, name: impl Into<String>, value: f64) -> Self {
        self.values.insert(name.into(), value);
        self
    }

    /// With one more label.
    #[must_use]
    pub fn with_label(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.insert(name.into(), value.into());
        self
    }
}

/// What is known of the target object; every field but its kind and name may be unknown.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Target {
    /// `Deployment`, `StatefulSet`, `Pod`, `Node`, ...
    pub kind: String,
    /// Its name.
    pub name: String,
    /// Its namespace (none for a cluster-scoped object).
    pub namespace: Option<String>,
    /// Its rollout revision.
    pub revision: Option<i64>,
    /// How long ago its current revision rolled out, in seconds.
    pub revision_age_seconds: Option<f64>,
    /// Desired replicas.
    pub replicas: Option<i64>,
    /// Ready replicas.
    pub ready_replicas: Option<i64>,
    /// Its node (for a Pod).
    pub node: Option<String>,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Its annotations.
    pub annotations: BTreeMap<String, String>,
}

impl Target {
    /// A target of this kind, namespace and name.
    pub fn new(kind: impl Into<String>, namespace: Option<&str>, name: impl Into<String>) -> Self {
        Self {
            kind: kind.into(),
            name: name.into(),
            namespace: namespace.map(str::to_string),
            ..Self::default()
        }
    }

    /// How long ago its current revision rolled out, when known (a negative or non-finite age
    /// counts as unknown).
    pub fn revision_age(&self) -> Option<Duration> {
        self.revision_age_seconds
            .filter(|s| s.is_finite() && *s >= 0.0)
            .and_then(|s| Duration::try_from_secs_f64(s).ok())
    }

    /// A label's value.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels.get(name).map(String::as_str)
    }

    /// An annotation's value.
    pub fn annotation(&self, name: &str) -> Option<&str> {
        self.annotations.get(name).map(String::as_str)
    }

    /// With this revision age.
    #[must_use]
    pub fn with_revision_age(mut self, age: Duration) -> Self {
        self.revision_age_seconds = Some(age.as_secs_f64());
        self
    }

    /// With these desired and ready replicas.
    #[must_use]
    pub fn with_replicas(mut self, replicas: i64, ready: i64) -> Self {
        self.replicas = Some(replicas);
        self.ready_replicas = Some(ready);
        self
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;
    use serde_json::json;

    use super::*;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(default, deny_unknown_fields, rename_all = "camelCase")]
    struct Config {
        max_replicas: i64,
    }

    impl Default for Config {
        fn default() -> Self {
            Self { max_replicas: 3 }
        }
    }

    #[test]
    fn config_deserializes_with_defaults_and_names_the_step_on_error() {
        let ctx = Context {
            step: "decide".into(),
            ..Context::default()
        };
        assert_eq!(ctx.config::<Config>(), Ok(Config { max_replicas: 3 }));
        let ctx = ctx.with_config(json!({"maxReplicas": 5}));
        assert_eq!(ctx.config::<Config>(), Ok(Config { max_replicas: 5 }));
        let error = ctx
            .with_config(json!({"maxReplica": 5}))
            .config::<Config>()
            .expect_err("unknown field");
        assert!(
            error.starts_with("invalid config of step `decide`"),
            "{error}"
        );
    }

    #[test]
    fn helpers_find_signals_outputs_and_values() {
        let ctx = Context::default()
            .with_signal(
                Signal::new(Some(1.0))
                    .with_value("growthMiBPerMinute", 4.5)
                    .with_value("secondsToOOM", f64::INFINITY)
                    .with_label("namespace", "prod"),
            )
            .with_signal(Signal::new(None))
            .with_output("capture-logs", json!({"status": "succeeded"}));
        let root = ctx.root_signal().expect("a signal");
        assert_eq!(root.value_named("growthMiBPerMinute"), Some(4.5));
        assert_eq!(root.value_named("secondsToOOM"), None);
        assert_eq!(root.value_named("missing"), None);
        assert_eq!(root.label("namespace"), Some("prod"));
        assert_eq!(
            ctx.output_of("capture-logs"),
            Some(&json!({"status": "succeeded"}))
        );
        assert_eq!(ctx.output_of("rollback"), None);
    }

    #[test]
    fn ages_and_durations_are_unknown_when_nonsensical() {
        let target = Target::new("Deployment", Some("prod"), "api");
        assert_eq!(target.revision_age(), None);
        let target = target.with_revision_age(Duration::from_secs(90));
        assert_eq!(target.revision_age(), Some(Duration::from_secs(90)));
        for bad in [-1.0, f64::NAN, f64::INFINITY] {
            let target = Target {
                revision_age_seconds: Some(bad),
                ..Target::default()
            };
            assert_eq!(target.revision_age(), None, "{bad}");
        }
        let signal = Signal {
            active_since_ms: Some(1_000),
            ..Signal::default()
        };
        assert_eq!(signal.active_for(61_000), Some(Duration::from_secs(60)));
        assert_eq!(signal.active_for(0), None);
    }
}
