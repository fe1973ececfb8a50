//! A WASM step as a remediation runs it: what the step is told, what it may call, ask for and
//! read, how long it has, what it leaves for later steps, and the steps its decision adds to
//! the plan. The executor and `salve test` both take them from here, so a playbook test
//! evaluates a step exactly as a remediation would.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use crate::plan::{Decision as PlanDecision, Plan, PlannedStep, PlannedWasm, TargetFacts};
use crate::playbook::compile::defaults;
use crate::wasm::{
    Grants, Host, Limits, Module, PlannedAction, Readable, SignalInput, StepInput, StepResult,
};

/// One evaluation of a WASM step, as [`crate::wasm::Host::evaluate`] takes it.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    /// What the step is told.
    pub input: StepInput,
    /// What it may call, ask for and read.
    pub grants: Grants,
    /// How far it may go.
    pub limits: Limits,
}

impl Evaluation {
    /// The evaluation of `step` of `plan`, whose module is `wasm`, for an incident whose root
    /// signal is `signal`.
    ///
    /// The step is told the signal, the plan's target with `facts`, its `config` (`{}` when it
    /// has none) and `outputs`, what the steps before it gave. It may call the capabilities
    /// the playbook grants, ask for the actions the playbook allows (each at no less than the
    /// step's risk), and `get` what the playbook's `read` lists — without one, objects of the
    /// target's kind and Pods, in the target's namespace. It has the step's `timeout`, and the
    /// default [`Limits`] otherwise.
    pub fn new(
        plan: &Plan,
        step: &PlannedStep,
        wasm: &PlannedWasm,
        signal: SignalInput,
        facts: &TargetFacts,
        outputs: Vec<(String, Value)>,
    ) -> Self {
        let input = StepInput {
            incident: plan.incident.clone(),
            playbook: plan.playbook.clone(),
            step: step.name.clone(),
            signals: vec![signal],
            target: plan.target.clone(),
            facts: facts.clone(),
            config: match &wasm.config {
                Value::Null => json!({}),
                config => config.clone(),
            },
            outputs,
        };
        let mut grants = Grants::new(wasm.grants.clone(), wasm.allowed_actions.clone(), step.risk);
        grants.readable = match &wasm.read {
            Some(read) => read.clone(),
            None => {
                // A cluster-scoped target (a Node) is read without a namespace; Pods then from
                // no namespace at all.
                let namespace: BTreeSet<String> = plan.target.namespace.iter().cloned().collect();
                let target = plan.target.namespace.as_ref().map(|_| namespace.clone());
                Readable {
                    kinds: [
                        (plan.target.kind.clone(), target),
                        ("Pod".to_string(), Some(namespace)),
                    ]
                    .into(),
                }
            }
        };
        let limits = Limits {
            timeout: step.timeout,
            ..Limits::default()
        };
        Evaluation {
            input,
            grants,
            limits,
        }
    }
}

/// The module `wasm` runs, from `host`: the bytes its playbook was checked with, or — for a
/// plan read back from the journal — the file, provided it still has the digest it was
/// planned with (a module rebuilt since then has not been checked for this plan).
pub fn load(host: &Host, wasm: &PlannedWasm) -> Result<Module, String> {
    let name = wasm.module.display().to_string();
    let module = match &wasm.bytes {
        Some(bytes) => host.load_bytes(&name, bytes),
        None => host.load(&wasm.module),
    }
    .map_err(|e| crate::diagnostic::chain(&e))?;
    if !wasm.digest.is_empty() && module.digest() != wasm.digest {
        return Err(format!(
            "{name} changed since the plan was made (SHA-256 {}, planned with {}); not running a module its playbook was not checked with",
            module.digest(),
            wasm.digest
        ));
    }
    Ok(module)
}

/// `steps.<name>` of a WASM step that decided, for later steps (their `when`, and the
/// `outputs` a later WASM step is told): the fields of its output, `status: succeeded`,
/// `changed: false`, `dryRun: false`, and `decision` ([`crate::wasm::Decision::name`]).
pub fn step_output(result: &StepResult) -> Value {
    let mut output = super::output(result.output.as_ref().unwrap_or(&Value::Null), false, false);
    output["decision"] = json!(result.decision.name());
    output
}

/// The actions a WASM `step` that proceeds asked for, as steps of the plan to gate and run in
/// order: the `n`th (from 1) is named `{step}/{n}-{action}` (`guard/1-rollout_undo`), at the
/// risk the host settled, with the default step timeout (the step's own `timeout` bounds its
/// evaluation).
pub fn asked_steps(step: &PlannedStep, actions: &[PlannedAction]) -> Vec<PlannedStep> {
    actions
        .iter()
        .enumerate()
        .map(|(n, asked)| PlannedStep {
            name: format!("{}/{}-{}", step.name, n + 1, asked.action.as_str()),
            action: Some(asked.action),
            wasm: None,
            risk: asked.risk,
            params: asked.params.clone(),
            timeout: defaults::STEP_TIMEOUT,
            decision: PlanDecision::Run,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::action::Action;
    use crate::plan::ObjectRef;
    use crate::playbook::spec::Capability;
    use crate::risk::Risk;
    use crate::wasm::Decision;

    fn guard() -> (Plan, PlannedStep, PlannedWasm) {
        let wasm = PlannedWasm {
            module: "steps/guard.wasm".into(),
            digest: String::new(),
            bytes: None,
            config: Value::Null,
            grants: vec![Capability::Log, Capability::Get],
            allowed_actions: vec![Action::RolloutUndo, Action::Notify],
            read: None,
        };
        let step = PlannedStep {
            name: "guard".into(),
            action: None,
            wasm: Some(wasm.clone()),
            risk: Risk::Medium,
            params: Default::default(),
            timeout: Duration::from_millis(250),
            decision: PlanDecision::Run,
        };
        let plan = Plan {
            incident: "inc-1".into(),
            playbook: "leak".into(),
            target: ObjectRef {
                kind: "Deployment".into(),
                name: "api".into(),
                namespace: Some("shop".into()),
            },
            steps: vec![step.clone()],
            verify: None,
            rollback: Vec::new(),
        };
        (plan, step, wasm)
    }

    /// What `get` may read in the evaluation of `step`, told nothing else.
    fn readable(plan: &Plan, step: &PlannedStep, wasm: &PlannedWasm) -> Readable {
        let signal = SignalInput::default();
        let facts = TargetFacts::default();
        Evaluation::new(plan, step, wasm, signal, &facts, Vec::new())
            .grants
            .readable
    }

    #[test]
    fn a_step_is_told_the_plan_and_may_read_its_target_and_pods_in_its_namespace() {
        let (plan, step, wasm) = guard();
        let outputs = vec![("capture-logs".to_string(), json!({"status": "succeeded"}))];
        let evaluation = Evaluation::new(
            &plan,
            &step,
            &wasm,
            SignalInput::default(),
            &TargetFacts::default(),
            outputs.clone(),
        );
        let input = &evaluation.input;
        assert_eq!(
            (
                input.incident.as_str(),
                input.playbook.as_str(),
                input.step.as_str()
            ),
            ("inc-1", "leak", "guard")
        );
        assert_eq!(input.config, json!({}));
        assert_eq!(input.outputs, outputs);
        assert_eq!(input.target, plan.target);
        let grants = &evaluation.grants;
        assert_eq!(grants.capabilities, wasm.grants);
        assert_eq!(grants.allowed_actions, wasm.allowed_actions);
        assert_eq!(grants.risk, Risk::Medium);
        // Without `read`: the target's kind and Pods, in the target's namespace.
        assert_eq!(
            grants.readable.to_string(),
            "Deployment in shop; Pod in shop"
        );
        assert_eq!(evaluation.limits.timeout, Duration::from_millis(250));
        assert_eq!(evaluation.limits.memory, Limits::default().memory);
    }

    #[test]
    fn a_step_of_a_cluster_scoped_target_may_read_it_without_a_namespace_and_no_pods() {
        let (mut plan, step, wasm) = guard();
        plan.target = ObjectRef {
            kind: "Node".into(),
            name: "node-1".into(),
            namespace: None,
        };
        let readable = readable(&plan, &step, &wasm);
        assert_eq!(readable.to_string(), "Node; Pod in no namespace");
    }

    #[test]
    fn a_step_may_read_what_its_plan_lists_instead_of_the_default() {
        let (plan, step, mut wasm) = guard();
        let read = Readable {
            kinds: [
                ("Node".to_string(), None),
                (
                    "ConfigMap".to_string(),
                    Some(["platform".to_string(), "shop".to_string()].into()),
                ),
            ]
            .into(),
        };
        wasm.read = Some(read.clone());
        let readable = readable(&plan, &step, &wasm);
        // Exactly the list: not even the target's own kind is added.
        assert_eq!(readable, read);
    }

    #[test]
    fn a_plan_journaled_before_read_existed_reads_the_default() {
        let (plan, step, _) = guard();
        // A step as the journal held it before `read`.
        let wasm: PlannedWasm = serde_json::from_value(json!({
            "module": "steps/guard.wasm", "digest": "", "config": null,
            "grants": ["log", "get"], "allowed_actions": ["rollout_undo"],
        }))
        .expect("reads back");
        assert_eq!(wasm.read, None);
        let readable = readable(&plan, &step, &wasm);
        assert_eq!(readable.to_string(), "Deployment in shop; Pod in shop");
    }

    #[test]
    fn asked_actions_are_named_after_the_step_in_order() {
        let (_, step, _) = guard();
        let asked = |action: Action, risk: Risk| PlannedAction {
            action,
            params: Default::default(),
            risk,
        };
        let steps = asked_steps(
            &step,
            &[
                asked(Action::RolloutUndo, Risk::Medium),
                asked(Action::Notify, Risk::High),
            ],
        );
        let names: Vec<&str> = steps.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["guard/1-rollout_undo", "guard/2-notify"]);
        assert_eq!(steps[1].risk, Risk::High);
        assert_eq!(steps[0].timeout, defaults::STEP_TIMEOUT);
        assert!(steps.iter().all(|s| s.decision == PlanDecision::Run));
    }

    #[test]
    fn a_decided_step_leaves_its_output_and_decision() {
        let result = StepResult {
            decision: Decision::Skip("nothing to do".into()),
            output: Some(json!({"verdict": "skip"})),
            logs: Vec::new(),
            took: Duration::ZERO,
        };
        let output = step_output(&result);
        assert_eq!(output["verdict"], "skip");
        assert_eq!(output["decision"], "skip");
        assert_eq!(output["status"], "succeeded");
        assert_eq!(output["changed"], false);
        assert_eq!(result.decision.reason(), "nothing to do");
    }

    #[test]
    fn a_module_read_back_from_disk_must_still_be_the_one_planned() {
        let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/wasm/skip.wat");
        let bytes = std::fs::read(&fixture).expect("the skip fixture");
        let host = Host::new(crate::wasm::HostOptions {
            cache: crate::wasm::CacheDir::Disabled,
            pooling: false,
            ..crate::wasm::HostOptions::default()
        })
        .expect("a host");
        let (_, _, mut wasm) = guard();
        wasm.module = fixture;
        wasm.digest = crate::wasm::digest_hex(&bytes);
        // Planned now: the bytes checked at load run.
        wasm.bytes = Some(bytes.clone().into());
        assert!(load(&host, &wasm).is_ok());
        // Resumed from the journal (no bytes): the file, if it is still the same.
        wasm.bytes = None;
        assert_eq!(load(&host, &wasm).expect("unchanged").digest(), wasm.digest);
        wasm.digest = "0".repeat(64);
        let error = load(&host, &wasm).expect_err("changed");
        assert!(error.contains("changed since the plan was made"), "{error}");
    }
}
