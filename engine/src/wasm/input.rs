//! What a step is told: [`StepInput`], its JSON form (for `salve step run --input`), and its
//! conversion to the contract's `context`.
//!
//! The JSON form (every field but `incident`, `playbook` and `step` may be left out):
//!
//! ```json
//! {
//!   "incident": "inc-20261118-0001",
//!   "playbook": "memory-leak-rollback",
//!   "step": "guard",
//!   "signals": [
//!     {
//!       "labels": {"namespace": "prod", "pod": "api-7d9f-x2"},
//!       "value": 1834.5,
//!       "values": {"secondsToOOM": 1834.5, "growthMiBPerMinute": 12.0},
//!       "activeSince": "2026-11-18T10:00:00Z"
//!     }
//!   ],
//!   "target": {
//!     "kind": "Deployment", "namespace": "prod", "name": "api",
//!     "revision": 7, "deployedAt": "2026-11-18T09:40:00Z",
//!     "replicas": 3, "readyReplicas": 3, "node": null,
//!     "labels": {"app": "api"}, "annotations": {}
//!   },
//!   "config": {"maxGrowthMiBPerMin": 20},
//!   "outputs": [{"step": "capture-logs", "output": {"status": "succeeded"}}]
//! }
//! ```
//!
//! `config` is the step's `wasm.config` (`salve step run --config` replaces it); `outputs` are
//! what the earlier steps of the plan gave, in order. Unknown fields are refused.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::bindings::salve::step::types as wit;
use crate::plan::{ObjectRef, TargetFacts};
use crate::signal::state::{LabelSet, SignalEvent};

/// Everything a step is told about the incident it is asked about.
#[derive(Debug, Clone, PartialEq)]
pub struct StepInput {
    /// The incident's id.
    pub incident: String,
    /// The playbook's name.
    pub playbook: String,
    /// The step's name in the playbook.
    pub step: String,
    /// The incident's firing signals, the root cause first.
    pub signals: Vec<SignalInput>,
    /// The target object.
    pub target: ObjectRef,
    /// What is known of the target.
    pub facts: TargetFacts,
    /// The step's `config` from the playbook (`{}` when it has none).
    pub config: serde_json::Value,
    /// What the steps that ran before it gave, in order.
    pub outputs: Vec<(String, serde_json::Value)>,
}

/// One firing signal, as a step sees it.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SignalInput {
    /// Its labels.
    #[serde(default)]
    pub labels: LabelSet,
    /// Its main value, when it has one.
    #[serde(default)]
    pub value: Option<f64>,
    /// Its other named values.
    #[serde(default)]
    pub values: BTreeMap<String, f64>,
    /// When it started to hold, when known.
    #[serde(default)]
    pub active_since: Option<DateTime<Utc>>,
}

impl From<&SignalEvent> for SignalInput {
    fn from(event: &SignalEvent) -> Self {
        SignalInput {
            labels: event.labels.clone(),
            value: event.value,
            values: event.values.clone(),
            active_since: event.active_at,
        }
    }
}

/// The JSON form of a [`StepInput`].
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct InputDocument {
    incident: String,
    playbook: String,
    step: String,
    #[serde(default)]
    signals: Vec<SignalInput>,
    #[serde(default)]
    target: TargetDocument,
    #[serde(default)]
    config: Option<serde_json::Value>,
    #[serde(default)]
    outputs: Vec<OutputDocument>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct TargetDocument {
    #[serde(default)]
    kind: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    revision: Option<i64>,
    #[serde(default)]
    deployed_at: Option<DateTime<Utc>>,
    #[serde(default)]
    replicas: Option<i64>,
    #[serde(default)]
    ready_replicas: Option<i64>,
    #[serde(default)]
    node: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OutputDocument {
    step: String,
    output: serde_json::Value,
}

impl StepInput {
    /// Reads the JSON form described in this module's documentation; the error says where
    /// the text is wrong.
    pub fn from_json(text: &str) -> Result<StepInput, String> {
        let document: InputDocument = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let target = document.target;
        Ok(StepInput {
            incident: document.incident,
            playbook: document.playbook,
            step: document.step,
            signals: document.signals,
            target: ObjectRef {
                kind: target.kind,
                name: target.name,
                namespace: target.namespace,
            },
            facts: TargetFacts {
                revision: target.revision,
                deployed_at: target.deployed_at,
                replicas: target.replicas,
                ready_replicas: target.ready_replicas,
                node: target.node,
                labels: target.labels,
                annotations: target.annotations,
            },
            config: document
                .config
                .unwrap_or_else(|| serde_json::Value::Object(Default::default())),
            outputs: document
                .outputs
                .into_iter()
                .map(|o| (o.step, o.output))
                .collect(),
        })
    }

    /// The contract's `context`, with the target's revision age as of `now`.
    pub(super) fn to_context(&self, now: DateTime<Utc>) -> wit::Context {
        let facts = &self.facts;
        wit::Context {
            incident: self.incident.clone(),
            playbook: self.playbook.clone(),
            step: self.step.clone(),
            signals: self.signals.iter().map(signal).collect(),
            target: wit::Target {
                kind: self.target.kind.clone(),
                name: self.target.name.clone(),
                namespace: self.target.namespace.clone(),
                revision: facts.revision,
                revision_age_seconds: facts
                    .deployed_at
                    .map(|at| (now - at).as_seconds_f64().max(0.0)),
                replicas: facts.replicas,
                ready_replicas: facts.ready_replicas,
                node: facts.node.clone(),
                labels: labels(&facts.labels),
                annotations: labels(&facts.annotations),
            },
            config: match &self.config {
                serde_json::Value::Null => "{}".to_string(),
                config => config.to_string(),
            },
            outputs: self
                .outputs
                .iter()
                .map(|(step, output)| wit::StepOutput {
                    step: step.clone(),
                    json: output.to_string(),
                })
                .collect(),
        }
    }
}

fn signal(signal: &SignalInput) -> wit::Signal {
    wit::Signal {
        labels: labels(&signal.labels),
        value: signal.value,
        values: signal
            .values
            .iter()
            .map(|(name, value)| wit::NamedValue {
                name: name.clone(),
                value: *value,
            })
            .collect(),
        active_since_ms: signal.active_since.map(|at| at.timestamp_millis()),
    }
}

pub(super) fn labels(labels: &BTreeMap<String, String>) -> Vec<wit::Label> {
    labels
        .iter()
        .map(|(name, value)| wit::Label {
            name: name.clone(),
            value: value.clone(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_example_parses_and_converts() {
        let doc = include_str!("input.rs");
        let start = doc.find("//! ```json").expect("example") + "//! ```json".len();
        let end = start + doc[start..].find("//! ```").expect("end");
        let example: String = doc[start..end]
            .lines()
            .map(|line| line.trim_start_matches("//!"))
            .collect::<Vec<_>>()
            .join("\n");
        let input = StepInput::from_json(&example).expect("the example parses");
        assert_eq!(input.target.to_string(), "Deployment prod/api");
        let now = "2026-11-18T10:40:00Z".parse().expect("time");
        let context = input.to_context(now);
        assert_eq!(context.target.revision_age_seconds, Some(3600.0));
        assert_eq!(context.signals[0].values.len(), 2);
        assert_eq!(context.config, r#"{"maxGrowthMiBPerMin":20}"#);
        assert_eq!(context.outputs[0].step, "capture-logs");
    }

    #[test]
    fn unknown_fields_are_refused() {
        let error = StepInput::from_json(r#"{"incident":"i","playbook":"p","step":"s","x":1}"#)
            .expect_err("refused");
        assert!(error.contains("unknown field `x`"), "{error}");
    }

    #[test]
    fn a_missing_config_is_an_empty_object() {
        let input =
            StepInput::from_json(r#"{"incident":"i","playbook":"p","step":"s"}"#).expect("parses");
        assert_eq!(input.to_context(Utc::now()).config, "{}");
    }
}
