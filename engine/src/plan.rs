//! Plans: a playbook's steps resolved for one incident — the target named, `${...}` templates
//! filled from the signal's labels and what is known of the target, each step's `when`
//! condition (CEL) decided, each step's risk carried for the gate, its rollback and the
//! `verify` check filled in.
//!
//! Planning only reads: it never acts. What it knows of the cluster comes in as [`Facts`]
//! (from the Kubernetes API in the engine; from a test's `facts:` in `salve test`). Missing data
//! fails safe: a template that names something unknown is an error (nothing acts on a
//! half-filled name), and a `when` that cannot be decided — it reads a fact nobody could supply
//! — skips its step, with the reason.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use cel::{Context, Value};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::action::{Action, TargetKind};
use crate::condition::Condition;
use crate::incident::Incident;
use crate::playbook::{Param, Playbook, ReadGrant, Step, StepRun, Target};
use crate::risk::Risk;
use crate::signal::state::{LabelSet, SignalEvent};
use crate::template::{Template, Variable};

/// What is known of the cluster when planning.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Facts {
    /// The workload that owns the signal's pod (`${owner.*}`), when known.
    pub owner: Option<ObjectRef>,
    /// The target object as read, when it could be.
    pub target: TargetFacts,
}

/// A Kubernetes object's identity.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ObjectRef {
    /// Its kind (`Deployment`).
    pub kind: String,
    /// Its name.
    pub name: String,
    /// Its namespace (none for cluster-scoped kinds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

impl std::fmt::Display for ObjectRef {
    /// `Deployment shop/api`, `Node n1`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.namespace {
            Some(namespace) => write!(f, "{} {namespace}/{}", self.kind, self.name),
            None => write!(f, "{} {}", self.kind, self.name),
        }
    }
}

/// What was read of the target; every field may be unknown.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TargetFacts {
    /// Its rollout revision.
    pub revision: Option<i64>,
    /// When its current revision was rolled out.
    pub deployed_at: Option<DateTime<Utc>>,
    /// Desired replicas.
    pub replicas: Option<i64>,
    /// Ready replicas.
    pub ready_replicas: Option<i64>,
    /// Its node (for pods).
    pub node: Option<String>,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Its annotations.
    pub annotations: BTreeMap<String, String>,
}

/// A playbook resolved for one incident. It is journaled as JSON, so a restarted engine
/// resumes or rolls back exactly what was planned, even if the playbook changed meanwhile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// The incident.
    pub incident: String,
    /// The playbook.
    pub playbook: String,
    /// The target, named.
    pub target: ObjectRef,
    /// The steps, in order, each decided.
    pub steps: Vec<PlannedStep>,
    /// The check after the steps: PromQL filled in, and how long to wait for it.
    pub verify: Option<PlannedVerify>,
    /// The playbook's rollback steps, in the order written (empty: the executor undoes each
    /// completed step from what it found).
    pub rollback: Vec<PlannedStep>,
}

impl Plan {
    /// The names of the steps that will run, in order.
    pub fn runs(&self) -> Vec<&str> {
        self.steps
            .iter()
            .filter(|s| s.decision == Decision::Run)
            .map(|s| s.name.as_str())
            .collect()
    }

    /// The highest risk among the steps that will run.
    pub fn max_risk(&self) -> Risk {
        self.steps
            .iter()
            .filter(|s| s.decision == Decision::Run)
            .map(|s| s.risk)
            .max()
            .unwrap_or(Risk::None)
    }
}

/// The check after a plan's steps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlannedVerify {
    /// PromQL that must return a non-empty result, templates filled in.
    pub promql: String,
    /// How long to wait for it to hold.
    #[serde(with = "seconds")]
    pub within: Duration,
}

/// One step of a plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlannedStep {
    /// Its name.
    pub name: String,
    /// The action it runs, or `None` for a WASM step (whose actions come from the module).
    pub action: Option<Action>,
    /// The module a WASM step runs, and what it is granted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wasm: Option<PlannedWasm>,
    /// Its declared risk.
    pub risk: Risk,
    /// Its parameters, templates filled in.
    pub params: BTreeMap<String, serde_json::Value>,
    /// How long it may take.
    #[serde(with = "seconds")]
    pub timeout: Duration,
    /// Whether it runs.
    pub decision: Decision,
}

/// A WASM step's module and grants, as the playbook gave them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlannedWasm {
    /// The component, resolved against the playbook file.
    pub module: std::path::PathBuf,
    /// The SHA-256 of the module the playbook was checked with, in hex.
    #[serde(default)]
    pub digest: String,
    /// Those bytes (not journaled: a plan resumed after a restart reads the file again, and
    /// runs it only if its digest is still `digest`).
    #[serde(skip)]
    pub bytes: Option<std::sync::Arc<[u8]>>,
    /// Its configuration.
    pub config: serde_json::Value,
    /// The capabilities granted.
    pub grants: Vec<crate::playbook::spec::Capability>,
    /// The actions it may return.
    pub allowed_actions: Vec<Action>,
    /// What `get` may read, namespaces filled in, as the playbook's `read` lists it; `None`
    /// for the default (the target's kind and Pods, in the target's namespace), and in plans
    /// journaled before steps could say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read: Option<crate::wasm::Readable>,
}

/// Whether a planned step runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "decision", content = "reason")]
pub enum Decision {
    /// It runs (its `when` holds, or it has none).
    Run,
    /// It does not: its `when` is false, or could not be decided (why).
    Skip(String),
    /// Its `when` (this source) reads earlier steps' outputs: decided when it is reached.
    Deferred(String),
}

/// Why no plan could be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A template names something unknown.
    #[error("{place}: `${{{variable}}}` is unknown{hint}")]
    Unresolved {
        /// Where (`target.name`, `steps[rollback].params.message`, `verify`).
        place: String,
        /// The variable.
        variable: String,
        /// How to supply it.
        hint: String,
    },
}

/// Plans `playbook` for `incident`, opened by `signal`, with what is known of the cluster.
pub fn plan(
    playbook: &Playbook,
    incident: &Incident,
    signal: &SignalEvent,
    facts: &Facts,
    now: DateTime<Utc>,
) -> Result<Plan, Error> {
    let target = name_target(&playbook.target, &signal.labels, facts)?;
    let scope = Scope {
        playbook,
        incident,
        signal,
        facts,
        target: &target,
        now,
    };
    let steps = playbook
        .steps
        .iter()
        .map(|step| scope.step(step, "steps"))
        .collect::<Result<_, _>>()?;
    let rollback = playbook
        .rollback
        .iter()
        .map(|step| scope.step(step, "rollback"))
        .collect::<Result<_, _>>()?;
    let verify = playbook
        .verify
        .as_ref()
        .map(|verify| {
            scope
                .fill(&verify.promql, "verify.promql")
                .map(|promql| PlannedVerify {
                    promql,
                    within: verify.within,
                })
        })
        .transpose()?;
    Ok(Plan {
        incident: incident.id.clone(),
        playbook: playbook.name.clone(),
        target,
        steps,
        verify,
        rollback,
    })
}

/// Names the target of a signal with `labels`: its templates may read the labels and the owner.
pub fn name_target(target: &Target, labels: &LabelSet, facts: &Facts) -> Result<ObjectRef, Error> {
    let lookup = |v: &Variable| match v.path.as_slice() {
        [root, name] if root == "labels" => labels.get(name).cloned(),
        [root, field] if root == "owner" => owner_field(facts.owner.as_ref()?, field),
        _ => None,
    };
    let fill = |template: &Template, place: &str| {
        template
            .render(lookup)
            .map_err(|variable| unresolved(place, variable))
    };
    Ok(ObjectRef {
        kind: target.kind.to_string(),
        name: fill(&target.name, "target.name")?,
        namespace: match (&target.namespace, target.kind) {
            (_, TargetKind::Node) | (None, _) => None,
            (Some(namespace), _) => Some(fill(namespace, "target.namespace")?),
        },
    })
}

fn owner_field(owner: &ObjectRef, field: &str) -> Option<String> {
    match field {
        "kind" => Some(owner.kind.clone()),
        "name" => Some(owner.name.clone()),
        "namespace" => owner.namespace.clone(),
        _ => None,
    }
}

fn unresolved(place: &str, variable: &Variable) -> Error {
    let hint = match variable.path.first().map(String::as_str) {
        Some("owner") => {
            ": the signal's owner comes from the Kubernetes API (in a test, from `facts.owner`)"
        }
        Some("labels") => ": the signal does not carry that label",
        _ => "",
    };
    Error::Unresolved {
        place: place.to_string(),
        variable: variable.to_string(),
        hint: hint.to_string(),
    }
}

/// Everything a step's templates and conditions may read.
struct Scope<'a> {
    playbook: &'a Playbook,
    incident: &'a Incident,
    signal: &'a SignalEvent,
    facts: &'a Facts,
    target: &'a ObjectRef,
    now: DateTime<Utc>,
}

impl Scope<'_> {
    fn step(&self, step: &Step, list: &str) -> Result<PlannedStep, Error> {
        let mut params = BTreeMap::new();
        for (name, param) in &step.params {
            let value = match param {
                Param::Text(template) => serde_json::Value::String(
                    self.fill(template, &format!("{list}[{}].params.{name}", step.name))?,
                ),
                Param::Json(json) => json.render(|template, at| {
                    self.fill(
                        template,
                        &format!("{list}[{}].params.{name}{at}", step.name),
                    )
                })?,
                Param::Value(value) => value.clone(),
            };
            params.insert(name.clone(), value);
        }
        let decision = match &step.when {
            None => Decision::Run,
            Some(when) => self.decide(when),
        };
        Ok(PlannedStep {
            name: step.name.clone(),
            action: match &step.run {
                StepRun::Action(action) => Some(*action),
                StepRun::Wasm { .. } => None,
            },
            wasm: match &step.run {
                StepRun::Action(_) => None,
                StepRun::Wasm {
                    module,
                    bytes,
                    digest,
                    config,
                    grants,
                    allowed_actions,
                    read,
                } => Some(PlannedWasm {
                    module: module.clone(),
                    digest: digest.clone(),
                    bytes: Some(bytes.clone()),
                    config: config.render(|template, at| {
                        self.fill(template, &format!("{list}[{}].wasm.config{at}", step.name))
                    })?,
                    grants: grants.clone(),
                    allowed_actions: allowed_actions.clone(),
                    read: read
                        .as_deref()
                        .map(|read| self.readable(read, &format!("{list}[{}]", step.name)))
                        .transpose()?,
                }),
            },
            risk: step.risk,
            params,
            timeout: step.timeout,
            decision,
        })
    }

    /// What a WASM step's `get` may read (the step at `place`): each kind of `read` with its
    /// namespaces filled in.
    fn readable(&self, read: &[ReadGrant], place: &str) -> Result<crate::wasm::Readable, Error> {
        let mut readable = crate::wasm::Readable::default();
        for (i, grant) in read.iter().enumerate() {
            let namespaces = match &grant.namespaces {
                None => None,
                Some(namespaces) => Some(
                    namespaces
                        .iter()
                        .enumerate()
                        .map(|(j, namespace)| {
                            self.fill(
                                namespace,
                                &format!("{place}.wasm.read[{i}].namespaces[{j}]"),
                            )
                        })
                        .collect::<Result<_, _>>()?,
                ),
            };
            readable.kinds.insert(grant.kind.clone(), namespaces);
        }
        Ok(readable)
    }

    /// Fills `template` (`${labels.x}`, `${target.name}`, `${owner.name}`, ...).
    fn fill(&self, template: &Template, place: &str) -> Result<String, Error> {
        template
            .render(|v| self.variable(v))
            .map_err(|variable| unresolved(place, variable))
    }

    fn variable(&self, variable: &Variable) -> Option<String> {
        let [root, field] = variable.path.as_slice() else {
            return None;
        };
        match root.as_str() {
            "labels" => self.signal.labels.get(field).cloned(),
            "owner" => owner_field(self.facts.owner.as_ref()?, field),
            "target" => owner_field(self.target, field),
            "playbook" if field == "name" => Some(self.playbook.name.clone()),
            "incident" if field == "id" => Some(self.incident.id.clone()),
            "incident" if field == "fingerprint" => Some(format!(
                "{}/{}",
                self.playbook.name,
                self.incident.target.clone().unwrap_or_default()
            )),
            "signal" if field == "kind" => Some(self.playbook.trigger.kind.name().to_string()),
            "signal" if field == "value" => self.signal.value.map(|v| v.to_string()),
            _ => None,
        }
    }

    /// Decides a step's `when`.
    fn decide(&self, when: &Condition) -> Decision {
        if when.roots().any(|root| root == "steps") {
            return Decision::Deferred(when.source().to_string());
        }
        let context = self.context();
        match when.program().execute(&context) {
            Ok(Value::Bool(true)) => Decision::Run,
            Ok(Value::Bool(false)) => Decision::Skip(format!("`{}` is false", when.source())),
            Ok(other) => Decision::Skip(format!(
                "`{}` gave {other:?}, not true or false",
                when.source()
            )),
            Err(error) => Decision::Skip(format!(
                "`{}` cannot be decided ({error}); a step is not run on unknown facts",
                when.source()
            )),
        }
    }

    /// The CEL variables, holding only what is known (an unknown field is an error, never a
    /// default).
    fn context(&self) -> Context<'static, 'static> {
        let facts = &self.facts.target;
        let mut target = map([
            ("kind", Some(string(&self.target.kind))),
            ("name", Some(string(&self.target.name))),
            ("namespace", self.target.namespace.as_deref().map(string)),
            ("revision", facts.revision.map(Value::Int)),
            (
                "revisionAge",
                facts.deployed_at.map(|at| Value::Duration(self.now - at)),
            ),
            ("deployedAt", facts.deployed_at.map(timestamp)),
            ("replicas", facts.replicas.map(Value::Int)),
            ("readyReplicas", facts.ready_replicas.map(Value::Int)),
            ("node", facts.node.as_deref().map(string)),
        ]);
        target.insert("labels".into(), strings(&facts.labels));
        target.insert("annotations".into(), strings(&facts.annotations));
        let signal = map([
            ("kind", Some(string(self.playbook.trigger.kind.name()))),
            ("value", self.signal.value.map(Value::Float)),
            ("labels", Some(strings(&self.signal.labels))),
            (
                "values",
                Some(Value::from(
                    self.signal
                        .values
                        .iter()
                        .map(|(k, v)| (k.clone(), Value::Float(*v)))
                        .collect::<HashMap<String, Value>>(),
                )),
            ),
            ("firstSeen", self.signal.active_at.map(timestamp)),
            (
                "activeFor",
                self.signal
                    .active_at
                    .map(|at| Value::Duration(self.now - at)),
            ),
        ]);
        let incident = map([
            ("id", Some(string(&self.incident.id))),
            ("namespace", self.target.namespace.as_deref().map(string)),
            ("startedAt", Some(timestamp(self.incident.opened_at))),
            (
                "age",
                Some(Value::Duration(self.now - self.incident.opened_at)),
            ),
            (
                "signals",
                Some(Value::from(
                    self.incident
                        .signals
                        .iter()
                        .map(strings)
                        .collect::<Vec<_>>(),
                )),
            ),
        ]);
        let mut context = Context::default();
        context.add_variable_from_value("target", Value::from(target));
        if let Some(owner) = &self.facts.owner {
            let owner = map([
                ("kind", Some(string(&owner.kind))),
                ("name", Some(string(&owner.name))),
                ("namespace", owner.namespace.as_deref().map(string)),
            ]);
            context.add_variable_from_value("owner", Value::from(owner));
        }
        context.add_variable_from_value("signal", Value::from(signal));
        context.add_variable_from_value("labels", strings(&self.signal.labels));
        context.add_variable_from_value("incident", Value::from(incident));
        context.add_variable_from_value(
            "playbook",
            Value::from(map([("name", Some(string(&self.playbook.name)))])),
        );
        context.add_variable_from_value("now", timestamp(self.now));
        context
    }
}

fn string(text: &str) -> Value {
    Value::String(text.to_string().into())
}

fn timestamp(at: DateTime<Utc>) -> Value {
    Value::Timestamp(at.fixed_offset())
}

fn strings(map: &BTreeMap<String, String>) -> Value {
    Value::from(
        map.iter()
            .map(|(k, v)| (k.clone(), string(v)))
            .collect::<HashMap<String, Value>>(),
    )
}

/// A CEL map of the known fields.
fn map<const N: usize>(fields: [(&str, Option<Value>); N]) -> HashMap<String, Value> {
    fields
        .into_iter()
        .filter_map(|(k, v)| Some((k.to_string(), v?)))
        .collect()
}

/// A duration as (fractional) seconds in JSON.
mod seconds {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let secs = f64::deserialize(d)?;
        Duration::try_from_secs_f64(secs).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Arc;

    use super::*;
    use crate::incident::Incidents;
    use crate::playbook::load::{Loaded, load_paths, load_text};
    use crate::signal::state::Transition;

    fn shipped(name: &str) -> Arc<Playbook> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../playbooks");
        let loaded = load_paths(&[root]);
        let found = loaded.playbooks.iter().find(|p| p.name == name);
        Arc::clone(found.expect("a shipped playbook"))
    }

    fn t(minutes: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + minutes * 60, 0).expect("valid time")
    }

    fn leak() -> SignalEvent {
        SignalEvent {
            at: t(0),
            labels: LabelSet::from([
                ("namespace".to_string(), "prod".to_string()),
                ("pod".to_string(), "api-7d9f-x2".to_string()),
                ("container".to_string(), "api".to_string()),
            ]),
            transition: Transition::Firing,
            value: Some(1140.0),
            values: BTreeMap::from([("growthMiBPerMinute".to_string(), 19.0)]),
            active_at: Some(t(-2)),
        }
    }

    fn facts(deployed_minutes_ago: Option<i64>) -> Facts {
        Facts {
            owner: Some(ObjectRef {
                kind: "Deployment".into(),
                name: "api".into(),
                namespace: Some("prod".into()),
            }),
            target: TargetFacts {
                deployed_at: deployed_minutes_ago.map(|m| t(-m)),
                replicas: Some(3),
                ..TargetFacts::default()
            },
        }
    }

    fn plan_for(playbook: &Playbook, facts: &Facts) -> Result<Plan, Error> {
        let signal = leak();
        let mut incidents = Incidents::new();
        let opened = incidents.apply(playbook, &signal).expect("an incident");
        plan(playbook, &opened.incident, &signal, facts, t(1))
    }

    /// A rollback guarded by the target's revision age, the way a playbook without a WASM
    /// step decides it.
    fn guarded() -> Arc<Playbook> {
        let text = "apiVersion: salve.dev/v1\nkind: Playbook\nmetadata: {name: p}\nspec:\n  trigger:\n    memoryLeak: {horizon: 1h}\n  target: {kind: Deployment, namespace: \"${labels.namespace}\", name: \"${owner.name}\"}\n  steps:\n    - {name: capture-logs, action: capture_logs, risk: none}\n    - {name: rollback, action: rollout_undo, risk: medium, when: \"target.revisionAge < duration('1h')\"}\n    - {name: tell-owners, action: notify, risk: none, params: {url: 'https://hooks.example/x', message: 'Rolled back ${target.namespace}/${target.name}'}}\n";
        let mut loaded = Loaded::default();
        load_text(Path::new("p.yaml"), text, &mut loaded);
        assert!(!loaded.has_errors(), "{:#?}", loaded.diagnostics);
        Arc::clone(&loaded.playbooks[0])
    }

    #[test]
    fn a_leak_plans_the_shipped_playbook_with_every_template_filled() {
        let playbook = shipped("memory-leak-rollback");
        let plan = plan_for(&playbook, &facts(Some(20))).expect("a plan");
        assert_eq!(plan.runs(), ["capture-logs", "guard", "tell-owners"]);
        assert_eq!(
            plan.target,
            ObjectRef {
                kind: "Deployment".into(),
                name: "api".into(),
                namespace: Some("prod".into())
            }
        );
        let guard = plan.steps[1].wasm.as_ref().expect("a WASM step");
        assert!(guard.module.ends_with("steps/memory-leak-guard.wasm"));
        assert_eq!(plan.steps[1].timeout, Duration::from_secs(1));
        assert_eq!(
            plan.steps[2].params["message"],
            "Memory leak in prod/api, projected to OOM within 1h: Salve acted (see `salve incidents`)"
        );
        let verify = plan.verify.clone().expect("verify");
        assert!(
            verify.promql.contains(r#"namespace="prod", pod=~"api-.*""#),
            "{verify:?}"
        );
        assert_eq!(verify.within, Duration::from_secs(600));
        assert!(plan.rollback.is_empty(), "completed steps are undone");
        assert_eq!(plan.max_risk(), Risk::Medium);
    }

    #[test]
    fn a_condition_on_the_target_plans_the_step_or_skips_it() {
        let playbook = guarded();
        let plan = plan_for(&playbook, &facts(Some(20))).expect("a plan");
        assert_eq!(plan.runs(), ["capture-logs", "rollback", "tell-owners"]);
        assert_eq!(plan.steps[2].params["message"], "Rolled back prod/api");
        let plan = plan_for(&playbook, &facts(Some(180))).expect("a plan");
        assert_eq!(plan.runs(), ["capture-logs", "tell-owners"]);
        assert!(
            matches!(&plan.steps[1].decision, Decision::Skip(why) if why.contains("is false")),
            "{:?}",
            plan.steps[1].decision
        );
    }

    #[test]
    fn an_unknown_fact_skips_the_step_it_guards() {
        let plan = plan_for(&guarded(), &facts(None)).expect("a plan");
        assert_eq!(plan.runs(), ["capture-logs", "tell-owners"]);
        assert!(
            matches!(&plan.steps[1].decision, Decision::Skip(why) if why.contains("cannot be decided")),
            "{:?}",
            plan.steps[1].decision
        );
    }

    #[test]
    fn templates_in_maps_and_wasm_config_are_filled_at_any_depth() {
        let guard =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../playbooks/steps/memory-leak-guard.wasm");
        assert!(guard.is_file(), "run `bash wasm-sdk/build.sh` first");
        let text = format!(
            "apiVersion: salve.dev/v1\nkind: Playbook\nmetadata: {{name: p}}\nspec:\n  trigger:\n    memoryLeak: {{horizon: 1h}}\n  target: {{kind: Deployment, namespace: \"${{labels.namespace}}\", name: \"${{owner.name}}\"}}\n  steps:\n    - {{name: mark, action: annotate, risk: low, params: {{annotations: {{salve.dev/incident: '${{incident.id}}', salve.dev/by: salve}}}}}}\n    - name: guard\n      risk: medium\n      wasm:\n        module: '{}'\n        grants: [log]\n        config: {{query: 'up{{namespace=\"${{target.namespace}}\"}}', pods: ['${{labels.pod}}', 2], a/b: {{c: '${{target.name}}'}}, plain: 1h}}\n",
            guard.display()
        );
        let mut loaded = Loaded::default();
        load_text(Path::new("p.yaml"), &text, &mut loaded);
        assert!(!loaded.has_errors(), "{:#?}", loaded.diagnostics);
        let plan = plan_for(&loaded.playbooks[0], &facts(Some(20))).expect("a plan");
        let incident = &plan.incident;
        assert_eq!(
            plan.steps[0].params["annotations"],
            serde_json::json!({"salve.dev/incident": incident, "salve.dev/by": "salve"})
        );
        assert_eq!(
            plan.steps[1].wasm.as_ref().expect("wasm").config,
            serde_json::json!({
                "query": "up{namespace=\"prod\"}",
                "pods": ["api-7d9f-x2", 2],
                "a/b": {"c": "api"},
                "plain": "1h",
            })
        );
    }

    #[test]
    fn an_unknown_variable_in_wasm_config_is_a_load_error_at_its_place() {
        let guard =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../playbooks/steps/memory-leak-guard.wasm");
        let text = format!(
            "apiVersion: salve.dev/v1\nkind: Playbook\nmetadata: {{name: p}}\nspec:\n  trigger:\n    memoryLeak: {{horizon: 1h}}\n  target: {{kind: Deployment, namespace: prod, name: api}}\n  steps:\n    - name: guard\n      risk: medium\n      wasm:\n        module: '{}'\n        config: {{deep: {{list: [ok, '${{target.nmae}}']}}}}\n",
            guard.display()
        );
        let mut loaded = Loaded::default();
        load_text(Path::new("p.yaml"), &text, &mut loaded);
        let errors: Vec<String> = loaded.diagnostics.iter().map(|d| d.to_string()).collect();
        assert!(
            errors
                .iter()
                .any(|e| e.contains("p.yaml:13:") && e.contains("target.nmae")),
            "{errors:#?}"
        );
    }

    #[test]
    fn a_target_that_cannot_be_named_is_no_plan() {
        let playbook = shipped("memory-leak-rollback");
        let error = plan_for(&playbook, &Facts::default()).expect_err("no owner");
        let text = error.to_string();
        assert!(
            text.contains("target.name: `${owner.name}` is unknown")
                && text.contains("facts.owner"),
            "{text}"
        );
    }

    #[test]
    fn a_condition_on_earlier_steps_is_decided_when_reached() {
        let text = "apiVersion: salve.dev/v1\nkind: Playbook\nmetadata: {name: p}\nspec:\n  trigger:\n    crashLoop: {restarts: 3}\n  target: {kind: Deployment, namespace: \"${labels.namespace}\", name: api}\n  steps:\n    - {name: logs, action: capture_logs, risk: none}\n    - {name: restart, action: rollout_restart, risk: low, when: \"steps.logs.lines > 0\"}\n";
        let mut loaded = Loaded::default();
        load_text(Path::new("p.yaml"), text, &mut loaded);
        assert!(!loaded.has_errors(), "{:#?}", loaded.diagnostics);
        let plan = plan_for(&loaded.playbooks[0], &Facts::default()).expect("a plan");
        assert_eq!(
            plan.steps[1].decision,
            Decision::Deferred("steps.logs.lines > 0".into())
        );
        assert_eq!(plan.runs(), ["logs"]);
    }
}
