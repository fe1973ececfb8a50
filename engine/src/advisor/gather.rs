//! Gathering an incident's [`Brief`] live: the signals firing beside it (from the journal), the
//! recent Kubernetes events about its target, the target's pods and their node, the target's
//! rollout history (its ReplicaSets) and an excerpt of its logs (through the `capture_logs`
//! action, so the same RBAC and limits apply).
//!
//! Gathering only reads, each part within [`PART_TIMEOUT`]; a part that cannot be had is left
//! empty and named in [`Gathered::gaps`]. Nothing is redacted here: the context builder does it
//! before anything leaves the process.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Event as KubeEvent;
use kube::api::{Api, ListParams};
use serde_json::{Value, json};

use super::brief::Brief;
use super::context::{Event, LogExcerpt, Revision, Signal};
use crate::action::Action;
use crate::actions::{Cluster, rollout_history};
use crate::executor::diagnose::{REVISION, time};
use crate::journal::{Journal, Kind};
use crate::plan::{Decision, ObjectRef, PlannedStep};
use crate::playbook::PlaybookSet;
use crate::signal::kube_event::last_seen;
use crate::signal::state::{LabelSet, SignalEvent};

/// How long one part (events, revisions, logs) may take.
pub const PART_TIMEOUT: Duration = Duration::from_secs(5);

/// How far back signals firing beside the incident's are looked for.
pub const SIGNAL_WINDOW: TimeDelta = TimeDelta::hours(1);

/// At most this many other signals, events, revisions.
const MAX_SIGNALS: usize = 20;
const MAX_EVENTS: usize = 15;
const MAX_REVISIONS: usize = 5;

/// Events listed per namespace before filtering.
const EVENTS_LISTED: u32 = 500;

/// Log lines per container, and pods read.
const LOG_LINES: u64 = 40;
const LOG_PODS: u64 = 2;

/// Labels that name the node a series is about.
const NODE_LABELS: [&str; 3] = ["node", "kubernetes_node", "nodename"];

/// Where gathering reads from.
#[derive(Clone, Copy)]
pub struct Sources<'a> {
    /// The Kubernetes API.
    pub kube: &'a kube::Client,
    /// The actions (for `capture_logs`).
    pub cluster: &'a Cluster,
    /// The journal (for the other firing signals).
    pub journal: &'a Journal,
    /// The active playbook set (for the kind of each signal), when known.
    pub set: Option<&'a PlaybookSet>,
    /// Where this Salve may act: nothing outside it is read.
    pub scope: &'a crate::scope::Scope,
}

/// The incident gathered about.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    /// Its id.
    pub incident: &'a str,
    /// Its playbook's name.
    pub playbook: &'a str,
    /// The signal that opened it.
    pub signal: &'a SignalEvent,
    /// Its target.
    pub target: &'a ObjectRef,
    /// The time now.
    pub now: DateTime<Utc>,
}

/// A gathered brief, and what could not be had.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Gathered {
    /// The brief.
    pub brief: Brief,
    /// The parts left empty because they could not be read, and why.
    pub gaps: Vec<String>,
}

/// Gathers the brief of `subject` from `sources`.
pub async fn gather(sources: &Sources<'_>, subject: &Subject<'_>) -> Gathered {
    let mut gaps = Vec::new();
    let signals = signals(sources, subject).unwrap_or_else(|error| {
        gaps.push(format!("other signals: {error}"));
        vec![own_signal(sources, subject)]
    });
    let mut nodes: Vec<String> = signals.iter().flat_map(|s| node_of(&s.labels)).collect();
    if let Some(why) = outside(sources.scope, subject.target) {
        gaps.push(format!("events, rollout history and logs: not read: {why}"));
        return Gathered {
            brief: Brief {
                incident: subject.incident.to_string(),
                signals,
                ..Brief::default()
            },
            gaps,
        };
    }
    // A scoped Salve reads no other node's events: a namespace-scoped one none, a node-local
    // one its own node's only.
    nodes.retain(|node| {
        sources.scope.namespaces.is_none()
            && sources
                .scope
                .node
                .as_ref()
                .is_none_or(|own| &own.name == node)
    });
    let (events, revisions, logs) = tokio::join!(
        part(
            "events",
            events(sources.kube, subject.target, &nodes, sources.scope)
        ),
        part("rollout history", revisions(sources.kube, subject.target)),
        part("logs", logs(sources.cluster, subject)),
    );
    let brief = Brief {
        incident: subject.incident.to_string(),
        signals,
        events: take(events, &mut gaps),
        revisions: take(revisions, &mut gaps),
        logs: take(logs, &mut gaps),
    };
    Gathered { brief, gaps }
}

/// A part's items, or none and its gap noted.
fn take<T>(part: Result<Vec<T>, String>, gaps: &mut Vec<String>) -> Vec<T> {
    part.unwrap_or_else(|gap| {
        gaps.push(gap);
        Vec::new()
    })
}

async fn part<T>(
    name: &str,
    read: impl Future<Output = Result<Vec<T>, String>>,
) -> Result<Vec<T>, String> {
    match tokio::time::timeout(PART_TIMEOUT, read).await {
        Ok(Ok(items)) => Ok(items),
        Ok(Err(error)) => Err(format!("{name}: {error}")),
        Err(_) => Err(format!("{name}: no answer within {PART_TIMEOUT:?}")),
    }
}

/// The kind of signal `playbook`'s trigger makes, in snake case (`memory_leak`).
fn kind_of(set: Option<&PlaybookSet>, playbook: &str) -> String {
    let Some(name) = set
        .and_then(|set| set.playbook(playbook))
        .map(|p| p.trigger.kind.name())
    else {
        return "signal".into();
    };
    let mut kind = String::with_capacity(name.len() + 2);
    for c in name.chars() {
        if c.is_ascii_uppercase() {
            kind.push('_');
            kind.push(c.to_ascii_lowercase());
        } else {
            kind.push(c);
        }
    }
    kind
}

fn own_signal(sources: &Sources<'_>, subject: &Subject<'_>) -> Signal {
    Signal {
        kind: kind_of(sources.set, subject.playbook),
        playbook: subject.playbook.to_string(),
        labels: subject.signal.labels.clone(),
        value: subject.signal.value.filter(|v| v.is_finite()),
        since: subject.signal.active_at,
    }
}

/// The incident's own signal, then the others still firing per the journal's last hour, the
/// earliest first.
fn signals(
    sources: &Sources<'_>,
    subject: &Subject<'_>,
) -> Result<Vec<Signal>, crate::journal::Error> {
    let own = own_signal(sources, subject);
    let mut last: BTreeMap<(String, LabelSet), Option<Signal>> = BTreeMap::new();
    for entry in sources.journal.signals_since(subject.now - SIGNAL_WINDOW)? {
        let record = entry.record;
        let Ok(labels) = serde_json::from_value::<LabelSet>(record.detail["labels"].clone()) else {
            continue;
        };
        let key = (record.playbook.clone(), labels.clone());
        let signal = (record.kind == Kind::SignalFiring).then(|| Signal {
            kind: kind_of(sources.set, &record.playbook),
            value: record.detail["value"].as_f64(),
            since: record.detail["activeAt"]
                .as_str()
                .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.with_timezone(&Utc)),
            playbook: record.playbook,
            labels,
        });
        last.insert(key, signal);
    }
    let mut others: Vec<Signal> = last
        .into_values()
        .flatten()
        .filter(|s| !(s.playbook == own.playbook && s.labels == own.labels))
        .collect();
    others.sort_by(|a, b| a.since.cmp(&b.since).then(a.playbook.cmp(&b.playbook)));
    others.truncate(MAX_SIGNALS);
    Ok(std::iter::once(own).chain(others).collect())
}

/// Why `target` is not read about, when it is outside `scope`: another namespace, a
/// cluster-scoped object for a namespace-scoped Salve, another node or a workload (which spans
/// nodes) for a node-local one. (A Pod's node is checked by the gate; its signal came through
/// queries scoped to the node.)
fn outside(scope: &crate::scope::Scope, target: &ObjectRef) -> Option<String> {
    let placement = crate::scope::Placement {
        kind: &target.kind,
        name: &target.name,
        namespace: target.namespace.as_deref(),
        node: None,
    };
    match scope.admits(&placement) {
        Err(_)
            if target.kind == "Pod"
                && scope.namespaces.as_ref().is_none_or(|set| {
                    target
                        .namespace
                        .as_deref()
                        .is_some_and(|ns| set.contains(ns))
                }) =>
        {
            None
        }
        Err(why) => Some(why),
        Ok(()) => None,
    }
}

/// The node a series is about, from its labels.
fn node_of(labels: &LabelSet) -> Option<String> {
    NODE_LABELS
        .iter()
        .find_map(|name| labels.get(*name))
        .cloned()
}

/// Recent events about the target, its pods (named after it), and the signals' nodes, newest
/// first.
async fn events(
    kube: &kube::Client,
    target: &ObjectRef,
    nodes: &[String],
    scope: &crate::scope::Scope,
) -> Result<Vec<Event>, String> {
    let params = ListParams::default().limit(EVENTS_LISTED);
    let mut listed = match &target.namespace {
        Some(namespace) => {
            Api::<KubeEvent>::namespaced(kube.clone(), namespace)
                .list(&params)
                .await
                .map_err(|e| e.to_string())?
                .items
        }
        None => Vec::new(),
    };
    let about_node = (target.kind == "Node" || !nodes.is_empty()) && scope.namespaces.is_none();
    if about_node {
        // Node events live in `default` (kubelet) or anywhere (controllers): all namespaces;
        // for a node-local Salve, its own node's only.
        let params = match &scope.node {
            Some(own) => params.clone().fields(&format!(
                "involvedObject.kind=Node,involvedObject.name={}",
                own.name
            )),
            None => params.clone(),
        };
        let all = Api::<KubeEvent>::all(kube.clone())
            .list(&params)
            .await
            .map_err(|e| e.to_string())?
            .items;
        listed.extend(all.into_iter().filter(|e| {
            e.involved_object.kind.as_deref() == Some("Node")
                && e.metadata.namespace.as_deref() != target.namespace.as_deref()
        }));
    }
    let prefix = format!("{}-", target.name);
    let mut events: Vec<Event> = listed
        .into_iter()
        .filter(|e| {
            let name = e.involved_object.name.as_deref().unwrap_or_default();
            let kind = e.involved_object.kind.as_deref().unwrap_or_default();
            name == target.name
                || (kind != "Node" && name.starts_with(&prefix))
                || (kind == "Node" && nodes.iter().any(|n| n == name))
        })
        .map(|e| {
            let at = last_seen(&e);
            let object = &e.involved_object;
            let name = object.name.as_deref().unwrap_or("?");
            let object = match &object.namespace {
                Some(namespace) => format!(
                    "{} {namespace}/{name}",
                    object.kind.as_deref().unwrap_or("?")
                ),
                None => format!("{} {name}", object.kind.as_deref().unwrap_or("?")),
            };
            Event {
                at,
                object,
                reason: e.reason.unwrap_or_default(),
                message: e.message.unwrap_or_default(),
                count: e.count.and_then(|c| u32::try_from(c).ok()).unwrap_or(1),
            }
        })
        .collect();
    events.sort_by_key(|e| std::cmp::Reverse(e.at));
    events.truncate(MAX_EVENTS);
    Ok(events)
}

/// A Deployment's rollout history: its ReplicaSets' revisions, newest first, the current one
/// marked (the Deployment's own revision).
async fn revisions(kube: &kube::Client, target: &ObjectRef) -> Result<Vec<Revision>, String> {
    let (Some(namespace), "Deployment") = (&target.namespace, target.kind.as_str()) else {
        return Ok(Vec::new());
    };
    let deployment = Api::<Deployment>::namespaced(kube.clone(), namespace)
        .get(&target.name)
        .await
        .map_err(|e| e.to_string())?;
    let current = deployment
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(REVISION))
        .and_then(|r| r.parse::<u64>().ok());
    let replica_sets = Api::<ReplicaSet>::namespaced(kube.clone(), namespace);
    let history = rollout_history(&replica_sets, &deployment)
        .await
        .map_err(|e| e.to_string())?;
    Ok(history
        .into_iter()
        .rev()
        .take(MAX_REVISIONS)
        .map(|(revision, rs)| {
            let images: Vec<String> = rs
                .spec
                .iter()
                .flat_map(|s| s.template.iter())
                .flat_map(|t| t.spec.iter())
                .flat_map(|s| &s.containers)
                .filter_map(|c| c.image.clone())
                .collect();
            let images = format!("images: {}", images.join(", "));
            let change = match rs
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get("kubernetes.io/change-cause"))
            {
                Some(cause) => format!("{cause} ({images})"),
                None => images,
            };
            Revision {
                revision,
                current: current == Some(revision),
                at: rs.metadata.creation_timestamp.as_ref().and_then(time),
                change,
            }
        })
        .collect())
}

/// An excerpt of the target's logs, read as the `capture_logs` action reads them (the last
/// lines of each container of a few pods, and of its previous instance when it restarted).
async fn logs(cluster: &Cluster, subject: &Subject<'_>) -> Result<Vec<LogExcerpt>, String> {
    let target = subject.target;
    if !matches!(
        target.kind.as_str(),
        "Pod" | "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job"
    ) {
        return Ok(Vec::new());
    }
    let step = PlannedStep {
        name: "advisor-logs".into(),
        action: Some(Action::CaptureLogs),
        wasm: None,
        risk: crate::risk::Risk::None,
        params: BTreeMap::from([
            ("tailLines".to_string(), json!(LOG_LINES)),
            ("maxPods".to_string(), json!(LOG_PODS)),
        ]),
        timeout: PART_TIMEOUT,
        decision: Decision::Run,
    };
    let key = format!("{}/advisor-logs", subject.incident);
    let outcome = cluster
        .run(&step, target, &key, false)
        .await
        .map_err(|e| e.to_string())?;
    let namespace = target.namespace.as_deref().unwrap_or_default();
    let excerpts = outcome.after["logs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|entry| {
            let lines: Vec<&str> = entry["lines"]
                .as_array()?
                .iter()
                .filter_map(Value::as_str)
                .collect();
            if lines.is_empty() {
                return None;
            }
            let previous = if entry["previous"] == json!(true) {
                " (previous instance)"
            } else {
                ""
            };
            Some(LogExcerpt {
                source: format!(
                    "pod {namespace}/{}, container {}{previous}",
                    entry["pod"].as_str().unwrap_or("?"),
                    entry["container"].as_str().unwrap_or("?")
                ),
                text: lines.join("\n"),
            })
        })
        .collect();
    Ok(excerpts)
}
