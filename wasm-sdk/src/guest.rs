//! The guest side, compiled only for WebAssembly: the generated bindings, the [`WasmHost`]
//! calling the imports, and the conversions between the bindings' records and the SDK's types.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::__private::bindings::salve::step::{get, log, now, query, types as wit};
use crate::{Action, ActionKind, Context, Decision, Host, Level, Outcome, Risk, Sample};
use crate::{Signal, StepOutput, Target};

/// The [`Host`] of a built step: each method calls the import of its capability.
///
/// Only the capabilities a step calls end up imported by its component, so the host sees
/// (and the playbook must grant) exactly those.
#[derive(Clone, Copy, Debug, Default)]
pub struct WasmHost;

impl Host for WasmHost {
    fn log(&self, level: Level, message: &str) {
        let level = match level {
            Level::Debug => log::Level::Debug,
            Level::Info => log::Level::Info,
            Level::Warn => log::Level::Warn,
            Level::Error => log::Level::Error,
        };
        log::log(level, message);
    }

    fn query(&self, promql: &str) -> Result<Vec<Sample>, String> {
        let samples = query::query(promql)?;
        Ok(samples
            .into_iter()
            .map(|s| Sample {
                labels: labels(s.labels),
                value: s.value,
            })
            .collect())
    }

    fn get(&self, kind: &str, namespace: Option<&str>, name: &str) -> Result<Value, String> {
        let json = get::get(kind, namespace, name)?;
        serde_json::from_str(&json)
            .map_err(|e| format!("the host's {kind} {name} is not JSON: {e}"))
    }

    fn now(&self) -> i64 {
        now::unix_ms()
    }
}

/// Runs `step` on the host's context and turns its answer into the host's outcome.
pub fn evaluate<F>(context: wit::Context, step: F) -> Result<wit::Outcome, String>
where
    F: FnOnce(&Context, &WasmHost) -> Result<Outcome, String>,
{
    let context = from_wit(context)?;
    let outcome = step(&context, &WasmHost)?;
    outcome.check()?;
    Ok(to_wit(outcome))
}

fn labels(labels: Vec<wit::Label>) -> BTreeMap<String, String> {
    labels.into_iter().map(|l| (l.name, l.value)).collect()
}

fn json(what: &str, text: &str) -> Result<Value, String> {
    if text.trim().is_empty() {
        return Ok(Value::Object(serde_json::Map::new()));
    }
    serde_json::from_str(text).map_err(|e| format!("the host's {what} is not JSON: {e}"))
}

fn from_wit(context: wit::Context) -> Result<Context, String> {
    let signals = context
        .signals
        .into_iter()
        .map(|s| Signal {
            labels: labels(s.labels),
            value: s.value,
            values: s.values.into_iter().map(|v| (v.name, v.value)).collect(),
            active_since_ms: s.active_since_ms,
        })
        .collect();
    let t = context.target;
    let target = Target {
        kind: t.kind,
        name: t.name,
        namespace: t.namespace,
        revision: t.revision,
        revision_age_seconds: t.revision_age_seconds,
        replicas: t.replicas,
        ready_replicas: t.ready_replicas,
        node: t.node,
        labels: labels(t.labels),
        annotations: labels(t.annotations),
    };
    let outputs = context
        .outputs
        .into_iter()
        .map(|o| {
            let output = json(&format!("output of step `{}`", o.step), &o.json)?;
            Ok(StepOutput {
                step: o.step,
                output,
            })
        })
        .collect::<Result<_, String>>()?;
    Ok(Context {
        config: json("step config", &context.config)?,
        incident: context.incident,
        playbook: context.playbook,
        step: context.step,
        signals,
        target,
        outputs,
    })
}

fn to_wit(outcome: Outcome) -> wit::Outcome {
    let decision = match outcome.decision {
        Decision::Proceed(actions) => {
            wit::Decision::Proceed(actions.into_iter().map(action_to_wit).collect())
        }
        Decision::Skip(reason) => wit::Decision::Skip(reason),
        Decision::Escalate(reason) => wit::Decision::Escalate(reason),
    };
    wit::Outcome {
        decision,
        output: outcome.output.map(|o| o.to_string()),
    }
}

fn action_to_wit(action: Action) -> wit::Action {
    use wit::ActionKind as K;
    let kind = match action.kind {
        ActionKind::Scale => K::Scale,
        ActionKind::RolloutRestart => K::RolloutRestart,
        ActionKind::RolloutUndo => K::RolloutUndo,
        ActionKind::PatchResources => K::PatchResources,
        ActionKind::Cordon => K::Cordon,
        ActionKind::Uncordon => K::Uncordon,
        ActionKind::Evict => K::Evict,
        ActionKind::DeletePod => K::DeletePod,
        ActionKind::Annotate => K::Annotate,
        ActionKind::CaptureLogs => K::CaptureLogs,
        ActionKind::Notify => K::Notify,
        ActionKind::WaitFor => K::WaitFor,
    };
    let risk = action.risk.map(|risk| match risk {
        Risk::None => wit::Risk::None,
        Risk::Low => wit::Risk::Low,
        Risk::Medium => wit::Risk::Medium,
        Risk::High => wit::Risk::High,
        Risk::Critical => wit::Risk::Critical,
    });
    wit::Action {
        kind,
        params: Value::Object(action.params).to_string(),
        risk,
    }
}
