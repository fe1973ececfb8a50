//! The `Playbook` document as written in YAML: plain serde types, closed (`deny_unknown_fields`)
//! and documented, from which the JSON Schema is generated. Nothing here is validated beyond its
//! shape; [`super::compile`] turns it into the [`super::Playbook`] the engine runs.
//!
//! Unions follow the Kubernetes convention (like a container probe's `exec`/`httpGet`): a
//! struct of optional members of which exactly one is set. That keeps every member closed and
//! every error precise, which serde's `flatten` cannot do together with `deny_unknown_fields`.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::action::{Action, TargetKind};
use crate::risk::Risk;

/// The `apiVersion` every Salve document carries.
pub const API_VERSION: &str = "salve.dev/v1";

/// A playbook: what to watch for, what to act on, and the risk-tagged steps that heal it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schemars(title = "Playbook")]
pub struct PlaybookDocument {
    /// Always `salve.dev/v1`.
    #[schemars(extend("const" = "salve.dev/v1"))]
    pub api_version: String,
    /// Always `Playbook`.
    #[schemars(extend("const" = "Playbook"))]
    pub kind: String,
    /// The playbook's name and labels.
    pub metadata: Metadata,
    /// What the playbook watches and does.
    pub spec: PlaybookSpec,
}

/// Kubernetes-style object metadata.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Metadata {
    /// Unique name within the playbook set (a DNS-1123 label: lowercase letters, digits, `-`).
    pub name: String,
    /// Free-form labels, for selection and grouping.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Free-form annotations (owners, links, notes).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// The body of a playbook.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PlaybookSpec {
    /// What this playbook is for, in a sentence or two (shown to humans and the advisor).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// A Markdown runbook beside this file, relative to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runbook: Option<String>,
    /// What opens an incident for this playbook.
    pub trigger: Trigger,
    /// The Kubernetes object the steps act on; `${...}` templates are filled from the signal.
    pub target: Target,
    /// After an incident for the same target, wait this long before acting again (default 30m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cooldown: Option<String>,
    /// Lowers the policy's ceiling for this playbook; it can never raise it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_autonomous_risk: Option<Risk>,
    /// The remediation, run in order; each step is gated on its risk.
    pub steps: Vec<Step>,
    /// A PromQL condition that must hold within a time after the steps, or the plan rolls back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify: Option<Verify>,
    /// How to undo the remediation when a step fails or verify does not hold, in the order
    /// written. Without it, each completed step that changed something is undone from what
    /// it found (scale back, uncordon, ...) in reverse order of completion.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rollback: Vec<Step>,
    /// What a restarted engine does with a remediation of this playbook that was in flight
    /// when it stopped: `rollback` (the default) undoes what completed, `resume` goes on from
    /// the interrupted step. One waiting for approval always goes on waiting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_interrupt: Option<OnInterrupt>,
    /// Unit tests for the trigger, in promtool's notation, run by `salve test`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tests: Vec<PlaybookTest>,
}

/// What a restarted engine does with a remediation that was in flight.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnInterrupt {
    /// Undo what completed (the safe default).
    #[default]
    Rollback,
    /// Run the interrupted step again (actions are idempotent) and go on.
    Resume,
}

/// What opens an incident. Set exactly one of `promql`, `memoryLeak`, `latency`, `crashLoop`,
/// `errorRate`, `event`, `schedule` or `alert`; `for`, `keepFiringFor` and `interval` apply to
/// the PromQL-based ones.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Trigger {
    /// A PromQL expression; every series it returns is a signal (alerting-rule semantics).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promql: Option<PromqlTrigger>,
    /// Built-in signal: a container's working set projected to hit its limit within `horizon`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_leak: Option<MemoryLeakSignal>,
    /// Built-in signal: a latency quantile from a histogram above a threshold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency: Option<LatencySignal>,
    /// Built-in signal: containers restarting too often, or waiting in CrashLoopBackOff.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crash_loop: Option<CrashLoopSignal>,
    /// Built-in signal: the ratio of failed to all requests above a threshold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_rate: Option<ErrorRateSignal>,
    /// Kubernetes events or pod states with given reasons.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<EventTrigger>,
    /// A cron schedule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<ScheduleTrigger>,
    /// An Alertmanager alert delivered to Salve's webhook.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert: Option<AlertTrigger>,
    /// The condition must hold this long before the signal fires (default 0s).
    #[serde(default, rename = "for", skip_serializing_if = "Option::is_none")]
    pub for_: Option<String>,
    /// Keep firing this long after the condition stops holding (default 0s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_firing_for: Option<String>,
    /// How often to evaluate (default 30s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    /// Built-in signals only: an input whose newest sample is older than this makes its
    /// signal inconclusive, never healthy (default 3m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stale_after: Option<String>,
}

/// A PromQL trigger.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PromqlTrigger {
    /// The expression; each returned series with a value is a signal.
    pub expr: String,
}

/// Memory-leak projection: time-to-OOM = (limit - working set) / growth rate over `window`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MemoryLeakSignal {
    /// Label matchers narrowing the containers watched, e.g. `{namespace="prod"}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// How far back the growth trend is measured (default 30m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<String>,
    /// Fire when the projected time to OOM is below this.
    pub horizon: String,
    /// Ignore containers growing slower than this many MiB per minute (default 0).
    #[serde(
        default,
        rename = "minGrowthMiBPerMinute",
        skip_serializing_if = "Option::is_none"
    )]
    pub min_growth_mib_per_minute: Option<f64>,
    /// Overrides the working-set metric (default `container_memory_working_set_bytes`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage_metric: Option<String>,
    /// Overrides the limit metric (default `kube_pod_container_resource_limits{resource="memory"}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit_metric: Option<String>,
}

/// Latency SLO breach: `histogram_quantile(quantile, rate(<metric>_bucket[window]))` > threshold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LatencySignal {
    /// Label matchers narrowing the series, e.g. `{service="checkout"}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// The histogram's base name, without `_bucket` (default `http_request_duration_seconds`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<String>,
    /// The quantile, between 0 and 1 exclusive (e.g. 0.99).
    pub quantile: f64,
    /// Fire when the quantile is above this duration (e.g. `300ms`).
    pub threshold: String,
    /// The rate window (default 5m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<String>,
    /// Labels kept when aggregating buckets (default `[namespace, service]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<Vec<String>>,
}

/// Crash loop: restarts within `window` above `restarts`, or a container in CrashLoopBackOff.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CrashLoopSignal {
    /// Label matchers narrowing the containers watched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// Fire when a container restarted more than this many times within `window`.
    pub restarts: u32,
    /// The window restarts are counted over (default 15m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<String>,
}

/// Error ratio: `rate(errors[window]) / rate(total[window])` above `ratio`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ErrorRateSignal {
    /// Label matchers narrowing the series.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// The request counter (default `http_requests_total`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<String>,
    /// Matchers that select failed requests (default `{code=~"5.."}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_selector: Option<String>,
    /// Fire when errors/total is above this, between 0 and 1.
    pub ratio: f64,
    /// The rate window (default 5m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<String>,
    /// Labels kept when aggregating (default `[namespace, service]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<Vec<String>>,
}

/// Kubernetes events (or pod container states) with given reasons.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EventTrigger {
    /// The kind of the involved object (`Pod`, `Node`, ...).
    pub kind: TargetKind,
    /// Reasons that match, e.g. `OOMKilled`, `BackOff`, `CrashLoopBackOff`, `NodeNotReady`.
    pub reason: Vec<String>,
    /// Only objects in these namespaces (default: all that Salve watches).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
}

/// A cron schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ScheduleTrigger {
    /// Cron expression: 5 fields (`min hour day month weekday`, as in a CronJob) or 6-7 fields
    /// with seconds first and an optional year last.
    pub cron: String,
}

/// An Alertmanager alert, delivered to Salve's webhook receiver.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AlertTrigger {
    /// The alert's `alertname` label.
    pub alertname: String,
    /// Other labels the alert must carry, with these exact values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// The object the steps act on. `name` and `namespace` may use `${...}` templates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Target {
    /// The object's kind.
    pub kind: TargetKind,
    /// The object's namespace; must be absent for cluster-scoped kinds (Node).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The object's name.
    pub name: String,
}

/// One step of a remediation: exactly one of `action` or `wasm`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Step {
    /// Unique name within the playbook (defaults to the action's name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// A built-in action.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<Action>,
    /// A custom step compiled to WebAssembly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wasm: Option<WasmStep>,
    /// How much harm this step can do; the gate compares it with the ceiling.
    pub risk: Risk,
    /// Run the step only when this CEL expression is true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<String>,
    /// The action's parameters; string values may use `${...}` templates.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub params: BTreeMap<String, serde_json::Value>,
    /// Give up on the step after this long (default 60s). For a `wasm` step, the time its
    /// module has to decide, host calls included (default 1s); each action it asks for then
    /// gets the default 60s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
}

/// A custom step compiled to WebAssembly (a component implementing `salve:step`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WasmStep {
    /// Path to the `.wasm` component, relative to the playbook file.
    pub module: String,
    /// Configuration handed to the module as JSON; its strings may use `${...}` templates,
    /// filled in when the plan is made (`namespace="${target.namespace}"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<serde_json::Value>,
    /// Host capabilities the module may use; nothing else is linked.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub grants: Vec<Capability>,
    /// Actions the module may return; anything else it returns is refused.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_actions: Vec<Action>,
    /// What the `get` capability may read (it needs `grants` to include `get`): kinds, each
    /// from the namespaces listed with it (the target's when none are; none for a
    /// cluster-scoped kind such as `Node`). Without `read`, the target's kind and Pods, in the
    /// target's namespace. Secrets are never readable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read: Option<Vec<ReadGrant>>,
}

/// One kind of Kubernetes object a WASM step's `get` may read, and from where.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ReadGrant {
    /// The kind, as Kubernetes spells it: `Deployment`, `StatefulSet`, `DaemonSet`,
    /// `ReplicaSet`, `Job`, `Pod`, `Service`, `ConfigMap`, `Event`, `PersistentVolumeClaim`,
    /// `PodDisruptionBudget`, `HorizontalPodAutoscaler`, `Node` or `Namespace`.
    pub kind: String,
    /// The namespaces its objects may be read from (default: the target's); `${...}`
    /// templates allowed, filled in when the plan is made. Not for a cluster-scoped kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespaces: Option<Vec<String>>,
}

/// A host capability a WASM step may be granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Capability {
    /// Write log lines into the journal.
    Log,
    /// Run PromQL queries (rate-limited).
    Query,
    /// Read Kubernetes objects from an allow-list.
    Get,
    /// Read the current time.
    Now,
}

/// The check that must hold after the steps ran.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Verify {
    /// PromQL that must return a non-empty result; `${...}` templates allowed.
    pub promql: String,
    /// How long to wait for it to hold before rolling back.
    pub within: String,
}

/// A unit test of the trigger, in the style of promtool's rule tests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PlaybookTest {
    /// What the test shows.
    pub name: String,
    /// Spacing between samples (default 1m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    /// Series selector (`metric{label="value"}`) to values in promtool's expanding notation,
    /// such as `1e9+5e4x240`, `0 1 _ 3 stale` or `5x10`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub series: BTreeMap<String, String>,
    /// Alerts delivered to the webhook during the test (for `alert` triggers).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub alerts: Vec<TestAlert>,
    /// What the Kubernetes API reports during the test (for `event` triggers): Events, and
    /// states that last (`until`), such as a node not ready.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<TestEvent>,
    /// What the Kubernetes API would say, for planning the steps that `expect.steps` checks:
    /// the signal's owner (for `${owner.*}`) and facts about the target (for `when`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub facts: Option<TestFacts>,
    /// What must happen.
    pub expect: TestExpectation,
}

/// What the cluster would say during a playbook test.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TestFacts {
    /// The workload that owns the signal's pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<TestOwner>,
    /// The target object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<TestTarget>,
    /// Kubernetes objects the API server holds during the test, as manifests (`apiVersion`,
    /// `kind`, `metadata.name` and, for namespaced kinds, `metadata.namespace`), for WASM
    /// steps that `get` them; without any, a `get` finds no Kubernetes API.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(with = "Vec<serde_json::Map<String, serde_json::Value>>")]
    pub objects: Vec<serde_json::Value>,
}

/// The owner of the signal's pod in a playbook test.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TestOwner {
    /// Its kind (default `Deployment`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Its name.
    pub name: String,
    /// Its namespace (default: the signal's `namespace` label).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// Facts about the target in a playbook test; what is left out is unknown.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TestTarget {
    /// How long before the check its current revision was rolled out (`target.revisionAge`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision_age: Option<String>,
    /// Its rollout revision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<i64>,
    /// Desired replicas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i64>,
    /// Ready replicas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_replicas: Option<i64>,
    /// Its node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Its labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Its annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// An alert sent during a playbook test.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TestAlert {
    /// When it is sent, from the start of the series.
    pub at: String,
    /// The alert's labels, `alertname` included.
    pub labels: BTreeMap<String, String>,
}

/// What the Kubernetes API reports about one object during a playbook test: an Event, which
/// holds for 5 minutes like a real one, or with `until` a state that holds from `at` through
/// `until` (a container waiting in `CrashLoopBackOff`, a node not ready).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TestEvent {
    /// When it happens, from the start of the test.
    pub at: String,
    /// When a lasting state ends (it holds through this time), from the start of the test.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
    /// The involved object's kind (default: the trigger's kind).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<TargetKind>,
    /// Its namespace; required for namespaced kinds, absent for a Node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Its name.
    pub name: String,
    /// The reason reported (`OOMKilled`, `BackOff`, `NodeNotReady`, ...).
    pub reason: String,
    /// The container, for a pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
}

/// The expected outcome of a playbook test.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TestExpectation {
    /// Whether an incident opens.
    pub incident: bool,
    /// When it is evaluated, from the start of the series (default: the end of the series, or
    /// for `events` the latest `at` or `until`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<String>,
    /// What the plan runs, in order: an action step by its name; for a `wasm` step, what its
    /// module decides for this test (`salve test` evaluates it, with the test's series and
    /// facts, and no Kubernetes API): the actions it asks for, named `<step>/<n>-<action>`
    /// (`guard/1-rollout_undo`, `guard/2-notify`), nothing when it skips, or `<step>/escalate`
    /// when it escalates, which ends the list (the plan halts there). A step whose `when`
    /// reads earlier steps' outputs is decided when it is reached, and is not listed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steps: Option<Vec<String>>,
    /// Labels the signal must carry.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}
