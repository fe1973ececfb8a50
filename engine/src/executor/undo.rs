//! Undo: the step that puts back what a completed step changed, from what the action saw
//! before it acted (its outcome's `before`).
//!
//! | step              | undone by                                             |
//! |-------------------|-------------------------------------------------------|
//! | `scale`           | `scale` to the replicas it found                      |
//! | `cordon`          | `uncordon` (and the other way round)                  |
//! | `annotate`        | `annotate` with the values it found (absent: removed) |
//! | `patch_resources` | `patch_resources` with the values it found            |
//! | `rollout_undo`    | `rollout_undo` to the revision it left                |
//!
//! Steps that changed nothing need no undo, and some cannot be undone: a restart, a deleted or
//! evicted pod, a sent message, captured logs, a wait. Those are recorded as such.

use serde_json::{Map, Value, json};

use crate::action::Action;
use crate::plan::{Decision, PlannedStep};

/// What undoing a completed step takes.
#[derive(Debug, Clone, PartialEq)]
pub enum Undo {
    /// This step, run on the same target.
    Step(Box<PlannedStep>),
    /// Nothing: the step changed nothing.
    Unchanged,
    /// It cannot be undone (why).
    Irreversible(&'static str),
}

/// The undo of `step`, which completed with `changed` and saw `before`.
pub fn undo(step: &PlannedStep, changed: bool, before: &Value) -> Undo {
    if !changed {
        return Undo::Unchanged;
    }
    let Some(action) = step.action else {
        return Undo::Irreversible("a WASM step's actions are undone one by one");
    };
    let with = |action: Action, params: Value| {
        let params = match params {
            Value::Object(map) => map.into_iter().collect(),
            _ => Default::default(),
        };
        Undo::Step(Box::new(PlannedStep {
            name: format!("undo-{}", step.name),
            action: Some(action),
            wasm: None,
            risk: step.risk,
            params,
            timeout: step.timeout,
            decision: Decision::Run,
        }))
    };
    match action {
        Action::Scale => match before["replicas"].as_i64() {
            Some(replicas) => with(Action::Scale, json!({"replicas": replicas})),
            None => Undo::Irreversible("the replicas before the step are unknown"),
        },
        Action::Cordon => with(Action::Uncordon, json!({})),
        Action::Uncordon => with(Action::Cordon, json!({})),
        Action::Annotate => match before.as_object() {
            Some(found) => with(Action::Annotate, json!({"annotations": found})),
            None => Undo::Irreversible("the annotations before the step are unknown"),
        },
        Action::PatchResources => resources(step, before).map_or(
            Undo::Irreversible("the resources before the step are unknown"),
            |params| with(Action::PatchResources, params),
        ),
        Action::RolloutUndo => match before["revision"].as_i64() {
            Some(revision) => with(Action::RolloutUndo, json!({"toRevision": revision})),
            None => Undo::Irreversible("the revision before the step is unknown"),
        },
        Action::RolloutRestart => Undo::Irreversible("a restart cannot be undone"),
        Action::DeletePod | Action::Evict => Undo::Irreversible("a removed pod cannot be put back"),
        Action::Notify => Undo::Irreversible("a sent message cannot be unsent"),
        Action::CaptureLogs | Action::WaitFor => Undo::Unchanged,
    }
}

/// `patch_resources` parameters that set back the requests and limits found (a value that was
/// not set before stays as the step left it: the action sets values, it does not remove them).
fn resources(step: &PlannedStep, before: &Value) -> Option<Value> {
    let before = before.as_object()?;
    let mut params = Map::new();
    if let Some(container) = step.params.get("container") {
        params.insert("container".into(), container.clone());
    }
    for (section, resource, param) in [
        ("requests", "memory", "memoryRequest"),
        ("limits", "memory", "memoryLimit"),
        ("requests", "cpu", "cpuRequest"),
        ("limits", "cpu", "cpuLimit"),
    ] {
        if let Some(value) = before.get(section).and_then(|s| s.get(resource)) {
            params.insert(param.into(), value.clone());
        }
    }
    Some(Value::Object(params))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::risk::Risk;

    fn step(action: Action, params: Value) -> PlannedStep {
        PlannedStep {
            name: "s".into(),
            action: Some(action),
            wasm: None,
            risk: Risk::Low,
            params: serde_json::from_value(params).expect("a map"),
            timeout: Duration::from_secs(30),
            decision: Decision::Run,
        }
    }

    fn params(undo: Undo) -> (Action, Value) {
        match undo {
            Undo::Step(step) => (
                step.action.expect("an action"),
                serde_json::to_value(step.params).expect("json"),
            ),
            other => panic!("expected a step, got {other:?}"),
        }
    }

    #[test]
    fn each_reversible_action_is_undone_from_what_it_found() {
        let scale = undo(
            &step(Action::Scale, json!({"replicas": 5})),
            true,
            &json!({"replicas": 3}),
        );
        assert_eq!(params(scale), (Action::Scale, json!({"replicas": 3})));
        let cordon = undo(&step(Action::Cordon, json!({})), true, &json!({}));
        assert_eq!(params(cordon).0, Action::Uncordon);
        let annotate = undo(
            &step(
                Action::Annotate,
                json!({"annotations": {"a": "1", "b": "2"}}),
            ),
            true,
            &json!({"a": "0", "b": null}),
        );
        assert_eq!(
            params(annotate),
            (
                Action::Annotate,
                json!({"annotations": {"a": "0", "b": null}})
            )
        );
        let resources = undo(
            &step(
                Action::PatchResources,
                json!({"container": "app", "memoryLimitFactor": "2"}),
            ),
            true,
            &json!({"limits": {"memory": "512Mi"}, "requests": {"cpu": "100m"}}),
        );
        assert_eq!(
            params(resources),
            (
                Action::PatchResources,
                json!({"container": "app", "memoryLimit": "512Mi", "cpuRequest": "100m"})
            )
        );
        let rollback = undo(
            &step(Action::RolloutUndo, json!({})),
            true,
            &json!({"revision": 4}),
        );
        assert_eq!(
            params(rollback),
            (Action::RolloutUndo, json!({"toRevision": 4}))
        );
    }

    #[test]
    fn unchanged_and_irreversible_steps_say_so() {
        assert_eq!(
            undo(&step(Action::Scale, json!({})), false, &json!({})),
            Undo::Unchanged
        );
        assert!(matches!(
            undo(&step(Action::RolloutRestart, json!({})), true, &json!({})),
            Undo::Irreversible(_)
        ));
        assert!(matches!(
            undo(&step(Action::Scale, json!({})), true, &json!({})),
            Undo::Irreversible(_)
        ));
    }
}
