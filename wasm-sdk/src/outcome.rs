//! What a step answers: an [`Outcome`] holding a [`Decision`] and, to proceed, [`Action`]s.

use serde_json::{Map, Value};

/// How much harm an action can do, from `None` to `Critical`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Risk {
    /// Reads or tells; changes nothing.
    None,
    /// Changes something easily undone.
    Low,
    /// Changes a workload (a rollout, a resize).
    Medium,
    /// Can cost capacity or data if wrong.
    High,
    /// Can take a service down.
    Critical,
}

/// The built-in actions a step may ask the host to run on the incident's target.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ActionKind {
    /// `scale`: `replicas`, or `delta`, kept within `min` and `max`.
    Scale,
    /// `rollout_restart`: roll the workload's pods.
    RolloutRestart,
    /// `rollout_undo`: back to the previous revision (or `toRevision`).
    RolloutUndo,
    /// `patch_resources`: `memoryLimit`, `memoryLimitFactor`, `cpuLimit`, ... of a `container`.
    PatchResources,
    /// `cordon`: mark the node unschedulable.
    Cordon,
    /// `uncordon`: mark the node schedulable.
    Uncordon,
    /// `evict`: evict pods, respecting their disruption budgets.
    Evict,
    /// `delete_pod`: delete the pod (`gracePeriod`).
    DeletePod,
    /// `annotate`: set `annotations`.
    Annotate,
    /// `capture_logs`: copy recent logs into the journal.
    CaptureLogs,
    /// `notify`: post a `message` to a webhook `url`.
    Notify,
    /// `wait_for`: wait for a condition.
    WaitFor,
}

/// An action the step asks the host to run on the incident's target. The host plans, gates
/// and runs it exactly like a playbook step: under the risk ceiling, dry-run first, journaled.
///
/// ```
/// use salve_step::{Action, Risk};
///
/// let action = Action::patch_memory_limit("1Gi").param("container", "api").with_risk(Risk::High);
/// assert_eq!(action.params["memoryLimit"], "1Gi");
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Action {
    /// Which action.
    pub kind: ActionKind,
    /// Its parameters, as a playbook step's `params`.
    pub params: Map<String, Value>,
    /// A risk above the action's own, when the step judges it so: a step can raise risk,
    /// never lower it.
    pub risk: Option<Risk>,
}

impl Action {
    /// An action of this kind with no parameters.
    pub fn new(kind: ActionKind) -> Self {
        Self {
            kind,
            params: Map::new(),
            risk: None,
        }
    }

    /// Sets the workload's replicas.
    pub fn scale(replicas: i64) -> Self {
        Self::new(ActionKind::Scale).param("replicas", replicas)
    }

    /// Changes the workload's replicas by `delta` (add `.param("max", n)` to cap it; the host
    /// reads the current count, so this cannot race with another scaler's view).
    pub fn scale_by(delta: i64) -> Self {
        Self::new(ActionKind::Scale).param("delta", delta)
    }

    /// Restarts the workload's pods (`kubectl rollout restart`).
    pub fn rollout_restart() -> Self {
        Self::new(ActionKind::RolloutRestart)
    }

    /// Rolls the workload back to its previous revision (`kubectl rollout undo`).
    pub fn rollout_undo() -> Self {
        Self::new(ActionKind::RolloutUndo)
    }

    /// Sets the memory limit of the first container (`.param("container", ..)` picks one).
    pub fn patch_memory_limit(quantity: impl Into<String>) -> Self {
        Self::new(ActionKind::PatchResources).param("memoryLimit", quantity.into())
    }

    /// Multiplies the current memory limit by `factor` (1.5: half as much again).
    pub fn raise_memory_limit(factor: f64) -> Self {
        Self::new(ActionKind::PatchResources).param("memoryLimitFactor", factor.to_string())
    }

    /// Copies recent logs of the target into the journal.
    pub fn capture_logs() -> Self {
        Self::new(ActionKind::CaptureLogs)
    }

    /// Sends `message` (the playbook or `.param("url", ..)` names the webhook).
    pub fn notify(message: impl Into<String>) -> Self {
        Self::new(ActionKind::Notify).param("message", message.into())
    }

    /// Sets one annotation on the target.
    pub fn annotate(name: impl Into<String>, value: impl Into<String>) -> Self {
        let mut annotations = Map::new();
        annotations.insert(name.into(), Value::String(value.into()));
        Self::new(ActionKind::Annotate).param("annotations", annotations)
    }

    /// With one more parameter.
    #[must_use]
    pub fn param(mut self, name: impl Into<String>, value: impl Into<Value>) -> Self {
        self.params.insert(name.into(), value.into());
        self
    }

    /// Raises the action's risk to `risk` (the host keeps the higher of this and its own).
    #[must_use]
    pub fn with_risk(mut self, risk: Risk) -> Self {
        self.risk = Some(risk);
        self
    }
}

/// What the step decided.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    /// Run these actions, in order.
    Proceed(Vec<Action>),
    /// Do nothing, for this reason.
    Skip(String),
    /// A human should look, for this reason (the plan halts here).
    Escalate(String),
}

/// The step's answer: a decision and, for later steps' `when` conditions, an output.
///
/// ```
/// use salve_step::{Action, Outcome};
/// use serde_json::json;
///
/// let outcome = Outcome::proceed(vec![Action::rollout_undo()])
///     .with_output(json!({"verdict": "rollback"}));
/// assert_eq!(outcome.output, Some(json!({"verdict": "rollback"})));
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    /// What to do.
    pub decision: Decision,
    /// Structured output for later steps, a JSON object.
    pub output: Option<Value>,
}

impl Outcome {
    /// Run these actions, in order.
    pub fn proceed(actions: Vec<Action>) -> Self {
        Self::from(Decision::Proceed(actions))
    }

    /// Do nothing, for this reason.
    pub fn skip(reason: impl Into<String>) -> Self {
        Self::from(Decision::Skip(reason.into()))
    }

    /// Stop the plan here for a human, for this reason.
    pub fn escalate(reason: impl Into<String>) -> Self {
        Self::from(Decision::Escalate(reason.into()))
    }

    /// With this output for later steps; it must be a JSON object (anything else fails the
    /// step when it is returned to the host).
    #[must_use]
    pub fn with_output(mut self, output: Value) -> Self {
        self.output = Some(output);
        self
    }

    /// The actions to run, when it proceeds.
    pub fn actions(&self) -> &[Action] {
        match &self.decision {
            Decision::Proceed(actions) => actions,
            Decision::Skip(_) | Decision::Escalate(_) => &[],
        }
    }

    /// Checks what the contract requires of an outcome: an output, when given, is an object.
    pub fn check(&self) -> Result<(), String> {
        match &self.output {
            Some(output) if !output.is_object() => Err(format!(
                "a step's output must be a JSON object, not `{output}`"
            )),
            _ => Ok(()),
        }
    }
}

impl From<Decision> for Outcome {
    fn from(decision: Decision) -> Self {
        Self {
            decision,
            output: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn builders_set_the_parameters_the_host_reads() {
        assert_eq!(Action::scale(3).params["replicas"], 3);
        let up = Action::scale_by(1).param("max", 5);
        assert_eq!(
            (up.params["delta"].clone(), up.params["max"].clone()),
            (json!(1), json!(5))
        );
        assert_eq!(
            Action::raise_memory_limit(1.5).params["memoryLimitFactor"],
            "1.5"
        );
        assert_eq!(Action::notify("hi").params["message"], "hi");
        assert_eq!(
            Action::annotate("salve.dev/seen", "yes").params["annotations"],
            json!({"salve.dev/seen": "yes"})
        );
        let undo = Action::rollout_undo().with_risk(Risk::High);
        assert_eq!(
            (undo.kind, undo.risk),
            (ActionKind::RolloutUndo, Some(Risk::High))
        );
    }

    #[test]
    fn outcomes_carry_decisions_and_object_outputs() {
        let outcome = Outcome::proceed(vec![Action::rollout_restart()]);
        assert_eq!(outcome.actions().len(), 1);
        assert_eq!(outcome.check(), Ok(()));
        assert!(Outcome::skip("fine").actions().is_empty());
        assert_eq!(
            Outcome::escalate("look").decision,
            Decision::Escalate("look".into())
        );
        assert!(Outcome::skip("x").with_output(json!([1])).check().is_err());
        assert!(
            Outcome::skip("x")
                .with_output(json!({"a": 1}))
                .check()
                .is_ok()
        );
        assert!(Risk::None < Risk::Low && Risk::High < Risk::Critical);
    }
}
