//! One evaluation's sandbox: what the step is granted ([`Grants`]), how far it may go
//! ([`Limits`]), what the host may use on its behalf ([`Services`]), and the host side of the
//! capabilities, which checks every call.
//!
//! Every capability is linked; an ungranted one traps when called ("capability `query` is
//! not granted to step `guard`"), which fails that step only. Linking all four and checking
//! the grant per call keeps one compiled instance per module whatever the grants of the steps
//! that use it, and the trap happens at the same moment a missing import would.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use kube::api::{Api, ApiResource, DynamicObject};
use serde::{Deserialize, Serialize};
use wasmtime::ResourceLimiter;

use super::bindings::salve::step::{get, log, now, query, types};
use super::contract::capability_name;
use crate::action::Action;
use crate::clock::Clock;
use crate::playbook::spec::Capability;
use crate::risk::Risk;
use crate::signal::evaluate::Evaluator;

/// What the playbook grants a step.
#[derive(Debug, Clone, PartialEq)]
pub struct Grants {
    /// The capabilities it may call; calling another traps.
    pub capabilities: Vec<Capability>,
    /// The actions it may ask for; an answer with another is refused whole.
    pub allowed_actions: Vec<Action>,
    /// The step's declared risk: every action it asks for is at least this risky.
    pub risk: Risk,
    /// The objects `get` may read.
    pub readable: Readable,
}

impl Grants {
    /// Grants `capabilities` and `allowed_actions` to a step of `risk`; `get` may read nothing
    /// until [`Grants::readable`] says what.
    pub fn new(capabilities: Vec<Capability>, allowed_actions: Vec<Action>, risk: Risk) -> Self {
        Grants {
            capabilities,
            allowed_actions,
            risk,
            readable: Readable::default(),
        }
    }

    fn has(&self, capability: Capability) -> bool {
        self.capabilities.contains(&capability)
    }
}

/// The Kubernetes objects `get` may read: kinds, each with the namespaces its objects may be
/// read from. Secrets are never readable.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Readable {
    /// Kinds as Kubernetes spells them (`Deployment`, `Pod`, `Node`), each with the namespaces
    /// its objects may be read from; `None` for a cluster-scoped kind (`Node`).
    pub kinds: BTreeMap<String, Option<BTreeSet<String>>>,
}

impl Readable {
    /// Each of `kinds`, a namespaced one (or one Salve cannot read) in each of `namespaces`, a
    /// cluster-scoped one without a namespace.
    pub fn each_in(
        kinds: impl IntoIterator<Item = String>,
        namespaces: impl IntoIterator<Item = String>,
    ) -> Self {
        let namespaces: BTreeSet<String> = namespaces.into_iter().collect();
        Readable {
            kinds: kinds
                .into_iter()
                .map(|kind| {
                    let namespaces =
                        (Readable::namespaced(&kind) != Some(false)).then(|| namespaces.clone());
                    (kind, namespaces)
                })
                .collect(),
        }
    }

    /// The kinds Salve can read for a step, as Kubernetes spells them (never `Secret`).
    pub fn supported_kinds() -> impl Iterator<Item = &'static str> {
        READABLE_KINDS.iter().map(|k| k.kind)
    }

    /// Whether objects of `kind` live in a namespace; `None` when Salve cannot read `kind`.
    pub fn namespaced(kind: &str) -> Option<bool> {
        readable_kind(kind).map(|k| k.namespaced)
    }

    /// Why reading `kind` in `namespace` is refused, or `None` when it is allowed.
    fn refusal(&self, kind: &str, namespace: Option<&str>, namespaced: bool) -> Option<String> {
        let Some(namespaces) = self.kinds.get(kind) else {
            return Some(format!(
                "kind `{kind}` is not readable by this step (readable: {self})"
            ));
        };
        let readable_here = || {
            let only = Readable {
                kinds: [(kind.to_string(), namespaces.clone())].into(),
            };
            format!("readable: {only}")
        };
        match (namespaced, namespace) {
            (true, None) => Some(format!(
                "kind `{kind}` is namespaced: name a namespace ({})",
                readable_here()
            )),
            (true, Some(namespace))
                if !namespaces.as_ref().is_some_and(|n| n.contains(namespace)) =>
            {
                Some(format!(
                    "kind `{kind}` is not readable in namespace `{namespace}` by this step ({})",
                    readable_here()
                ))
            }
            (false, Some(_)) => Some(format!("kind `{kind}` is cluster-scoped: no namespace")),
            _ => None,
        }
    }
}

/// `Deployment in shop; Node; Pod in payments, shop` (`nothing` when empty).
impl std::fmt::Display for Readable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.kinds.is_empty() {
            return f.write_str("nothing");
        }
        for (i, (kind, namespaces)) in self.kinds.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            f.write_str(kind)?;
            match namespaces {
                None => {}
                Some(namespaces) if namespaces.is_empty() => f.write_str(" in no namespace")?,
                Some(namespaces) => {
                    let list: Vec<&str> = namespaces.iter().map(String::as_str).collect();
                    write!(f, " in {}", list.join(", "))?;
                }
            }
        }
        Ok(())
    }
}

/// How far one evaluation may go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Wall-clock time for the whole evaluation, host calls included.
    pub timeout: Duration,
    /// Linear memory, in bytes (never more than the host's [`super::HostOptions::max_memory`]).
    pub memory: usize,
    /// PromQL queries per evaluation.
    pub max_queries: u32,
    /// The longest one host call (a query, a read) may take, within what is left of `timeout`.
    pub host_call_timeout: Duration,
    /// The longest string that may cross the boundary, in bytes.
    pub max_string: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            timeout: Duration::from_secs(1),
            memory: 64 << 20,
            max_queries: 10,
            host_call_timeout: Duration::from_secs(5),
            max_string: 1 << 20,
        }
    }
}

/// What the host may use on a step's behalf.
#[derive(Clone, Default)]
pub struct Services {
    /// The Prometheus `query` runs against.
    pub prometheus: Option<Evaluator>,
    /// The Kubernetes API `get` reads from.
    pub kube: Option<kube::Client>,
    /// The engine's clock (`now`, and the time of queries).
    pub clock: Clock,
}

impl std::fmt::Debug for Services {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Services")
            .field("prometheus", &self.prometheus)
            .field("kube", &self.kube.as_ref().map(|_| "kube::Client"))
            .field("clock", &self.clock)
            .finish()
    }
}

/// A line a step logged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LogLine {
    /// Its level: `debug`, `info`, `warn` or `error`.
    pub level: &'static str,
    /// The message (cut to 4 KiB).
    pub message: String,
}

/// The longest log line kept, in bytes.
pub(super) const MAX_LOG_LINE: usize = 4 * 1024;

/// The most log lines kept per evaluation; later ones are counted, not kept.
pub(super) const MAX_LOG_LINES: usize = 256;

/// The most samples a query returns to a step.
pub(super) const MAX_SAMPLES: usize = 10_000;

/// A call to a capability the step was not granted (the trap's cause).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("capability `{}` is not granted to step `{step}`", capability_name(*capability))]
pub(super) struct NotGranted {
    pub(super) capability: Capability,
    pub(super) step: String,
}

/// A host call the sandbox refused to serve (the trap's cause).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub(super) struct Misuse(pub(super) String);

/// A memory or table growth beyond the limit (the trap's cause).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{what} would grow to {desired} (limit {limit})")]
pub(super) struct LimitExceeded {
    pub(super) what: &'static str,
    pub(super) desired: usize,
    pub(super) limit: usize,
}

/// The limiter of one Store: growth beyond a limit traps (rather than failing quietly into a
/// bare `unreachable`), with a cause the host recognises.
#[derive(Debug)]
pub(super) struct Limiter {
    pub(super) memory: usize,
    pub(super) table_elements: usize,
}

/// Instances, tables and memories per Store: generous for a component built by
/// wit-bindgen (a few core instances), far below what could hurt.
const MAX_INSTANCES: usize = 16;
const MAX_TABLES: usize = 16;
const MAX_MEMORIES: usize = 4;
const MAX_TABLE_ELEMENTS: usize = 100_000;

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory {
            return Err(wasmtime::Error::new(LimitExceeded {
                what: "memory",
                desired,
                limit: self.memory,
            }));
        }
        Ok(true)
    }

    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        Err(error.context(LimitExceeded {
            what: "memory",
            desired: self.memory,
            limit: self.memory,
        }))
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.table_elements {
            return Err(wasmtime::Error::new(LimitExceeded {
                what: "a table",
                desired,
                limit: self.table_elements,
            }));
        }
        Ok(true)
    }

    fn table_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        Err(error)
    }

    fn instances(&self) -> usize {
        MAX_INSTANCES
    }

    fn tables(&self) -> usize {
        MAX_TABLES
    }

    fn memories(&self) -> usize {
        MAX_MEMORIES
    }
}

/// The data of one evaluation's Store: the host side of the capabilities.
pub(super) struct StepState {
    pub(super) step: String,
    pub(super) incident: String,
    pub(super) grants: Grants,
    pub(super) limits: Limits,
    pub(super) services: Services,
    pub(super) limiter: Limiter,
    pub(super) deadline: Instant,
    pub(super) logs: Vec<LogLine>,
    pub(super) dropped_logs: usize,
    pub(super) queries: u32,
}

impl StepState {
    /// The state of one evaluation of `step`, its deadline counted from now.
    pub(super) fn new(
        step: String,
        incident: String,
        grants: Grants,
        limits: Limits,
        services: Services,
    ) -> Self {
        StepState {
            step,
            incident,
            grants,
            limits,
            services,
            limiter: Limiter {
                memory: limits.memory,
                table_elements: MAX_TABLE_ELEMENTS,
            },
            deadline: Instant::now() + limits.timeout,
            logs: Vec::new(),
            dropped_logs: 0,
            queries: 0,
        }
    }

    /// Traps unless `capability` is granted.
    fn require(&self, capability: Capability) -> wasmtime::Result<()> {
        if self.grants.has(capability) {
            Ok(())
        } else {
            Err(wasmtime::Error::new(NotGranted {
                capability,
                step: self.step.clone(),
            }))
        }
    }

    /// Traps when a string from the guest is longer than allowed.
    fn check_len(&self, what: &str, text: &str) -> wasmtime::Result<()> {
        if text.len() > self.limits.max_string {
            return Err(wasmtime::Error::new(Misuse(format!(
                "{what} is {} bytes long; at most {} may cross the boundary",
                text.len(),
                self.limits.max_string
            ))));
        }
        Ok(())
    }

    /// How long the next host call may take: what is left of the deadline, at most the
    /// per-call limit.
    fn call_budget(&self) -> Duration {
        self.deadline
            .saturating_duration_since(Instant::now())
            .min(self.limits.host_call_timeout)
    }

    /// The collected log lines, with a note of how many were dropped.
    pub(super) fn take_logs(&mut self) -> Vec<LogLine> {
        let mut logs = std::mem::take(&mut self.logs);
        if self.dropped_logs > 0 {
            logs.push(LogLine {
                level: "warn",
                message: format!(
                    "{} more log line(s) dropped (at most {MAX_LOG_LINES} are kept)",
                    self.dropped_logs
                ),
            });
        }
        logs
    }
}

impl types::Host for StepState {}

impl log::Host for StepState {
    async fn log(&mut self, level: log::Level, mut message: String) -> wasmtime::Result<()> {
        self.require(Capability::Log)?;
        if message.len() > MAX_LOG_LINE {
            let mut end = MAX_LOG_LINE;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
            message.push_str("… (cut)");
        }
        let (step, incident) = (self.step.as_str(), self.incident.as_str());
        let level = match level {
            log::Level::Debug => {
                tracing::debug!(step, incident, "{message}");
                "debug"
            }
            log::Level::Info => {
                tracing::info!(step, incident, "{message}");
                "info"
            }
            log::Level::Warn => {
                tracing::warn!(step, incident, "{message}");
                "warn"
            }
            log::Level::Error => {
                tracing::error!(step, incident, "{message}");
                "error"
            }
        };
        if self.logs.len() < MAX_LOG_LINES {
            self.logs.push(LogLine { level, message });
        } else {
            self.dropped_logs += 1;
        }
        Ok(())
    }
}

impl now::Host for StepState {
    async fn unix_ms(&mut self) -> wasmtime::Result<i64> {
        self.require(Capability::Now)?;
        Ok(self.services.clock.now().timestamp_millis())
    }
}

impl query::Host for StepState {
    async fn query(
        &mut self,
        promql: String,
    ) -> wasmtime::Result<Result<Vec<query::Sample>, String>> {
        self.require(Capability::Query)?;
        self.check_len("the query", &promql)?;
        if self.queries >= self.limits.max_queries {
            return Ok(Err(format!(
                "query limit reached: at most {} queries per evaluation",
                self.limits.max_queries
            )));
        }
        self.queries += 1;
        let Some(prometheus) = &self.services.prometheus else {
            return Ok(Err("no Prometheus is configured".to_string()));
        };
        let budget = self.call_budget();
        let at = self.services.clock.now();
        let samples = match tokio::time::timeout(budget, prometheus.instant(&promql, at)).await {
            Err(_) => return Ok(Err(format!("the query timed out after {budget:?}"))),
            Ok(Err(error)) => return Ok(Err(error)),
            Ok(Ok(samples)) => samples,
        };
        if samples.len() > MAX_SAMPLES {
            return Ok(Err(format!(
                "the query returned {} series; at most {MAX_SAMPLES} are handed to a step",
                samples.len()
            )));
        }
        Ok(Ok(samples
            .into_iter()
            .map(|s| query::Sample {
                labels: super::input::labels(&s.labels),
                value: s.value,
            })
            .collect()))
    }
}

impl get::Host for StepState {
    async fn get(
        &mut self,
        kind: String,
        namespace: Option<String>,
        name: String,
    ) -> wasmtime::Result<Result<String, String>> {
        self.require(Capability::Get)?;
        self.check_len("the kind", &kind)?;
        self.check_len("the name", &name)?;
        if let Some(namespace) = &namespace {
            self.check_len("the namespace", namespace)?;
        }
        if kind == "Secret" {
            return Ok(Err("Secrets are never readable by a step".to_string()));
        }
        let Some((resource, namespaced)) = readable_resource(&kind) else {
            return Ok(Err(format!("Salve cannot read kind `{kind}`")));
        };
        if let Some(refusal) = self
            .grants
            .readable
            .refusal(&kind, namespace.as_deref(), namespaced)
        {
            return Ok(Err(refusal));
        }
        let Some(client) = self.services.kube.clone() else {
            return Ok(Err(
                "no Kubernetes API to read from: in `salve test`, a test has one when it lists \
                 `facts.objects`; `salve step run` needs `--kube`"
                    .to_string(),
            ));
        };
        let api: Api<DynamicObject> = match &namespace {
            Some(namespace) => Api::namespaced_with(client, namespace, &resource),
            None => Api::all_with(client, &resource),
        };
        let budget = self.call_budget();
        let object = match tokio::time::timeout(budget, api.get_opt(&name)).await {
            Err(_) => return Ok(Err(format!("the read timed out after {budget:?}"))),
            Ok(Err(error)) => return Ok(Err(format!("the read failed: {error}"))),
            Ok(Ok(None)) => return Ok(Err(format!("{kind} `{name}` not found"))),
            Ok(Ok(Some(object))) => object,
        };
        let mut json = match serde_json::to_value(&object) {
            Ok(json) => json,
            Err(error) => return Ok(Err(format!("cannot encode the object: {error}"))),
        };
        if let Some(metadata) = json.get_mut("metadata").and_then(|m| m.as_object_mut()) {
            metadata.remove("managedFields");
        }
        let text = json.to_string();
        if text.len() > self.limits.max_string {
            return Ok(Err(format!(
                "the object is {} bytes long as JSON; at most {} may cross the boundary",
                text.len(),
                self.limits.max_string
            )));
        }
        Ok(Ok(text))
    }
}

/// A kind a step may read: its name, whether it is namespaced, and its API resource.
struct ReadableKind {
    kind: &'static str,
    namespaced: bool,
    resource: fn() -> ApiResource,
}

/// Every kind a step may read (never `Secret`).
const READABLE_KINDS: &[ReadableKind] = {
    use k8s_openapi::api::{apps, autoscaling, batch, core, policy};
    const fn kind<K: kube::Resource<DynamicType = ()>>(
        kind: &'static str,
        namespaced: bool,
    ) -> ReadableKind {
        ReadableKind {
            kind,
            namespaced,
            resource: || ApiResource::erase::<K>(&()),
        }
    }
    &[
        kind::<apps::v1::Deployment>("Deployment", true),
        kind::<apps::v1::StatefulSet>("StatefulSet", true),
        kind::<apps::v1::DaemonSet>("DaemonSet", true),
        kind::<apps::v1::ReplicaSet>("ReplicaSet", true),
        kind::<batch::v1::Job>("Job", true),
        kind::<core::v1::Pod>("Pod", true),
        kind::<core::v1::Service>("Service", true),
        kind::<core::v1::ConfigMap>("ConfigMap", true),
        kind::<core::v1::Event>("Event", true),
        kind::<core::v1::PersistentVolumeClaim>("PersistentVolumeClaim", true),
        kind::<policy::v1::PodDisruptionBudget>("PodDisruptionBudget", true),
        kind::<autoscaling::v2::HorizontalPodAutoscaler>("HorizontalPodAutoscaler", true),
        kind::<core::v1::Node>("Node", false),
        kind::<core::v1::Namespace>("Namespace", false),
    ]
};

fn readable_kind(kind: &str) -> Option<&'static ReadableKind> {
    READABLE_KINDS.iter().find(|k| k.kind == kind)
}

/// The API resource of a kind a step may read, and whether it is namespaced.
fn readable_resource(kind: &str) -> Option<(ApiResource, bool)> {
    readable_kind(kind).map(|k| ((k.resource)(), k.namespaced))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `kinds`, each with its namespaces (`None`: cluster-scoped).
    fn readable(kinds: &[(&str, Option<&[&str]>)]) -> Readable {
        Readable {
            kinds: kinds
                .iter()
                .map(|(kind, namespaces)| {
                    let namespaces = namespaces.map(|n| n.iter().map(|n| n.to_string()).collect());
                    (kind.to_string(), namespaces)
                })
                .collect(),
        }
    }

    #[test]
    fn each_kind_is_readable_in_its_own_namespaces_only() {
        let readable = readable(&[
            ("Deployment", Some(&["shop"])),
            ("ConfigMap", Some(&["shop", "platform"])),
            ("Node", None),
        ]);
        assert_eq!(readable.refusal("Deployment", Some("shop"), true), None);
        assert_eq!(readable.refusal("ConfigMap", Some("platform"), true), None);
        assert_eq!(readable.refusal("ConfigMap", Some("shop"), true), None);
        // Namespaces are per kind, not a cross product of kinds and namespaces.
        assert_eq!(
            readable.refusal("Deployment", Some("platform"), true),
            Some(
                "kind `Deployment` is not readable in namespace `platform` by this step \
                 (readable: Deployment in shop)"
                    .to_string()
            )
        );
        assert_eq!(
            readable.refusal("Pod", Some("shop"), true),
            Some(
                "kind `Pod` is not readable by this step (readable: ConfigMap in platform, \
                 shop; Deployment in shop; Node)"
                    .to_string()
            )
        );
        assert_eq!(
            readable.refusal("ConfigMap", None, true),
            Some(
                "kind `ConfigMap` is namespaced: name a namespace (readable: ConfigMap in \
                 platform, shop)"
                    .to_string()
            )
        );
    }

    #[test]
    fn each_kind_in_every_namespace_leaves_cluster_scoped_kinds_without() {
        let each = Readable::each_in(
            ["Pod", "Node"].map(String::from),
            ["shop", "payments"].map(String::from),
        );
        assert_eq!(
            each,
            readable(&[("Pod", Some(&["payments", "shop"])), ("Node", None)])
        );
    }

    #[test]
    fn cluster_scoped_kinds_are_read_without_a_namespace() {
        let readable = readable(&[("Node", None), ("Pod", Some(&[]))]);
        assert_eq!(readable.refusal("Node", None, false), None);
        assert_eq!(
            readable.refusal("Node", Some("shop"), false),
            Some("kind `Node` is cluster-scoped: no namespace".to_string())
        );
        // A namespaced kind listed without namespaces (a cluster-scoped target's default
        // Pods) is readable nowhere.
        assert_eq!(
            readable.refusal("Pod", Some("shop"), true),
            Some(
                "kind `Pod` is not readable in namespace `shop` by this step (readable: Pod in \
                 no namespace)"
                    .to_string()
            )
        );
        assert_eq!(
            Readable::default().refusal("Node", None, false),
            Some("kind `Node` is not readable by this step (readable: nothing)".to_string())
        );
    }

    fn state(capabilities: Vec<Capability>) -> StepState {
        StepState::new(
            "guard".into(),
            "inc-1".into(),
            Grants::new(capabilities, Vec::new(), Risk::None),
            Limits::default(),
            Services::default(),
        )
    }

    #[test]
    fn queries_are_rate_limited_per_evaluation() {
        use futures_util::FutureExt;
        let mut state = state(vec![Capability::Query]);
        for _ in 0..Limits::default().max_queries {
            let answer = query::Host::query(&mut state, "up".into())
                .now_or_never()
                .expect("ready")
                .expect("no trap");
            assert_eq!(
                answer.expect_err("no Prometheus"),
                "no Prometheus is configured"
            );
        }
        let answer = query::Host::query(&mut state, "up".into())
            .now_or_never()
            .expect("ready")
            .expect("no trap");
        assert!(
            answer
                .expect_err("limited")
                .starts_with("query limit reached")
        );
    }

    #[test]
    fn ungranted_capabilities_and_oversized_strings_trap() {
        use futures_util::FutureExt;
        let mut state = state(vec![Capability::Get]);
        let trap = now::Host::unix_ms(&mut state)
            .now_or_never()
            .expect("ready")
            .expect_err("trap");
        assert_eq!(
            trap.to_string(),
            "capability `now` is not granted to step `guard`"
        );
        let huge = "x".repeat(Limits::default().max_string + 1);
        let trap = get::Host::get(&mut state, "Pod".into(), None, huge)
            .now_or_never()
            .expect("ready")
            .expect_err("trap");
        assert!(trap.downcast_ref::<Misuse>().is_some(), "{trap}");
        let refused = get::Host::get(&mut state, "Secret".into(), Some("prod".into()), "x".into())
            .now_or_never()
            .expect("ready")
            .expect("no trap");
        assert!(refused.is_err());
    }

    #[test]
    fn log_lines_are_cut_and_counted() {
        use futures_util::FutureExt;
        let mut state = state(vec![Capability::Log]);
        for _ in 0..MAX_LOG_LINES + 3 {
            log::Host::log(&mut state, log::Level::Info, "é".repeat(MAX_LOG_LINE))
                .now_or_never()
                .expect("ready")
                .expect("logged");
        }
        let logs = state.take_logs();
        assert_eq!(logs.len(), MAX_LOG_LINES + 1);
        assert!(logs[0].message.ends_with("… (cut)"));
        assert!(
            logs[MAX_LOG_LINES]
                .message
                .starts_with("3 more log line(s) dropped")
        );
    }

    #[test]
    fn secrets_have_no_readable_resource() {
        assert!(readable_resource("Secret").is_none());
        assert!(Readable::supported_kinds().all(|k| k != "Secret"));
        assert!(readable_resource("Deployment").is_some());
    }

    #[test]
    fn the_readable_kinds_name_their_resources_and_scopes() {
        for kind in Readable::supported_kinds() {
            let (resource, namespaced) = readable_resource(kind).expect("a resource");
            assert_eq!(resource.kind, kind);
            assert_eq!(Readable::namespaced(kind), Some(namespaced));
        }
        assert_eq!(Readable::namespaced("Node"), Some(false));
        assert_eq!(Readable::namespaced("Namespace"), Some(false));
        assert_eq!(Readable::namespaced("PodDisruptionBudget"), Some(true));
        assert_eq!(Readable::namespaced("Secret"), None);
        assert_eq!(Readable::namespaced("Widget"), None);
    }
}
