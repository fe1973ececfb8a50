//! Playbooks: the validated form the engine runs, compiled from the YAML [`spec`].

pub mod compile;
pub mod load;
pub mod resources;
pub mod set;
pub mod spec;
pub mod watch;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use crate::action::{Action, TargetKind};
use crate::condition::Condition;
use crate::risk::Risk;
use crate::series::Sample;
use crate::template::Template;

pub use set::PlaybookSet;
pub use spec::OnInterrupt;

/// Where a document came from.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Source {
    /// The file.
    pub file: PathBuf,
    /// The document's index within the file, from 0.
    pub document: usize,
}

/// A validated playbook.
#[derive(Debug, Clone)]
pub struct Playbook {
    /// Its unique name.
    pub name: String,
    /// Where it was loaded from.
    pub source: Source,
    /// SHA-256 of its canonical content: equal digests mean an unchanged playbook.
    pub digest: String,
    /// What it is for.
    pub description: Option<String>,
    /// Its runbook, resolved against the playbook file's directory.
    pub runbook: Option<PathBuf>,
    /// The runbook's text as loaded (part of the playbook's identity, so an edited runbook
    /// reloads its playbook); `None` without a runbook, or when it could not be read (a
    /// warning at load).
    pub runbook_text: Option<String>,
    /// What opens an incident.
    pub trigger: Trigger,
    /// What the steps act on.
    pub target: Target,
    /// How long to wait before acting on the same target again.
    pub cooldown: Duration,
    /// The playbook's own ceiling, if it lowers the policy's.
    pub max_autonomous_risk: Option<Risk>,
    /// The remediation.
    pub steps: Vec<Step>,
    /// The check after the steps.
    pub verify: Option<Verify>,
    /// How to undo the remediation (empty: each completed step is undone from what it found).
    pub rollback: Vec<Step>,
    /// What a restarted engine does with a remediation in flight.
    pub on_interrupt: OnInterrupt,
    /// Unit tests of the trigger.
    pub tests: Vec<PlaybookTest>,
    /// The document as written (for display, diffs and the advisor).
    pub spec: spec::PlaybookDocument,
}

impl Playbook {
    /// The highest risk any of its steps or rollback steps declares.
    pub fn max_step_risk(&self) -> Risk {
        self.steps
            .iter()
            .chain(&self.rollback)
            .map(|s| s.risk)
            .max()
            .unwrap_or(Risk::None)
    }
}

/// A validated trigger.
#[derive(Debug, Clone)]
pub struct Trigger {
    /// What kind of trigger, with its settings.
    pub kind: TriggerKind,
    /// How long the condition must hold before firing.
    pub for_: Duration,
    /// How long to keep firing after the condition stops holding.
    pub keep_firing_for: Duration,
    /// How often it is evaluated.
    pub interval: Duration,
    /// When the inputs of a built-in signal count as stale.
    pub stale_after: Duration,
}

/// The kinds of trigger, with their validated settings.
#[derive(Debug, Clone)]
pub enum TriggerKind {
    /// A PromQL expression.
    Promql {
        /// The expression.
        expr: String,
    },
    /// Memory-leak projection.
    MemoryLeak {
        /// Label matchers, `{...}`, or empty.
        selector: String,
        /// The trend window.
        window: Duration,
        /// Fire when OOM is projected within this.
        horizon: Duration,
        /// Ignore slower growth than this.
        min_growth_mib_per_minute: f64,
        /// The working-set metric.
        usage_metric: String,
        /// The limit metric.
        limit_metric: String,
    },
    /// Latency quantile above a threshold.
    Latency {
        /// Label matchers, `{...}`, or empty.
        selector: String,
        /// The histogram base name.
        metric: String,
        /// The quantile.
        quantile: f64,
        /// The threshold.
        threshold: Duration,
        /// The rate window.
        window: Duration,
        /// Labels kept when aggregating.
        by: Vec<String>,
    },
    /// Restarts above a count in a window, or CrashLoopBackOff.
    CrashLoop {
        /// Label matchers, `{...}`, or empty.
        selector: String,
        /// The restart count that fires.
        restarts: u32,
        /// The counting window.
        window: Duration,
    },
    /// Error ratio above a threshold.
    ErrorRate {
        /// Label matchers, `{...}`, or empty.
        selector: String,
        /// The request counter.
        metric: String,
        /// Matchers selecting failed requests.
        error_selector: String,
        /// The ratio that fires.
        ratio: f64,
        /// The rate window.
        window: Duration,
        /// Labels kept when aggregating.
        by: Vec<String>,
    },
    /// Kubernetes events.
    Event {
        /// The involved object's kind.
        kind: TargetKind,
        /// Matching reasons.
        reasons: Vec<String>,
        /// Namespaces, or all when empty.
        namespaces: Vec<String>,
    },
    /// A cron schedule.
    Schedule {
        /// The expression as written.
        cron: String,
        /// The parsed schedule.
        schedule: Box<cron::Schedule>,
    },
    /// An Alertmanager alert.
    Alert {
        /// The `alertname` label.
        alertname: String,
        /// Further labels that must match.
        labels: BTreeMap<String, String>,
    },
}

impl TriggerKind {
    /// The name used in the YAML and in logs (`memoryLeak`, `promql`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            TriggerKind::Promql { .. } => "promql",
            TriggerKind::MemoryLeak { .. } => "memoryLeak",
            TriggerKind::Latency { .. } => "latency",
            TriggerKind::CrashLoop { .. } => "crashLoop",
            TriggerKind::ErrorRate { .. } => "errorRate",
            TriggerKind::Event { .. } => "event",
            TriggerKind::Schedule { .. } => "schedule",
            TriggerKind::Alert { .. } => "alert",
        }
    }
}

/// The object the steps act on.
#[derive(Debug, Clone)]
pub struct Target {
    /// Its kind.
    pub kind: TargetKind,
    /// Its namespace (absent for cluster-scoped kinds).
    pub namespace: Option<Template>,
    /// Its name.
    pub name: Template,
}

/// A validated step.
#[derive(Debug, Clone)]
pub struct Step {
    /// Unique within the playbook.
    pub name: String,
    /// What it runs.
    pub run: StepRun,
    /// Its declared risk (never below the action's intrinsic risk).
    pub risk: Risk,
    /// Run only when this holds.
    pub when: Option<Condition>,
    /// Its parameters, string values as templates.
    pub params: BTreeMap<String, Param>,
    /// Give up after this long.
    pub timeout: Duration,
}

/// What a step runs.
#[derive(Debug, Clone)]
pub enum StepRun {
    /// A built-in action.
    Action(Action),
    /// A WASM component.
    Wasm {
        /// The module's path, resolved against the playbook file.
        module: PathBuf,
        /// The module as it was when the playbook was checked: what runs, whatever the file
        /// holds later (a change to it reloads the playbook, checked again).
        bytes: std::sync::Arc<[u8]>,
        /// The SHA-256 of `bytes`, in hex.
        digest: String,
        /// Its configuration; its strings may hold templates.
        config: TemplatedJson,
        /// Granted capabilities.
        grants: Vec<spec::Capability>,
        /// Actions it may return.
        allowed_actions: Vec<Action>,
        /// What `get` may read, as the playbook lists it; `None` for the default (the
        /// target's kind and Pods, in the target's namespace).
        read: Option<Vec<ReadGrant>>,
    },
}

/// One kind a WASM step's `get` may read, and from where.
#[derive(Debug, Clone)]
pub struct ReadGrant {
    /// The kind, as Kubernetes spells it (one Salve can read).
    pub kind: String,
    /// The namespaces its objects may be read from, as templates filled when the plan is made
    /// (`${target.namespace}` when the playbook lists none); `None` for a cluster-scoped kind.
    pub namespaces: Option<Vec<Template>>,
}

/// A step parameter value.
#[derive(Debug, Clone)]
pub enum Param {
    /// A string with templates.
    Text(Template),
    /// A JSON object or array whose strings may hold templates (`annotations`).
    Json(TemplatedJson),
    /// Any other JSON value.
    Value(serde_json::Value),
}

/// A JSON value whose strings, at any depth, may hold `${...}` templates (parsed at load,
/// filled when the plan is made), such as a WASM step's `config`.
#[derive(Debug, Clone, Default)]
pub struct TemplatedJson {
    /// The value as written.
    pub value: serde_json::Value,
    /// Its strings that hold templates, by JSON pointer within `value`.
    pub templates: Vec<(String, Template)>,
}

impl TemplatedJson {
    /// The value with every template rendered by `fill` (given the template and its pointer
    /// within the value); the first error stops it.
    pub fn render<E>(
        &self,
        mut fill: impl FnMut(&Template, &str) -> Result<String, E>,
    ) -> Result<serde_json::Value, E> {
        let mut value = self.value.clone();
        for (pointer, template) in &self.templates {
            let text = fill(template, pointer)?;
            if let Some(slot) = value.pointer_mut(pointer) {
                *slot = serde_json::Value::String(text);
            }
        }
        Ok(value)
    }
}

/// The check after the steps.
#[derive(Debug, Clone)]
pub struct Verify {
    /// PromQL with templates.
    pub promql: Template,
    /// How long to wait for it.
    pub within: Duration,
}

/// A validated trigger test.
#[derive(Debug, Clone)]
pub struct PlaybookTest {
    /// Its name.
    pub name: String,
    /// Spacing between samples.
    pub interval: Duration,
    /// Series selector to expanded samples.
    pub series: Vec<(String, Vec<Sample>)>,
    /// Alerts sent during the test: offset and labels.
    pub alerts: Vec<(Duration, BTreeMap<String, String>)>,
    /// What the Kubernetes API reports during the test, for `event` triggers.
    pub events: Vec<TestEvent>,
    /// What the cluster would say, for planning (`expect.steps`).
    pub facts: crate::plan::Facts,
    /// The objects the test's Kubernetes API holds, for WASM steps that `get`.
    pub objects: Vec<serde_json::Value>,
    /// How long before the check the target's revision was rolled out, when given.
    pub revision_age: Option<Duration>,
    /// The expected outcome.
    pub expect: spec::TestExpectation,
    /// When the expectation is checked, from the start.
    pub at: Option<Duration>,
}

/// A validated Kubernetes event of a trigger test.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestEvent {
    /// When it happens, from the start.
    pub at: Duration,
    /// When a lasting state ends (it holds through it); `None` for an Event.
    pub until: Option<Duration>,
    /// The involved object's kind.
    pub kind: TargetKind,
    /// Its namespace (`None` for a Node).
    pub namespace: Option<String>,
    /// Its name.
    pub name: String,
    /// The reason reported.
    pub reason: String,
    /// The container, for a pod.
    pub container: Option<String>,
}
