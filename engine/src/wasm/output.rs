//! A step's answer, treated as untrusted input: checked against what the playbook allows the
//! step and turned into Salve's types.

use std::collections::BTreeMap;

use serde::Serialize;

use super::StepError;
use super::bindings::salve::step::types as wit;
use super::sandbox::Grants;
use crate::action::Action;
use crate::risk::Risk;

/// The most actions one answer may ask for.
pub(super) const MAX_ACTIONS: usize = 32;

/// The longest reason (`skip`, `escalate`) kept, in bytes; longer ones are cut.
pub(super) const MAX_REASON: usize = 4 * 1024;

/// What a step decided, checked.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Run these actions, in order, each with its risk for the gate.
    Proceed(Vec<PlannedAction>),
    /// Do nothing, for this reason.
    Skip(String),
    /// A human should look, for this reason (the plan halts here).
    Escalate(String),
}

impl Decision {
    /// What it is called in the journal and in `steps.<name>.decision`: `proceed`, `skip` or
    /// `escalate`.
    pub fn name(&self) -> &'static str {
        match self {
            Decision::Proceed(_) => "proceed",
            Decision::Skip(_) => "skip",
            Decision::Escalate(_) => "escalate",
        }
    }

    /// Why the step skipped or escalated; empty when it proceeds.
    pub fn reason(&self) -> &str {
        match self {
            Decision::Skip(reason) | Decision::Escalate(reason) => reason,
            Decision::Proceed(_) => "",
        }
    }
}

/// An action a step asked for, checked: allowed to the step, with a JSON object of parameters
/// and a risk no lower than the step's and the action's own.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlannedAction {
    /// The built-in action.
    pub action: Action,
    /// Its parameters.
    pub params: BTreeMap<String, serde_json::Value>,
    /// The highest of the step's declared risk, the action's intrinsic risk and the risk the
    /// step asked for.
    pub risk: Risk,
}

/// Checks the guest's `outcome` against `grants`: every action allowed, its params a JSON
/// object of known parameters, `output` a JSON object. Any violation refuses the whole
/// answer.
pub(super) fn check(
    outcome: wit::Outcome,
    grants: &Grants,
    max_string: usize,
) -> Result<(Decision, Option<serde_json::Value>), StepError> {
    let output = match outcome.output {
        None => None,
        Some(text) => Some(json_object(&text, "`output`", max_string)?),
    };
    let decision = match outcome.decision {
        wit::Decision::Skip(reason) => Decision::Skip(reason_text(reason)),
        wit::Decision::Escalate(reason) => Decision::Escalate(reason_text(reason)),
        wit::Decision::Proceed(actions) => {
            if actions.len() > MAX_ACTIONS {
                return Err(StepError::InvalidOutcome(format!(
                    "it asks for {} actions; at most {MAX_ACTIONS} are allowed",
                    actions.len()
                )));
            }
            let planned = actions
                .into_iter()
                .enumerate()
                .map(|(index, action)| planned(index, action, grants, max_string))
                .collect::<Result<_, _>>()?;
            Decision::Proceed(planned)
        }
    };
    Ok((decision, output))
}

fn planned(
    index: usize,
    requested: wit::Action,
    grants: &Grants,
    max_string: usize,
) -> Result<PlannedAction, StepError> {
    let action = action(requested.kind);
    if !grants.allowed_actions.contains(&action) {
        return Err(StepError::ActionNotAllowed {
            action,
            allowed: grants.allowed_actions.clone(),
        });
    }
    let what = format!("action #{} (`{action}`): `params`", index + 1);
    let params = match json_object(&requested.params, &what, max_string)? {
        serde_json::Value::Object(map) => map.into_iter().collect::<BTreeMap<_, _>>(),
        _ => BTreeMap::new(),
    };
    for name in params.keys() {
        if !action.params().iter().any(|p| p.name == name) {
            let known: Vec<_> = action.params().iter().map(|p| p.name).collect();
            return Err(StepError::InvalidOutcome(format!(
                "{what} has an unknown parameter `{name}` (`{action}` takes: {})",
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            )));
        }
    }
    if let Some(missing) = action
        .params()
        .iter()
        .find(|p| p.required && !params.contains_key(p.name))
    {
        return Err(StepError::InvalidOutcome(format!(
            "{what} lacks the required parameter `{}`",
            missing.name
        )));
    }
    let risk = [
        grants.risk,
        action.intrinsic_risk(),
        requested.risk.map_or(Risk::None, risk),
    ]
    .into_iter()
    .max()
    .unwrap_or(Risk::Critical);
    Ok(PlannedAction {
        action,
        params,
        risk,
    })
}

/// Parses `text` as a JSON object.
fn json_object(text: &str, what: &str, max: usize) -> Result<serde_json::Value, StepError> {
    if text.len() > max {
        return Err(StepError::InvalidOutcome(format!(
            "{what} is {} bytes long; at most {max} are allowed",
            text.len()
        )));
    }
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(value @ serde_json::Value::Object(_)) => Ok(value),
        Ok(other) => Err(StepError::InvalidOutcome(format!(
            "{what} must be a JSON object, not {}",
            kind_of(&other)
        ))),
        Err(e) => Err(StepError::InvalidOutcome(format!(
            "{what} must be a JSON object, but it is not JSON: {e}"
        ))),
    }
}

fn kind_of(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// A reason, cut to [`MAX_REASON`] bytes.
fn reason_text(mut reason: String) -> String {
    if reason.len() > MAX_REASON {
        let mut end = MAX_REASON;
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        reason.truncate(end);
        reason.push_str("… (cut)");
    }
    reason
}

fn action(kind: wit::ActionKind) -> Action {
    use wit::ActionKind as K;
    match kind {
        K::Scale => Action::Scale,
        K::RolloutRestart => Action::RolloutRestart,
        K::RolloutUndo => Action::RolloutUndo,
        K::PatchResources => Action::PatchResources,
        K::Cordon => Action::Cordon,
        K::Uncordon => Action::Uncordon,
        K::Evict => Action::Evict,
        K::DeletePod => Action::DeletePod,
        K::Annotate => Action::Annotate,
        K::CaptureLogs => Action::CaptureLogs,
        K::Notify => Action::Notify,
        K::WaitFor => Action::WaitFor,
    }
}

fn risk(risk: wit::Risk) -> Risk {
    match risk {
        wit::Risk::None => Risk::None,
        wit::Risk::Low => Risk::Low,
        wit::Risk::Medium => Risk::Medium,
        wit::Risk::High => Risk::High,
        wit::Risk::Critical => Risk::Critical,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::playbook::spec::Capability;

    fn grants(allowed: &[Action], risk: Risk) -> Grants {
        Grants::new(vec![Capability::Log], allowed.to_vec(), risk)
    }

    fn proceed(kind: wit::ActionKind, params: &str, risk: Option<wit::Risk>) -> wit::Outcome {
        wit::Outcome {
            decision: wit::Decision::Proceed(vec![wit::Action {
                kind,
                params: params.to_string(),
                risk,
            }]),
            output: None,
        }
    }

    #[test]
    fn a_guest_can_raise_risk_but_never_lower_it() {
        let g = grants(&[Action::RolloutUndo, Action::Notify], Risk::Low);
        let lowered = proceed(wit::ActionKind::RolloutUndo, "{}", Some(wit::Risk::None));
        let (Decision::Proceed(actions), _) = check(lowered, &g, 1024).expect("valid") else {
            panic!("proceeds");
        };
        assert_eq!(actions[0].risk, Risk::Medium);
        let raised = proceed(
            wit::ActionKind::Notify,
            r#"{"url":"http://x"}"#,
            Some(wit::Risk::High),
        );
        let (Decision::Proceed(actions), _) = check(raised, &g, 1024).expect("valid") else {
            panic!("proceeds");
        };
        assert_eq!(actions[0].risk, Risk::High);
    }

    #[test]
    fn an_action_outside_the_allowed_list_refuses_the_answer() {
        let g = grants(&[Action::Notify], Risk::Low);
        let error =
            check(proceed(wit::ActionKind::Scale, "{}", None), &g, 1024).expect_err("refused");
        assert!(error.to_string().contains("`scale`"), "{error}");
    }

    #[test]
    fn params_must_be_a_json_object_of_known_parameters() {
        let g = grants(&[Action::Scale], Risk::Low);
        for (params, expected) in [
            ("[1]", "not an array"),
            ("nope", "not JSON"),
            (r#"{"replica":3}"#, "unknown parameter `replica`"),
        ] {
            let error = check(proceed(wit::ActionKind::Scale, params, None), &g, 1024)
                .expect_err("refused")
                .to_string();
            assert!(error.contains(expected), "{params}: {error}");
        }
    }

    #[test]
    fn output_must_be_a_json_object_and_reasons_are_cut() {
        let g = grants(&[], Risk::None);
        let outcome = wit::Outcome {
            decision: wit::Decision::Skip("x".repeat(MAX_REASON * 2)),
            output: Some("3".into()),
        };
        assert!(check(outcome, &g, 1024).is_err());
        let outcome = wit::Outcome {
            decision: wit::Decision::Skip("é".repeat(MAX_REASON)),
            output: Some(r#"{"a":1}"#.into()),
        };
        let (Decision::Skip(reason), output) = check(outcome, &g, 1024).expect("valid") else {
            panic!("skips");
        };
        assert!(reason.len() <= MAX_REASON + 16);
        assert_eq!(output, Some(serde_json::json!({"a": 1})));
    }
}
