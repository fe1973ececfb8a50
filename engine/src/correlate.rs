//! Deterministic correlation: which of an incident's signals belong together, and which of
//! them is the root cause — without any model.
//!
//! It is the baseline an SRE applies at a glance, and the one the LLM advisor is measured
//! against (`salve advise-eval`). It is simple on purpose, and known to be wrong on some
//! cascades (a slow database behind a latency alert that fired first, a noisy neighbour behind
//! a node's memory pressure): that is what the labelled scenarios measure.
//!
//! **What a signal is about** is read from its labels:
//! - its **node**: `node`, `kubernetes_node`; the host of `instance` (without the port) only
//!   when the signal names no node, pod or workload (node-exporter's series), since a pod's
//!   `instance` is the pod's own address;
//! - its **namespace**: `namespace`;
//! - its **workloads**: `deployment`, `statefulset`, `daemonset`, `job_name`,
//!   `app_kubernetes_io_name`, `app`, `service`, and the owner of `pod` (the pod name without
//!   its pod suffix and ReplicaSet hash: `api-7d9f8b6c5-x2k4p` → `api`, `redis-0` → `redis`),
//!   each within the signal's namespace;
//! - the workloads it **depends on**: `upstream`, `peer_service`, `destination_workload`,
//!   `destination_service_name`, `destination_service` (`postgres.data.svc:5432` → workload
//!   `postgres` of namespace `data`; a bare name is in the signal's own namespace).
//!
//! **Related** signals are those connected to the incident's own signal (`sig-1`) through a
//! shared node, namespace or workload, or a dependency of one on the other's workload,
//! transitively.
//!
//! **The root** is the related signal of the broadest scope — node > shared (a namespace-wide
//! signal, or a workload another related signal depends on) > workload > a signal that names
//! none of these; a signal naming a workload is workload-scoped even with a node label (a pod
//! on a node), one naming only a node is node-scoped — and among those, the one that started
//! first (a signal without a start time counts as the latest), then the first in brief order.
//! A **recent rollout** counts as a *deploy* cause: when the target's current revision was
//! created at most [`RECENT_DEPLOY`] before the earliest related signal, the first related
//! signal on the target's own workload (sig-1's) counts as having started when the revision
//! was created.
//! Nothing else is read: not the events, not the logs.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

use crate::advisor::brief::Brief;
use crate::advisor::context::{Revision, Signal};
use crate::check::format_duration;

/// How long before the earliest related signal a rollout still counts as its cause.
pub const RECENT_DEPLOY: Duration = Duration::from_secs(60 * 60);

/// The labels naming a workload, in the order the first found names the signal's subject.
const WORKLOAD_LABELS: &[&str] = &[
    "deployment",
    "statefulset",
    "daemonset",
    "job_name",
    "app_kubernetes_io_name",
    "app",
    "service",
];

/// The labels naming a workload the signal's own depends on.
const DEPENDENCY_LABELS: &[&str] = &[
    "upstream",
    "peer_service",
    "destination_workload",
    "destination_service_name",
    "destination_service",
];

/// The longest label value quoted in [`Correlation::shared`] and [`Correlation::reason`].
const MAX_NAME_CHARS: usize = 63;

/// Which signals of a brief are related to the incident's own, and which is the root cause.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Correlation {
    /// Index into `brief.signals` of the root cause.
    pub root: usize,
    /// Indices of the signals related to the incident (root and sig-1 included), in brief
    /// order.
    pub related: Vec<usize>,
    /// What they share: `node node-3`, `namespace shop`, `workload shop/api`,
    /// `dependency data/postgres`.
    pub shared: Vec<String>,
    /// One short paragraph, for people and for the LLM's context: why this root.
    pub reason: String,
}

/// How broad what a signal is about is; the broadest related one is the root.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Scope {
    /// Names no node, namespace or workload.
    Unscoped,
    /// One workload (or its pods).
    Workload,
    /// A whole namespace, or a workload other related signals depend on.
    Shared,
    /// A node, and so every pod on it.
    Node,
}

/// A workload: its namespace (empty when the signal has none) and name.
type Workload = (String, String);

/// What a signal is about, read from its labels.
#[derive(Debug, Default)]
struct Subject {
    nodes: BTreeSet<String>,
    namespace: Option<String>,
    /// Its workloads, the first named by [`WORKLOAD_LABELS`]' order first.
    workloads: Vec<Workload>,
    dependencies: BTreeSet<Workload>,
}

impl Subject {
    fn of(signal: &Signal) -> Subject {
        let labels = &signal.labels;
        let label = |name: &str| labels.get(name).filter(|v| !v.is_empty());
        let namespace = label("namespace").cloned();
        let ns = namespace.clone().unwrap_or_default();
        let mut workloads: Vec<Workload> = Vec::new();
        let mut add = |name: &str| {
            let key = (ns.clone(), name.to_string());
            if !workloads.contains(&key) {
                workloads.push(key);
            }
        };
        for name in WORKLOAD_LABELS.iter().filter_map(|l| label(l)) {
            add(name);
        }
        if let Some(pod) = label("pod") {
            add(pod_owner(pod));
        }
        let mut nodes: BTreeSet<String> = ["node", "kubernetes_node"]
            .iter()
            .filter_map(|l| label(l).cloned())
            .collect();
        if nodes.is_empty()
            && workloads.is_empty()
            && let Some(instance) = label("instance")
        {
            nodes.insert(host(instance).to_string());
        }
        let dependencies = DEPENDENCY_LABELS
            .iter()
            .filter_map(|l| label(l))
            .map(|value| dependency(value, &ns))
            .collect();
        Subject {
            nodes,
            namespace,
            workloads,
            dependencies,
        }
    }

    /// The scope before dependencies are known.
    fn own_scope(&self) -> Scope {
        if !self.workloads.is_empty() {
            Scope::Workload
        } else if !self.nodes.is_empty() {
            Scope::Node
        } else if self.namespace.is_some() {
            Scope::Shared
        } else {
            Scope::Unscoped
        }
    }

    /// Whether the two share a node, a namespace or a workload, or one depends on the other.
    fn related(&self, other: &Subject) -> bool {
        !self.nodes.is_disjoint(&other.nodes)
            || (self.namespace.is_some() && self.namespace == other.namespace)
            || self.workloads.iter().any(|w| other.workloads.contains(w))
            || self.depends_on(other)
            || other.depends_on(self)
    }

    fn depends_on(&self, other: &Subject) -> bool {
        other
            .workloads
            .iter()
            .any(|w| self.dependencies.contains(w) && !self.workloads.contains(w))
    }

    /// `workload shop/api`, `node node-3`, `namespace shop`.
    fn describe(&self) -> String {
        if let Some(workload) = self.workloads.first() {
            format!("workload {}", workload_name(workload))
        } else if let Some(node) = self.nodes.first() {
            format!("node {}", name(node))
        } else if let Some(namespace) = &self.namespace {
            format!("namespace {}", name(namespace))
        } else {
            "no node, namespace or workload".to_string()
        }
    }
}

/// Correlates the signals of `brief`: which are related to the incident's own (the first),
/// and which of them is the root cause (see the module's documentation for the rule).
pub fn correlate(brief: &Brief) -> Correlation {
    let signals = &brief.signals;
    if signals.is_empty() {
        return Correlation {
            root: 0,
            related: Vec::new(),
            shared: Vec::new(),
            reason: "no signal to correlate".to_string(),
        };
    }
    let subjects: Vec<Subject> = signals.iter().map(Subject::of).collect();
    let related = component(&subjects);

    // A related workload another related signal depends on is shared by them.
    let depended: BTreeSet<usize> = related
        .iter()
        .copied()
        .filter(|&i| {
            related
                .iter()
                .any(|&j| j != i && subjects[j].depends_on(&subjects[i]))
        })
        .collect();
    let scope = |i: usize| {
        let own = subjects[i].own_scope();
        if depended.contains(&i) {
            own.max(Scope::Shared)
        } else {
            own
        }
    };

    let earliest = related.iter().filter_map(|&i| signals[i].since).min();
    let deploy = recent_deploy(brief, earliest).and_then(|revision| {
        let target = subjects[0].workloads.first()?;
        let on_target = related
            .iter()
            .copied()
            .find(|&i| subjects[i].workloads.contains(target))?;
        Some((on_target, revision))
    });
    let start = |i: usize| match deploy {
        Some((j, revision)) if j == i => revision.at,
        _ => signals[i].since,
    };

    let root = related
        .iter()
        .copied()
        .min_by_key(|&i| (std::cmp::Reverse(scope(i)), start(i).is_none(), start(i), i))
        .unwrap_or(0);

    let shared = shared(&subjects, &related, &depended);
    let mut reason = String::new();
    let id = |i: usize| format!("sig-{}", i + 1);
    let _ = write!(
        reason,
        "{} ({} on {})",
        id(root),
        what(&signals[root]),
        subjects[root].describe()
    );
    if signals.len() == 1 {
        reason.push_str(" is the only signal.");
        return Correlation {
            root,
            related,
            shared,
            reason,
        };
    }
    if related.len() == 1 {
        let others = signals.len() - 1;
        let _ = write!(
            reason,
            " shares no node, namespace or workload with the other {} firing: it is its own \
             root cause.",
            plural(others, "signal", "signals")
        );
        return Correlation {
            root,
            related,
            shared,
            reason,
        };
    }

    let list = |ids: &[usize]| ids.iter().map(|&i| id(i)).collect::<Vec<_>>().join(", ");
    let others: Vec<usize> = related.iter().copied().filter(|&i| i != root).collect();
    let n = related.len();
    let all = list(&related);
    let root_scope = scope(root);
    match root_scope {
        Scope::Node => {
            let on_node: Vec<usize> = others
                .iter()
                .copied()
                .filter(|&i| !subjects[i].nodes.is_disjoint(&subjects[root].nodes))
                .collect();
            let _ = write!(
                reason,
                " is node-scoped, the broadest scope among the {n} related signals ({all})"
            );
            if !on_node.is_empty() {
                let _ = write!(
                    reason,
                    ": {} {} there",
                    list(&on_node),
                    verb(on_node.len(), "runs", "run")
                );
            }
        }
        Scope::Shared if depended.contains(&root) => {
            let dependents: Vec<usize> = others
                .iter()
                .copied()
                .filter(|&i| subjects[i].depends_on(&subjects[root]))
                .collect();
            let _ = write!(
                reason,
                " is on a shared dependency, the broadest scope among the {n} related signals \
                 ({all}): {} {} on it",
                list(&dependents),
                verb(dependents.len(), "depends", "depend")
            );
        }
        Scope::Shared => {
            let _ = write!(
                reason,
                " covers the whole namespace, the broadest scope among the {n} related signals \
                 ({all})"
            );
        }
        Scope::Workload | Scope::Unscoped => {
            let _ = write!(
                reason,
                " is one of {n} related signals ({all}), none of them node- or namespace-wide"
            );
        }
    }
    reason.push('.');
    let same_scope = related.iter().filter(|&&i| scope(i) == root_scope).count();
    let first_started = related
        .iter()
        .copied()
        .filter(|&i| start(i).is_some())
        .min_by_key(|&i| (start(i), i));
    let deployed = deploy.map(|(on_target, revision)| {
        let before = earliest
            .zip(revision.at)
            .and_then(|(e, at)| (e - at).to_std().ok())
            .unwrap_or_default();
        format!(
            "revision {}, rolled out {} before the first signal, counts as a deploy cause and \
             as the start of {}",
            revision.revision,
            format_duration(before),
            id(on_target)
        )
    });
    match (first_started, &deployed) {
        (Some(first), Some(deployed))
            if first == root && deploy.is_some_and(|(j, _)| j == root) =>
        {
            let _ = write!(reason, " It is the first to start: {deployed}.");
        }
        (Some(first), _) if first == root => reason.push_str(" It started first."),
        (Some(first), _) if same_scope > 1 && start(root).is_some() => {
            let _ = write!(
                reason,
                " It started first of the {same_scope} with that scope ({} started earlier, at \
                 {}).",
                id(first),
                time(start(first))
            );
        }
        (Some(first), _) => {
            let _ = write!(
                reason,
                " {} started first, at {}, but its scope is narrower.",
                id(first),
                time(start(first))
            );
        }
        (None, _) => reason.push_str(" No start times to compare: it comes first in order."),
    }
    if let (Some(deployed), Some((on_target, _))) = (&deployed, deploy)
        && on_target != root
    {
        let _ = write!(reason, " Also, {deployed}.");
    }
    Correlation {
        root,
        related,
        shared,
        reason,
    }
}

/// The signals connected to the first, in brief order.
fn component(subjects: &[Subject]) -> Vec<usize> {
    let mut seen = vec![false; subjects.len()];
    let mut queue = vec![0];
    seen[0] = true;
    while let Some(i) = queue.pop() {
        for j in 0..subjects.len() {
            if !seen[j] && subjects[i].related(&subjects[j]) {
                seen[j] = true;
                queue.push(j);
            }
        }
    }
    (0..subjects.len()).filter(|&i| seen[i]).collect()
}

/// The target's current revision, when it was created at most [`RECENT_DEPLOY`] before
/// `earliest` (and not after it).
fn recent_deploy(brief: &Brief, earliest: Option<DateTime<Utc>>) -> Option<&Revision> {
    let current = brief
        .revisions
        .iter()
        .find(|r| r.current)
        .or(brief.revisions.first())?;
    let age = (earliest? - current.at?).to_std().ok()?;
    (age <= RECENT_DEPLOY).then_some(current)
}

/// What two or more related signals share, and the dependencies they share.
fn shared(subjects: &[Subject], related: &[usize], depended: &BTreeSet<usize>) -> Vec<String> {
    let mut nodes: BTreeMap<&str, usize> = BTreeMap::new();
    let mut namespaces: BTreeMap<&str, usize> = BTreeMap::new();
    let mut workloads: BTreeMap<&Workload, usize> = BTreeMap::new();
    for &i in related {
        for node in &subjects[i].nodes {
            *nodes.entry(node).or_default() += 1;
        }
        if let Some(namespace) = &subjects[i].namespace {
            *namespaces.entry(namespace).or_default() += 1;
        }
        for workload in &subjects[i].workloads {
            *workloads.entry(workload).or_default() += 1;
        }
    }
    let mut shared: Vec<String> = Vec::new();
    shared.extend(
        nodes
            .iter()
            .filter(|(_, n)| **n > 1)
            .map(|(node, _)| format!("node {}", name(node))),
    );
    shared.extend(
        namespaces
            .iter()
            .filter(|(_, n)| **n > 1)
            .map(|(ns, _)| format!("namespace {}", name(ns))),
    );
    shared.extend(
        workloads
            .iter()
            .filter(|(_, n)| **n > 1)
            .map(|(w, _)| format!("workload {}", workload_name(w))),
    );
    for &i in depended {
        for workload in &subjects[i].workloads {
            let depends = related
                .iter()
                .any(|&j| subjects[j].dependencies.contains(workload));
            let entry = format!("dependency {}", workload_name(workload));
            if depends && !shared.contains(&entry) {
                shared.push(entry);
            }
        }
    }
    shared
}

/// The owner of a pod named `name`: the name without its pod suffix (5 characters of
/// Kubernetes' safe alphabet, or a StatefulSet's ordinal), then without the ReplicaSet's
/// pod-template hash or a CronJob's schedule time before it. Never empty; a name that does not
/// look generated is kept whole.
pub fn pod_owner(name: &str) -> &str {
    let Some((rest, suffix)) = name.rsplit_once('-') else {
        return name;
    };
    if rest.is_empty() {
        return name;
    }
    if suffix.bytes().all(|b| b.is_ascii_digit()) && !suffix.is_empty() {
        return rest;
    }
    if !is_generated(suffix, 4..=5) {
        return name;
    }
    match rest.rsplit_once('-') {
        Some((owner, hash)) if !owner.is_empty() && is_generated(hash, 4..=10) => owner,
        Some((owner, digits))
            if !owner.is_empty()
                && digits.len() >= 8
                && digits.bytes().all(|b| b.is_ascii_digit()) =>
        {
            owner
        }
        _ => rest,
    }
}

/// Whether `segment` looks generated by Kubernetes: of a length in `lengths` and either all of
/// its safe alphabet (no vowels, no 0, 1 or 3) at 5 characters or more, or lowercase letters
/// and digits with at least one of each.
fn is_generated(segment: &str, lengths: std::ops::RangeInclusive<usize>) -> bool {
    const SAFE: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let bytes = segment.as_bytes();
    if !lengths.contains(&bytes.len()) {
        return false;
    }
    let safe = bytes.len() >= 5 && bytes.iter().all(|b| SAFE.contains(b));
    let mixed = bytes
        .iter()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && bytes.iter().any(u8::is_ascii_digit)
        && bytes.iter().any(u8::is_ascii_lowercase);
    safe || mixed
}

/// The host of an `instance` label: `node-3:9100` → `node-3`, `[2001:db8::1]:9100` →
/// `2001:db8::1`.
fn host(instance: &str) -> &str {
    if let Some(rest) = instance.strip_prefix('[') {
        return rest.split_once(']').map_or(rest, |(host, _)| host);
    }
    match instance.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => {
            host
        }
        _ => instance,
    }
}

/// The workload a dependency label names: `postgres.data.svc.cluster.local:5432` →
/// `data/postgres`; a bare `postgres` is in `namespace`.
fn dependency(value: &str, namespace: &str) -> Workload {
    let value = host(value);
    let mut parts = value.split('.');
    let workload = parts.next().unwrap_or(value).to_string();
    let ns = parts.next().unwrap_or(namespace).to_string();
    (ns, workload)
}

fn workload_name((namespace, workload): &Workload) -> String {
    if namespace.is_empty() {
        name(workload)
    } else {
        format!("{}/{}", name(namespace), name(workload))
    }
}

/// A label value as quoted: at most [`MAX_NAME_CHARS`] characters, no control characters.
fn name(value: &str) -> String {
    let mut out: String = value
        .chars()
        .take(MAX_NAME_CHARS)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if value.chars().nth(MAX_NAME_CHARS).is_some() {
        out.push('…');
    }
    out
}

fn time(at: Option<DateTime<Utc>>) -> String {
    at.map_or_else(
        || "an unknown time".to_string(),
        |t| t.to_rfc3339_opts(SecondsFormat::Secs, true),
    )
}

/// What fired, in a word: the signal's kind, or for the generic trigger kinds what names it
/// better (an alert's name, an event's reason, the playbook of a PromQL rule).
fn what(signal: &Signal) -> String {
    let label = |l: &str| signal.labels.get(l).filter(|v| !v.is_empty());
    let better = match signal.kind.as_str() {
        "alert" => label("alertname"),
        "event" => label("reason"),
        "promql" => None,
        _ => return name(&signal.kind),
    };
    let text = better
        .or((!signal.playbook.is_empty()).then_some(&signal.playbook))
        .unwrap_or(&signal.kind);
    name(text)
}

fn verb(n: usize, one: &'static str, many: &'static str) -> &'static str {
    if n == 1 { one } else { many }
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(minute: u32) -> Option<DateTime<Utc>> {
        DateTime::parse_from_rfc3339(&format!("2026-03-02T10:{minute:02}:00Z"))
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }

    fn signal(kind: &str, labels: &[(&str, &str)], since: u32) -> Signal {
        Signal {
            kind: kind.to_string(),
            playbook: kind.replace('_', "-"),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            value: Some(1.0),
            since: at(since),
        }
    }

    fn brief(signals: Vec<Signal>) -> Brief {
        Brief {
            incident: "inc-1".into(),
            signals,
            ..Brief::default()
        }
    }

    #[test]
    fn pod_names_lose_their_generated_suffixes() {
        for (pod, owner) in [
            ("api-7d9f8b6c5-x2k4p", "api"),
            ("api-7d9f-x2k4", "api"),
            ("checkout-canary-5f6d8b9c7-qwxzt", "checkout-canary"),
            ("redis-0", "redis"),
            ("etl-28374650-x7k2p", "etl"),
            ("node-exporter-x7k2p", "node-exporter"),
            ("web-v2-xk9ps", "web-v2"),
            ("api-2024-7d9f8b6c5-x2k4p", "api-2024"),
            ("cart-5c7b-1", "cart-5c7b"),
            ("standalone", "standalone"),
            ("my-service", "my-service"),
            ("-", "-"),
            ("", ""),
        ] {
            assert_eq!(pod_owner(pod), owner, "{pod}");
        }
    }

    #[test]
    fn one_signal_is_its_own_root() {
        let c = correlate(&brief(vec![signal(
            "crash_loop",
            &[("namespace", "shop"), ("pod", "api-7d9f-x2k4")],
            5,
        )]));
        assert_eq!((c.root, c.related.as_slice()), (0, &[0][..]));
        assert!(c.reason.contains("only signal"), "{}", c.reason);
        // Even with nothing at all.
        let c = correlate(&Brief::default());
        assert_eq!(c.root, 0);
        let c = correlate(&brief(vec![Signal::default(), Signal::default()]));
        assert_eq!((c.root, c.related.as_slice()), (0, &[0][..]));
    }

    #[test]
    fn a_node_signal_is_the_root_of_the_pods_on_it() {
        let c = correlate(&brief(vec![
            signal(
                "crash_loop",
                &[
                    ("namespace", "shop"),
                    ("pod", "api-7d9f-x2k4"),
                    ("node", "node-3"),
                ],
                2,
            ),
            signal("node_memory_pressure", &[("node", "node-3")], 5),
            signal(
                "oom",
                &[
                    ("namespace", "search"),
                    ("pod", "solr-0"),
                    ("node", "node-3"),
                ],
                1,
            ),
            signal(
                "error_rate",
                &[("namespace", "billing"), ("service", "ledger")],
                0,
            ),
        ]));
        assert_eq!(c.root, 1);
        assert_eq!(c.related, [0, 1, 2]);
        assert_eq!(c.shared, ["node node-3"]);
        assert_eq!(
            c.reason,
            "sig-2 (node_memory_pressure on node node-3) is node-scoped, the broadest scope \
             among the 3 related signals (sig-1, sig-2, sig-3): sig-1, sig-3 run there. sig-3 \
             started first, at 2026-03-02T10:01:00Z, but its scope is narrower."
        );
    }

    #[test]
    fn a_node_exporter_instance_is_a_node() {
        let c = correlate(&brief(vec![
            signal(
                "crash_loop",
                &[("pod", "api-7d9f-x2k4"), ("node", "10.0.3.7")],
                2,
            ),
            signal("node_load", &[("instance", "10.0.3.7:9100")], 5),
        ]));
        assert_eq!((c.root, c.related.as_slice()), (1, &[0, 1][..]));
    }

    #[test]
    fn among_workloads_the_earliest_is_the_root() {
        let c = correlate(&brief(vec![
            signal("latency", &[("namespace", "shop"), ("service", "api")], 4),
            signal(
                "error_rate",
                &[("namespace", "shop"), ("deployment", "cart")],
                2,
            ),
            signal(
                "crash_loop",
                &[("namespace", "shop"), ("pod", "api-7d9f-x2k4")],
                3,
            ),
        ]));
        assert_eq!(c.root, 1);
        assert_eq!(c.related, [0, 1, 2]);
        assert_eq!(c.shared, ["namespace shop", "workload shop/api"]);
        assert!(c.reason.ends_with("It started first."), "{}", c.reason);
    }

    #[test]
    fn a_shared_dependency_outranks_its_dependents() {
        let c = correlate(&brief(vec![
            signal(
                "latency",
                &[
                    ("namespace", "shop"),
                    ("service", "api"),
                    ("upstream", "postgres.data"),
                ],
                1,
            ),
            signal(
                "alert",
                &[("namespace", "data"), ("statefulset", "postgres")],
                6,
            ),
            signal(
                "promql",
                &[
                    ("namespace", "shop"),
                    ("deployment", "orders"),
                    ("upstream", "postgres.data.svc:5432"),
                ],
                3,
            ),
        ]));
        assert_eq!(c.root, 1);
        assert_eq!(c.related, [0, 1, 2]);
        assert!(
            c.shared.contains(&"dependency data/postgres".to_string()),
            "{:?}",
            c.shared
        );
        assert!(
            c.reason.contains("sig-1, sig-3 depend on it"),
            "{}",
            c.reason
        );
    }

    #[test]
    fn a_recent_rollout_makes_the_target_the_root() {
        let mut b = brief(vec![
            signal(
                "crash_loop",
                &[("namespace", "shop"), ("pod", "api-7d9f-x2k4")],
                6,
            ),
            signal(
                "latency",
                &[("namespace", "shop"), ("service", "frontend")],
                4,
            ),
        ]);
        b.revisions = vec![
            Revision {
                revision: 8,
                current: true,
                at: at(1),
                change: "image api:1.5.0".into(),
            },
            Revision {
                revision: 7,
                current: false,
                at: None,
                change: "image api:1.4.9".into(),
            },
        ];
        let c = correlate(&b);
        assert_eq!(c.root, 0);
        assert!(
            c.reason.contains(
                "It is the first to start: revision 8, rolled out 3m before the first signal, counts as a deploy cause"
            ),
            "{}",
            c.reason
        );
        // A rollout after the first signal, or long before it, is no cause.
        for minute in [5, 0] {
            b.revisions[0].at = at(minute).map(|t| {
                if minute == 0 {
                    t - chrono::Duration::hours(2)
                } else {
                    t
                }
            });
            assert_eq!(correlate(&b).root, 1, "{minute}");
        }
    }

    #[test]
    fn unrelated_signals_stay_out() {
        let c = correlate(&brief(vec![
            signal(
                "crash_loop",
                &[("namespace", "shop"), ("pod", "api-7d9f-x2k4")],
                6,
            ),
            signal("node_not_ready", &[("node", "node-9")], 1),
            signal("cost", &[("namespace", "batch"), ("deployment", "etl")], 0),
        ]));
        assert_eq!((c.root, c.related.as_slice()), (0, &[0][..]));
        assert!(c.shared.is_empty());
        assert!(
            c.reason.contains("with the other 2 signals firing"),
            "{}",
            c.reason
        );
    }

    #[test]
    fn a_signal_without_a_start_counts_as_the_latest() {
        let mut late = signal(
            "error_rate",
            &[("namespace", "shop"), ("service", "api")],
            0,
        );
        late.since = None;
        let c = correlate(&brief(vec![
            late,
            signal("latency", &[("namespace", "shop"), ("service", "web")], 9),
        ]));
        assert_eq!(c.root, 1);
    }

    #[test]
    fn generic_kinds_are_named_by_what_fired() {
        let mut event = signal(
            "event",
            &[("node", "node-9"), ("reason", "NodeNotReady")],
            1,
        );
        event.playbook = "node-not-ready".into();
        let mut alert = signal(
            "alert",
            &[("node", "node-9"), ("alertname", "KubeNodeUnreachable")],
            2,
        );
        alert.playbook = "unreachable".into();
        let mut rule = signal("promql", &[("node", "node-9")], 3);
        rule.playbook = "node-disk-pressure".into();
        let names: Vec<String> = [event, alert, rule].iter().map(what).collect();
        assert_eq!(
            names,
            ["NodeNotReady", "KubeNodeUnreachable", "node-disk-pressure"]
        );
        assert_eq!(what(&signal("crash_loop", &[], 0)), "crash_loop");
    }

    #[test]
    fn long_label_values_are_cut_in_the_text() {
        let long = "n".repeat(500);
        let c = correlate(&brief(vec![
            signal(
                "crash_loop",
                &[("node", &long), ("pod", "api-7d9f-x2k4")],
                6,
            ),
            signal("node_not_ready", &[("node", &long)], 1),
        ]));
        assert_eq!(c.root, 1);
        assert!(c.reason.len() < 400, "{}", c.reason);
        assert!(c.shared[0].ends_with('…'));
    }
}
