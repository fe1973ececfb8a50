//! The source of `event` triggers: what the Kubernetes API says about Pods, Nodes and Events,
//! kept in an [`EventStore`] by watchers and observed at each evaluation like any other
//! trigger's source, so an event trigger has the same signal states as the others (pending →
//! firing → resolved, `for`, `keepFiringFor`, inconclusive on missing data).
//!
//! # What holds
//!
//! A trigger `event: {kind, reason: [...], namespaces: [...]}` holds one sample per involved
//! object, container (pods, where known) and matching reason, valued 1, with the labels
//! `namespace` (namespaced kinds), `pod` or `node` (by kind), `kind`, `name`, `reason` and
//! `container`. Each reason is a series of its own, as in kube-state-metrics: a pod both
//! waiting in `CrashLoopBackOff` and reported with `BackOff` events is two series of one
//! incident (incidents group by target), and neither changes labels when the other flaps.
//!
//! Reasons are matched exactly, against two sources:
//!
//! | source | reason | holds |
//! |---|---|---|
//! | Pod status: a container (init and ephemeral ones too) waiting | its waiting reason: `CrashLoopBackOff`, `ImagePullBackOff`, `ErrImagePull`, `CreateContainerConfigError`, ... | while it waits |
//! | Pod status: a container terminated, now or in its last state | its terminated reason: `OOMKilled`, `Error`, ... | for [`EVENT_WINDOW`] after its `finishedAt` |
//! | Pod status: `PodScheduled=False` with reason `Unschedulable` | `Unschedulable` and `FailedScheduling` | while unscheduled |
//! | Node status: `Ready` not `True` (`False` or `Unknown`) | `NodeNotReady` | while not ready |
//! | Node status: `MemoryPressure`, `DiskPressure`, `PIDPressure` `True` | `NodeHasInsufficientMemory`, `NodeHasDiskPressure`, `NodeHasInsufficientPID` | while true |
//! | a `core/v1` Event whose `involvedObject.kind` is the trigger's kind, Normal or Warning | its reason: `BackOff`, `FailedScheduling`, `OOMKilling`, `Evicted`, `NodeNotReady`, `Unhealthy`, ... | for [`EVENT_WINDOW`] after its last occurrence |
//!
//! An Event's last occurrence is the latest of its `series.lastObservedTime`, `lastTimestamp`,
//! `eventTime` and `firstTimestamp` (its creation time when it has none). A recurring Event
//! (the kubelet's `BackOff` every restart) updates these, so it keeps holding while it
//! recurs. The window is a fixed constant rather than the trigger's `keepFiringFor`, which the
//! signal state applies on top already; a `for` longer than the window therefore needs the
//! Event to recur. A pod's own `status.reason` (`Evicted`) is not a condition — an evicted
//! pod stays listed until someone deletes it — so `Evicted` comes from Events only.
//!
//! A container in a crash loop runs for a moment between back-offs, so its
//! `CrashLoopBackOff` comes and goes; a `for` can restart on such a gap (as it does for the
//! kube-state-metrics series). Matching `BackOff` as well — the kubelet's Event at every
//! back-off, which holds through the gaps — or a `keepFiringFor` rides them out.
//!
//! Namespaces filter namespaced kinds; a Node has none, and the Events about Nodes are
//! recorded in the `default` namespace.
//!
//! # Running it
//!
//! ```no_run
//! # async fn example(
//! #     client: kube::Client,
//! #     set: &salve::playbook::PlaybookSet,
//! #     cancel: tokio_util::sync::CancellationToken,
//! # ) {
//! use salve::signal::evaluation::Sources;
//! use salve::signal::kube_event::{EventStore, WatchScope};
//!
//! let scope = WatchScope::for_playbooks(set.playbooks());
//! let store = EventStore::new();
//! tokio::spawn(store.watch(client, &scope, cancel));
//! let sources = Sources { events: Some(store), ..Sources::default() };
//! # }
//! ```
//!
//! # Fail safe
//!
//! [`EventStore::watch`] runs a `kube::runtime` watcher (with its default backoff) per
//! resource and namespace of a [`WatchScope`]. An evaluation is inconclusive, never healthy,
//! when anything it needs is missing:
//! - a resource or namespace the trigger needs is not watched (the scope is set when the
//!   watchers start; a playbook added later may need more), or is outside the Salve's
//!   [`Scope`] ([`WatchScope::within`]: a Node trigger for a namespace-scoped Salve);
//! - the first list of a needed watch has not completed;
//! - a needed watch has been failing for [`STALE_AFTER`] (the API is unreachable, RBAC
//!   forbids it): the last known state is kept meanwhile, and used again once the watch
//!   recovers. A watch counts as recovered at its next change, or when no error has come for
//!   [`RETRY_GRACE`] (the watcher retries at most 30 s apart, so silence means it reconnected).
//!
//! A relist (after a watch expired) replaces what the store knew only when it completes, so
//! objects deleted meanwhile stop holding then, and nothing flaps while it runs.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Debug;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures_util::StreamExt as _;
use k8s_openapi::api::core::v1::{ContainerStatus, Event as CoreEvent, Node, Pod};
use k8s_openapi::jiff::Timestamp;
use k8s_openapi::{NamespaceResourceScope, Resource as _};
use kube::ResourceExt as _;
use kube::api::Api;
use kube::runtime::{WatchStreamExt as _, watcher};
use serde::de::DeserializeOwned;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::state::{LabelSet, Observation, Sample};
use crate::action::TargetKind;
use crate::playbook::{Playbook, TriggerKind};
use crate::scope::Scope;

/// How long an Event, or a container's termination, holds after it last happened.
pub const EVENT_WINDOW: Duration = Duration::from_secs(5 * 60);

/// A watch failing for this long makes the triggers that need it inconclusive.
pub const STALE_AFTER: Duration = Duration::from_secs(2 * 60);

/// A failing watch that has reported no error for this long is taken to have reconnected
/// (the watcher's backoff retries at most 30 s apart, plus a connect timeout).
pub const RETRY_GRACE: Duration = Duration::from_secs(90);

/// The namespace the kubelet and the node controller record Node Events in.
pub const NODE_EVENTS_NAMESPACE: &str = "default";

/// A Kubernetes resource the store watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Resource {
    /// `core/v1` Events.
    Events,
    /// Pods, for their containers' states and scheduling.
    Pods,
    /// Nodes, for their conditions.
    Nodes,
}

impl Resource {
    /// Its name in messages (`Pods`).
    pub fn as_str(self) -> &'static str {
        match self {
            Resource::Events => "Events",
            Resource::Pods => "Pods",
            Resource::Nodes => "Nodes",
        }
    }
}

/// One watch: a resource in one namespace, or in all (Nodes have none), narrowed by a field
/// selector for a node-local Salve.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct Feed {
    resource: Resource,
    namespace: Option<String>,
    /// `spec.nodeName=NODE` (Pods) or `metadata.name=NODE` (Nodes).
    fields: Option<String>,
}

impl Feed {
    fn all(resource: Resource) -> Self {
        Feed {
            resource,
            namespace: None,
            fields: None,
        }
    }

    fn namespaced(resource: Resource, namespace: &str) -> Self {
        Feed {
            resource,
            namespace: Some(namespace.to_string()),
            fields: None,
        }
    }

    /// `Pods`, or `Pods in namespace prod`, and the field selector.
    fn describe(&self) -> String {
        let mut text = match &self.namespace {
            Some(namespace) => format!("{} in namespace {namespace}", self.resource.as_str()),
            None => self.resource.as_str().to_string(),
        };
        if let Some(fields) = &self.fields {
            text.push_str(&format!(" ({fields})"));
        }
        text
    }

    /// The watches that read what this one would within `scope`: its namespaces (a Node is
    /// outside a namespace scope), the node's own Pods and Node for a node-local Salve. Empty
    /// when nothing of it is in scope.
    fn within(&self, scope: &Scope) -> Vec<Feed> {
        let mut feeds = match (&scope.namespaces, &self.namespace, self.resource) {
            (None, _, _) => vec![self.clone()],
            (Some(_), _, Resource::Nodes) => Vec::new(),
            (Some(set), Some(namespace), _) if set.contains(namespace) => vec![self.clone()],
            (Some(_), Some(_), _) => Vec::new(),
            (Some(set), None, resource) => set
                .iter()
                .map(|namespace| Feed::namespaced(resource, namespace))
                .collect(),
        };
        if let Some(node) = &scope.node {
            for feed in &mut feeds {
                feed.fields = match feed.resource {
                    Resource::Pods => Some(format!("spec.nodeName={}", node.name)),
                    Resource::Nodes => Some(format!("metadata.name={}", node.name)),
                    Resource::Events => None,
                };
            }
        }
        feeds
    }
}

/// The watches a trigger on `kind` in `namespaces` (all when empty) reads.
fn needs(kind: TargetKind, namespaces: &[String]) -> Vec<Feed> {
    let in_namespaces = |resource| -> Vec<Feed> {
        if namespaces.is_empty() {
            vec![Feed::all(resource)]
        } else {
            namespaces
                .iter()
                .map(|namespace| Feed::namespaced(resource, namespace))
                .collect()
        }
    };
    match kind {
        TargetKind::Node => vec![
            Feed::all(Resource::Nodes),
            Feed::namespaced(Resource::Events, NODE_EVENTS_NAMESPACE),
        ],
        TargetKind::Pod => {
            let mut feeds = in_namespaces(Resource::Pods);
            feeds.extend(in_namespaces(Resource::Events));
            feeds
        }
        _ => in_namespaces(Resource::Events),
    }
}

/// What to watch for a set of event triggers: the resources they need, in the union of their
/// namespaces (every namespace when any trigger names none).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WatchScope {
    feeds: BTreeSet<Feed>,
    /// Where this Salve may act: the watches are narrowed to it.
    scope: Scope,
}

impl WatchScope {
    /// What the event triggers of `playbooks` need.
    pub fn for_playbooks<'a>(playbooks: impl IntoIterator<Item = &'a Arc<Playbook>>) -> Self {
        let mut scope = WatchScope::default();
        for playbook in playbooks {
            if let TriggerKind::Event {
                kind, namespaces, ..
            } = &playbook.trigger.kind
            {
                scope.add(*kind, namespaces);
            }
        }
        scope
    }

    /// Adds what a trigger on `kind` in `namespaces` (all when empty) needs.
    pub fn add(&mut self, kind: TargetKind, namespaces: &[String]) {
        self.feeds.extend(needs(kind, namespaces));
    }

    /// The same watches narrowed to `scope`: only its namespaces (no Nodes) for a namespace
    /// scope; only the node's own Pods (`spec.nodeName`) and Node (`metadata.name`) for a
    /// node-local one, whose Events about other objects are then ignored. A trigger needing
    /// something outside the scope is inconclusive.
    pub fn within(mut self, scope: &Scope) -> Self {
        self.scope = scope.clone();
        self
    }

    /// Whether nothing needs watching.
    pub fn is_empty(&self) -> bool {
        self.feeds().is_empty()
    }

    /// The watches to run: one per resource and namespace, or one across all namespaces when
    /// that is needed anyway, narrowed to the scope.
    fn feeds(&self) -> Vec<Feed> {
        let narrowed: BTreeSet<Feed> = self
            .feeds
            .iter()
            .flat_map(|feed| feed.within(&self.scope))
            .collect();
        narrowed
            .iter()
            .filter(|feed| {
                feed.namespace.is_none()
                    || !narrowed.contains(&Feed {
                        namespace: None,
                        ..(*feed).clone()
                    })
            })
            .cloned()
            .collect()
    }
}

/// When an [`Occurrence`] holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holds {
    /// While the object says so (a container waiting, a node not ready).
    WhileReported,
    /// From `from` through `until` (an Event, a container's termination).
    Between {
        /// When it started to hold.
        from: DateTime<Utc>,
        /// The last instant it holds.
        until: DateTime<Utc>,
    },
}

/// One reason the Kubernetes API reports about one object: from an Event, or read from a
/// Pod's or Node's status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Occurrence {
    /// The involved object's kind, as Kubernetes spells it (`Pod`).
    pub kind: String,
    /// Its namespace (none for cluster-scoped kinds).
    pub namespace: Option<String>,
    /// Its name.
    pub name: String,
    /// The container, for a pod, when known.
    pub container: Option<String>,
    /// The reason (`CrashLoopBackOff`, `BackOff`, `NodeNotReady`, ...).
    pub reason: String,
    /// When it holds.
    pub holds: Holds,
}

impl Occurrence {
    /// An Event-like occurrence at `at`, holding for [`EVENT_WINDOW`].
    pub fn event(
        kind: &str,
        namespace: Option<&str>,
        name: &str,
        reason: &str,
        at: DateTime<Utc>,
    ) -> Self {
        Occurrence {
            kind: kind.to_string(),
            namespace: namespace.map(str::to_string),
            name: name.to_string(),
            container: None,
            reason: reason.to_string(),
            holds: window(at),
        }
    }

    /// The signal's labels.
    pub fn labels(&self) -> LabelSet {
        let mut labels = LabelSet::new();
        if let Some(namespace) = &self.namespace {
            labels.insert("namespace".into(), namespace.clone());
        }
        match self.kind.as_str() {
            "Pod" => {
                labels.insert("pod".into(), self.name.clone());
            }
            "Node" => {
                labels.insert("node".into(), self.name.clone());
            }
            _ => {}
        }
        labels.insert("kind".into(), self.kind.clone());
        labels.insert("name".into(), self.name.clone());
        labels.insert("reason".into(), self.reason.clone());
        if let Some(container) = &self.container {
            labels.insert("container".into(), container.clone());
        }
        labels
    }

    /// Whether it holds at `at`.
    pub fn holds_at(&self, at: DateTime<Utc>) -> bool {
        match self.holds {
            Holds::WhileReported => true,
            Holds::Between { from, until } => from <= at && at <= until,
        }
    }

    /// Whether a trigger on `kind` with `reasons` in `namespaces` (all when empty) sees it.
    fn matches(&self, kind: TargetKind, reasons: &[String], namespaces: &[String]) -> bool {
        self.kind == kind.as_str()
            && reasons.contains(&self.reason)
            && (namespaces.is_empty()
                || !kind.is_namespaced()
                || self
                    .namespace
                    .as_ref()
                    .is_some_and(|namespace| namespaces.contains(namespace)))
    }
}

/// From `at` through [`EVENT_WINDOW`] after it.
fn window(at: DateTime<Utc>) -> Holds {
    let until = chrono::Duration::from_std(EVENT_WINDOW)
        .ok()
        .and_then(|window| at.checked_add_signed(window))
        .unwrap_or(DateTime::<Utc>::MAX_UTC);
    Holds::Between { from: at, until }
}

/// A Kubernetes timestamp as a chrono one (`None` outside chrono's nanosecond range).
fn time(timestamp: &Timestamp) -> Option<DateTime<Utc>> {
    i64::try_from(timestamp.as_nanosecond())
        .ok()
        .map(DateTime::from_timestamp_nanos)
}

/// The reasons a Pod's status reports: its containers' waiting and terminated reasons, and
/// being unschedulable.
pub fn pod_occurrences(pod: &Pod) -> Vec<Occurrence> {
    let namespace = pod.metadata.namespace.clone();
    let name = pod.name_any();
    let occurrence = |reason: &str, container: Option<&str>, holds| Occurrence {
        kind: Pod::KIND.to_string(),
        namespace: namespace.clone(),
        name: name.clone(),
        container: container.map(str::to_string),
        reason: reason.to_string(),
        holds,
    };
    let mut found = Vec::new();
    let Some(status) = &pod.status else {
        return found;
    };
    let containers = [
        &status.init_container_statuses,
        &status.container_statuses,
        &status.ephemeral_container_statuses,
    ];
    for container in containers.into_iter().flatten().flatten() {
        for (reason, holds) in container_reasons(container) {
            found.push(occurrence(&reason, Some(&container.name), holds));
        }
    }
    let unschedulable = status.conditions.iter().flatten().any(|c| {
        c.type_ == "PodScheduled"
            && c.status == "False"
            && c.reason.as_deref() == Some("Unschedulable")
    });
    if unschedulable {
        for reason in ["Unschedulable", "FailedScheduling"] {
            found.push(occurrence(reason, None, Holds::WhileReported));
        }
    }
    found
}

/// A container's waiting reason (while it waits) and terminated reasons, now or last (for
/// [`EVENT_WINDOW`] after it finished; a termination without `finishedAt` cannot be placed in
/// time and is left out).
fn container_reasons(container: &ContainerStatus) -> Vec<(String, Holds)> {
    let mut found = Vec::new();
    if let Some(reason) = container
        .state
        .as_ref()
        .and_then(|s| s.waiting.as_ref())
        .and_then(|w| w.reason.as_ref())
        .filter(|r| !r.is_empty())
    {
        found.push((reason.clone(), Holds::WhileReported));
    }
    for state in [&container.state, &container.last_state]
        .into_iter()
        .flatten()
    {
        let Some(terminated) = &state.terminated else {
            continue;
        };
        let (Some(reason), Some(finished)) = (
            terminated.reason.as_ref().filter(|r| !r.is_empty()),
            terminated.finished_at.as_ref().and_then(|t| time(&t.0)),
        ) else {
            continue;
        };
        let holds = window(finished);
        if !found.contains(&(reason.clone(), holds)) {
            found.push((reason.clone(), holds));
        }
    }
    found
}

/// The reasons a Node's conditions report: `NodeNotReady` unless `Ready` is `True`, and the
/// kubelet's pressure reasons while a pressure condition is `True`.
pub fn node_occurrences(node: &Node) -> Vec<Occurrence> {
    let name = node.name_any();
    let conditions = node
        .status
        .iter()
        .flat_map(|s| s.conditions.iter().flatten());
    let mut found = Vec::new();
    for condition in conditions {
        let reason = match (condition.type_.as_str(), condition.status.as_str()) {
            ("Ready", "True") => continue,
            ("Ready", _) => "NodeNotReady",
            ("MemoryPressure", "True") => "NodeHasInsufficientMemory",
            ("DiskPressure", "True") => "NodeHasDiskPressure",
            ("PIDPressure", "True") => "NodeHasInsufficientPID",
            _ => continue,
        };
        found.push(Occurrence {
            kind: Node::KIND.to_string(),
            namespace: None,
            name: name.clone(),
            container: None,
            reason: reason.to_string(),
            holds: Holds::WhileReported,
        });
    }
    found
}

/// What a `core/v1` Event reports: its reason about its involved object, holding for
/// [`EVENT_WINDOW`] after its last occurrence. `None` without a reason, an involved object
/// or any time.
pub fn event_occurrence(event: &CoreEvent) -> Option<Occurrence> {
    let nonempty = |s: &Option<String>| s.clone().filter(|s| !s.is_empty());
    let reason = nonempty(&event.reason)?;
    let involved = &event.involved_object;
    let kind = nonempty(&involved.kind)?;
    let name = nonempty(&involved.name)?;
    // The Events about a Node live in `default`; that is not the Node's namespace.
    let namespace = nonempty(&involved.namespace).or_else(|| match kind.as_str() {
        "Node" => None,
        _ => nonempty(&event.metadata.namespace),
    });
    let container = match kind.as_str() {
        "Pod" => involved.field_path.as_deref().and_then(container_of),
        _ => None,
    };
    let last = last_seen(event)?;
    Some(Occurrence {
        kind,
        namespace,
        name,
        container,
        reason,
        holds: window(last),
    })
}

/// When a `core/v1` Event last happened: its series' last observation, its last, event or
/// first timestamp (the latest of them), else its creation.
pub fn last_seen(event: &CoreEvent) -> Option<DateTime<Utc>> {
    [
        event
            .series
            .as_ref()
            .and_then(|s| s.last_observed_time.as_ref().map(|t| &t.0)),
        event.last_timestamp.as_ref().map(|t| &t.0),
        event.event_time.as_ref().map(|t| &t.0),
        event.first_timestamp.as_ref().map(|t| &t.0),
    ]
    .into_iter()
    .flatten()
    .filter_map(time)
    .max()
    .or_else(|| {
        event
            .metadata
            .creation_timestamp
            .as_ref()
            .and_then(|t| time(&t.0))
    })
}

/// The container an Event's `fieldPath` names (`spec.containers{app}` → `app`).
fn container_of(field_path: &str) -> Option<String> {
    [
        "spec.containers{",
        "spec.initContainers{",
        "spec.ephemeralContainers{",
    ]
    .iter()
    .find_map(|prefix| field_path.strip_prefix(prefix))
    .and_then(|rest| rest.strip_suffix('}'))
    .filter(|name| !name.is_empty())
    .map(str::to_string)
}

/// One change a watch reports, with the objects already read into occurrences.
#[derive(Debug, Clone, PartialEq)]
enum Change {
    /// An object (by `namespace/name`) was added or changed; what it reports now.
    Apply(String, Vec<Occurrence>),
    /// An object was deleted.
    Delete(String),
    /// A (re)list started.
    Init,
    /// An object of the list.
    InitApply(String, Vec<Occurrence>),
    /// The list completed: it replaces what was known.
    InitDone,
}

/// A watch that keeps failing.
#[derive(Debug, Clone)]
struct Failure {
    since: Instant,
    last: Instant,
    error: String,
}

/// What one watch has seen.
#[derive(Debug, Default)]
struct FeedState {
    /// Whether a first list has completed.
    listed: bool,
    /// What each object with something to report (by `namespace/name`) reports now.
    objects: HashMap<String, Vec<Occurrence>>,
    /// A relist in progress, swapped in when it completes.
    relist: Option<HashMap<String, Vec<Occurrence>>>,
    /// The current run of errors, if the watch is failing.
    failure: Option<Failure>,
}

#[derive(Debug)]
struct State {
    feeds: BTreeMap<Feed, FeedState>,
    stale_after: Duration,
    /// The scope the watches were narrowed to ([`WatchScope::within`]).
    scope: Scope,
}

#[derive(Debug)]
struct Inner {
    state: Mutex<State>,
    changes: watch::Sender<u64>,
}

/// What the Kubernetes watchers saw, shared by them (which write) and the evaluation (which
/// reads; see [`EventStore::observe`]). Cloning it is cheap: clones share one store.
#[derive(Debug, Clone)]
pub struct EventStore {
    inner: Arc<Inner>,
}

impl Default for EventStore {
    fn default() -> Self {
        Self::new()
    }
}

impl EventStore {
    /// An empty store, watching nothing yet: every event trigger is inconclusive until
    /// [`watch`](Self::watch) lists what it needs.
    pub fn new() -> Self {
        Self::with_stale_after(STALE_AFTER)
    }

    /// An empty store whose watches go stale after failing for `stale_after` rather than
    /// [`STALE_AFTER`].
    pub fn with_stale_after(stale_after: Duration) -> Self {
        let (changes, _) = watch::channel(0);
        EventStore {
            inner: Arc::new(Inner {
                state: Mutex::new(State {
                    feeds: BTreeMap::new(),
                    stale_after,
                    scope: Scope::cluster(),
                }),
                changes,
            }),
        }
    }

    /// A store that knows exactly `occurrences`, in every namespace, with nothing to watch:
    /// for `salve test` and replays of a described cluster.
    pub fn recorded(occurrences: impl IntoIterator<Item = Occurrence>) -> Self {
        let store = Self::new();
        {
            let mut state = store.lock();
            for resource in [Resource::Events, Resource::Pods, Resource::Nodes] {
                let feed = state.feeds.entry(Feed::all(resource)).or_default();
                feed.listed = true;
            }
            let events = state.feeds.entry(Feed::all(Resource::Events)).or_default();
            for (i, occurrence) in occurrences.into_iter().enumerate() {
                events
                    .objects
                    .insert(format!("recorded/{i}"), vec![occurrence]);
            }
        }
        store
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Bumped whenever what the store knows changes (an object changed or was deleted, a list
    /// completed), so the evaluation loop can evaluate event triggers at once.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.inner.changes.subscribe()
    }

    /// The samples of a trigger on `kind` with `reasons` in `namespaces` (all when empty) at
    /// `at`, or why nothing can be concluded (see the module's documentation).
    pub fn observe(
        &self,
        kind: TargetKind,
        reasons: &[String],
        namespaces: &[String],
        at: DateTime<Utc>,
    ) -> Observation {
        let state = self.lock();
        if let Some(reason) = unknown(&state, kind, namespaces, Instant::now()) {
            return Observation::Inconclusive(reason);
        }
        let holding: BTreeSet<LabelSet> = state
            .feeds
            .values()
            .flat_map(|feed| feed.objects.values().flatten())
            .filter(|o| o.matches(kind, reasons, namespaces) && o.holds_at(at))
            .filter(|o| state.in_scope(o))
            .map(Occurrence::labels)
            .collect();
        Observation::Holds(
            holding
                .into_iter()
                .map(|labels| Sample { labels, value: 1.0 })
                .collect(),
        )
    }

    /// Starts watching `scope` through `client`: returns the future that runs the watches
    /// until `cancel` fires (spawn it). The watches are registered at once, so triggers are
    /// "waiting for the first list" from now, not "not watched".
    pub fn watch(
        &self,
        client: kube::Client,
        scope: &WatchScope,
        cancel: CancellationToken,
    ) -> impl Future<Output = ()> + Send + 'static {
        let feeds = scope.feeds();
        {
            let mut state = self.lock();
            state.scope = scope.scope.clone();
            for feed in &feeds {
                state.feeds.entry(feed.clone()).or_default();
            }
        }
        let runs: Vec<Pin<Box<dyn Future<Output = ()> + Send>>> = feeds
            .into_iter()
            .map(|feed| {
                let (store, client, cancel) = (self.clone(), client.clone(), cancel.clone());
                let run: Pin<Box<dyn Future<Output = ()> + Send>> = match feed.resource {
                    Resource::Events => {
                        let api = api::<CoreEvent>(client, feed.namespace.as_deref());
                        let read = |e: &CoreEvent| event_occurrence(e).into_iter().collect();
                        Box::pin(run_feed(store, feed, api, read, cancel))
                    }
                    Resource::Pods => {
                        let api = api::<Pod>(client, feed.namespace.as_deref());
                        // Node-local: every pod of the node is kept, reporting or not, so
                        // Events can be told to be about one of them.
                        let read: fn(&Pod) -> Vec<Occurrence> = if feed.fields.is_some() {
                            |pod| {
                                let mut found = pod_occurrences(pod);
                                if found.is_empty() {
                                    found.push(Occurrence {
                                        kind: "Pod".into(),
                                        namespace: pod.metadata.namespace.clone(),
                                        name: pod.metadata.name.clone().unwrap_or_default(),
                                        container: None,
                                        reason: String::new(),
                                        holds: Holds::WhileReported,
                                    });
                                }
                                found
                            }
                        } else {
                            pod_occurrences
                        };
                        Box::pin(run_feed(store, feed, api, read, cancel))
                    }
                    Resource::Nodes => {
                        let api = Api::<Node>::all(client);
                        Box::pin(run_feed(store, feed, api, node_occurrences, cancel))
                    }
                };
                run
            })
            .collect();
        async move {
            futures_util::future::join_all(runs).await;
        }
    }

    /// Applies one change of the watch `feed`.
    fn apply(&self, feed: &Feed, change: Change) {
        let changed = {
            let mut state = self.lock();
            let Some(known) = state.feeds.get_mut(feed) else {
                return;
            };
            if let Some(failure) = known.failure.take() {
                tracing::info!(
                    watch = feed.describe(),
                    failed_for_s = failure.since.elapsed().as_secs(),
                    "kubernetes watch recovered"
                );
            }
            match change {
                Change::Apply(key, occurrences) => {
                    let before = if occurrences.is_empty() {
                        known.objects.remove(&key)
                    } else {
                        known.objects.insert(key, occurrences.clone())
                    };
                    before.unwrap_or_default() != occurrences
                }
                Change::Delete(key) => known.objects.remove(&key).is_some(),
                Change::Init => {
                    known.relist = Some(HashMap::new());
                    false
                }
                Change::InitApply(key, occurrences) => {
                    if !occurrences.is_empty() {
                        known
                            .relist
                            .get_or_insert_with(HashMap::new)
                            .insert(key, occurrences);
                    }
                    false
                }
                Change::InitDone => {
                    known.objects = known.relist.take().unwrap_or_default();
                    if !known.listed {
                        tracing::info!(
                            watch = feed.describe(),
                            reporting = known.objects.len(),
                            "kubernetes watch listed"
                        );
                    }
                    known.listed = true;
                    true
                }
            }
        };
        if changed {
            self.inner
                .changes
                .send_modify(|count| *count = count.wrapping_add(1));
        }
    }

    /// Records an error of the watch `feed` at `now`.
    fn fail(&self, feed: &Feed, error: String, now: Instant) {
        let mut state = self.lock();
        let Some(known) = state.feeds.get_mut(feed) else {
            return;
        };
        match &mut known.failure {
            Some(failure) if now.saturating_duration_since(failure.last) < RETRY_GRACE => {
                tracing::debug!(watch = feed.describe(), error, "kubernetes watch failed");
                failure.last = now;
                failure.error = error;
            }
            _ => {
                tracing::warn!(watch = feed.describe(), error, "kubernetes watch failed");
                known.failure = Some(Failure {
                    since: now,
                    last: now,
                    error,
                });
            }
        }
    }
}

impl State {
    /// Whether `occurrence` is about something in the scope: for a node-local Salve, a pod its
    /// Pods watch (narrowed to the node) lists, or its own Node.
    fn in_scope(&self, occurrence: &Occurrence) -> bool {
        if self.scope.is_cluster_wide() {
            return true;
        }
        let key = format!(
            "{}/{}",
            occurrence.namespace.as_deref().unwrap_or_default(),
            occurrence.name
        );
        let local = occurrence.kind == "Pod"
            && self.feeds.iter().any(|(feed, known)| {
                feed.resource == Resource::Pods
                    && feed.fields.is_some()
                    && known.objects.contains_key(&key)
            });
        let node = self.scope.node.as_ref().map(|node| node.name.as_str());
        let placement = crate::scope::Placement {
            kind: &occurrence.kind,
            name: &occurrence.name,
            namespace: occurrence.namespace.as_deref(),
            node: if local { node } else { None },
        };
        self.scope.admits(&placement).is_ok()
    }
}

/// Why a trigger on `kind` in `namespaces` cannot be evaluated now, if it cannot.
fn unknown(state: &State, kind: TargetKind, namespaces: &[String], now: Instant) -> Option<String> {
    let scope = &state.scope;
    let needed = needs(kind, namespaces);
    let outside = |need: &Feed| need.within(scope).is_empty();
    // A Node trigger needs the Nodes; a namespaced one, some namespace in scope.
    if needed
        .iter()
        .any(|need| need.resource == Resource::Nodes && outside(need))
        || needed.iter().all(outside)
    {
        return Some(format!(
            "a {} trigger needs watches outside this Salve's scope ({scope})",
            kind.as_str()
        ));
    }
    for need in needed.iter().flat_map(|need| need.within(scope)) {
        let all = Feed {
            namespace: None,
            ..need.clone()
        };
        let covering = [all, need.clone()];
        let Some((feed, known)) = covering
            .iter()
            .find_map(|feed| state.feeds.get_key_value(feed))
        else {
            return Some(format!(
                "{} are not watched (Salve watches what the playbooks loaded at its start need)",
                need.describe()
            ));
        };
        let failing = known
            .failure
            .as_ref()
            .filter(|f| now.saturating_duration_since(f.last) < RETRY_GRACE);
        if !known.listed {
            let mut reason = format!(
                "waiting for the first list of {} from the Kubernetes API",
                feed.describe()
            );
            if let Some(failure) = failing {
                reason.push_str(&format!(" (last error: {})", failure.error));
            }
            return Some(reason);
        }
        if let Some(failure) = failing
            && now.saturating_duration_since(failure.since) >= state.stale_after
        {
            return Some(format!(
                "the watch of {} has been failing for over {}s: {}",
                feed.describe(),
                state.stale_after.as_secs(),
                failure.error
            ));
        }
    }
    None
}

/// An `Api` in `namespace`, or across all.
fn api<K>(client: kube::Client, namespace: Option<&str>) -> Api<K>
where
    K: kube::Resource<Scope = NamespaceResourceScope>,
    K::DynamicType: Default,
{
    match namespace {
        Some(namespace) => Api::namespaced(client, namespace),
        None => Api::all(client),
    }
}

/// Runs the watch `feed` into `store` until `cancel` fires, reading each object with `read`.
async fn run_feed<K>(
    store: EventStore,
    feed: Feed,
    api: Api<K>,
    read: fn(&K) -> Vec<Occurrence>,
    cancel: CancellationToken,
) where
    K: kube::Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    let key = |object: &K| {
        format!(
            "{}/{}",
            object.namespace().unwrap_or_default(),
            object.name_any()
        )
    };
    let mut config = watcher::Config::default();
    if let Some(fields) = &feed.fields {
        config = config.fields(fields);
    }
    let mut stream = std::pin::pin!(watcher(api, config).default_backoff());
    loop {
        let next = tokio::select! {
            () = cancel.cancelled() => return,
            next = stream.next() => next,
        };
        let change = match next {
            // The watcher retries for ever; an end would be a bug in it.
            None => {
                store.fail(&feed, "the watch ended".into(), Instant::now());
                return;
            }
            Some(Err(error)) => {
                store.fail(&feed, crate::diagnostic::chain(&error), Instant::now());
                continue;
            }
            Some(Ok(watcher::Event::Apply(object))) => Change::Apply(key(&object), read(&object)),
            Some(Ok(watcher::Event::Delete(object))) => Change::Delete(key(&object)),
            Some(Ok(watcher::Event::Init)) => Change::Init,
            Some(Ok(watcher::Event::InitApply(object))) => {
                Change::InitApply(key(&object), read(&object))
            }
            Some(Ok(watcher::Event::InitDone)) => Change::InitDone,
        };
        store.apply(&feed, change);
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn watches_are_narrowed_to_the_scope() {
        let mut everywhere = WatchScope::default();
        everywhere.add(TargetKind::Pod, &[]);
        everywhere.add(TargetKind::Node, &[]);
        let described = |scope: &WatchScope| -> Vec<String> {
            scope.feeds().iter().map(Feed::describe).collect()
        };
        let namespaced = everywhere
            .clone()
            .within(&Scope::namespaces(["a", "default"]));
        assert_eq!(
            described(&namespaced),
            [
                "Events in namespace a",
                "Events in namespace default",
                "Pods in namespace a",
                "Pods in namespace default",
            ],
            "no Nodes, and no namespace outside"
        );
        let local = everywhere.within(&Scope::node_local("n1", 1, "salve"));
        assert_eq!(
            described(&local),
            [
                "Events",
                "Pods (spec.nodeName=n1)",
                "Nodes (metadata.name=n1)",
            ]
        );
        // A trigger needing what the scope cannot see is inconclusive, never healthy.
        let store = EventStore::new();
        store.lock().scope = Scope::namespaces(["a"]);
        let nodes = store.observe(TargetKind::Node, &strings(&["NodeNotReady"]), &[], t(0));
        assert!(
            matches!(&nodes, Observation::Inconclusive(r) if r.contains("outside this Salve's scope")),
            "{nodes:?}"
        );
        let other = store.observe(
            TargetKind::Pod,
            &strings(&["OOMKilled"]),
            &strings(&["b"]),
            t(0),
        );
        assert!(matches!(other, Observation::Inconclusive(_)), "{other:?}");
    }

    use super::*;

    fn t(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + seconds, 0).expect("valid time")
    }

    fn rfc3339(seconds: i64) -> String {
        t(seconds).to_rfc3339()
    }

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    fn pod(status: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "api-1", "namespace": "prod"},
            "spec": {"containers": [{"name": "app", "image": "app:1"}]},
            "status": status,
        }))
        .expect("a valid Pod")
    }

    fn reasons(found: &[Occurrence]) -> Vec<(&str, Option<&str>, Holds)> {
        found
            .iter()
            .map(|o| (o.reason.as_str(), o.container.as_deref(), o.holds))
            .collect()
    }

    #[test]
    fn a_pod_reports_waiting_and_terminated_containers_and_scheduling() {
        let pod = pod(json!({
            "containerStatuses": [{
                "name": "app", "image": "app:1", "imageID": "", "ready": false,
                "restartCount": 4,
                "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                "lastState": {"terminated": {"exitCode": 137, "reason": "OOMKilled",
                                             "finishedAt": rfc3339(0)}},
            }, {
                "name": "sidecar", "image": "s:1", "imageID": "", "ready": true,
                "restartCount": 0, "state": {"running": {}},
            }],
            "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable"}],
        }));
        let found = pod_occurrences(&pod);
        assert_eq!(
            reasons(&found),
            [
                ("CrashLoopBackOff", Some("app"), Holds::WhileReported),
                (
                    "OOMKilled",
                    Some("app"),
                    Holds::Between {
                        from: t(0),
                        until: t(300)
                    }
                ),
                ("Unschedulable", None, Holds::WhileReported),
                ("FailedScheduling", None, Holds::WhileReported),
            ]
        );
        assert_eq!(
            found[0].labels(),
            LabelSet::from([
                ("namespace".into(), "prod".into()),
                ("pod".into(), "api-1".into()),
                ("kind".into(), "Pod".into()),
                ("name".into(), "api-1".into()),
                ("reason".into(), "CrashLoopBackOff".into()),
                ("container".into(), "app".into()),
            ])
        );
    }

    #[test]
    fn a_healthy_pod_or_one_without_status_reports_nothing() {
        let running = pod(json!({
            "containerStatuses": [{
                "name": "app", "image": "app:1", "imageID": "", "ready": true,
                "restartCount": 0, "state": {"running": {}},
            }],
            "conditions": [{"type": "PodScheduled", "status": "True"}],
        }));
        assert!(pod_occurrences(&running).is_empty());
        assert!(pod_occurrences(&pod(json!({}))).is_empty());
        // A termination that cannot be placed in time is left out.
        let unplaced = pod(json!({"containerStatuses": [{
            "name": "app", "image": "app:1", "imageID": "", "ready": false, "restartCount": 1,
            "lastState": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}},
        }]}));
        assert!(pod_occurrences(&unplaced).is_empty());
    }

    #[rstest::rstest]
    #[case::ready("Ready", "True", None)]
    #[case::not_ready("Ready", "False", Some("NodeNotReady"))]
    #[case::unknown("Ready", "Unknown", Some("NodeNotReady"))]
    #[case::memory_pressure("MemoryPressure", "True", Some("NodeHasInsufficientMemory"))]
    #[case::no_memory_pressure("MemoryPressure", "False", None)]
    #[case::disk_pressure("DiskPressure", "True", Some("NodeHasDiskPressure"))]
    #[case::pid_pressure("PIDPressure", "True", Some("NodeHasInsufficientPID"))]
    fn node_conditions_map_to_the_kubelets_reasons(
        #[case] condition: &str,
        #[case] status: &str,
        #[case] reason: Option<&str>,
    ) {
        let node: Node = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"},
            "status": {"conditions": [{"type": condition, "status": status}]},
        }))
        .expect("a valid Node");
        let found = node_occurrences(&node);
        let got: Vec<&str> = found.iter().map(|o| o.reason.as_str()).collect();
        assert_eq!(got, reason.into_iter().collect::<Vec<_>>());
        for o in &found {
            assert_eq!(o.labels().get("node").map(String::as_str), Some("n1"));
            assert!(!o.labels().contains_key("namespace"));
        }
    }

    fn event(body: serde_json::Value) -> CoreEvent {
        let mut value = json!({
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": "api-1.17a", "namespace": "prod"},
            "involvedObject": {"kind": "Pod", "namespace": "prod", "name": "api-1",
                               "fieldPath": "spec.containers{app}"},
            "reason": "BackOff", "type": "Warning",
        });
        if let (Some(base), Some(extra)) = (value.as_object_mut(), body.as_object()) {
            base.extend(extra.clone());
        }
        serde_json::from_value(value).expect("a valid Event")
    }

    #[test]
    fn an_event_holds_from_its_last_occurrence_for_the_window() {
        let found = event_occurrence(&event(json!({
            "firstTimestamp": rfc3339(0), "lastTimestamp": rfc3339(60), "count": 3,
        })))
        .expect("an occurrence");
        assert_eq!(found.container.as_deref(), Some("app"));
        assert_eq!(found.namespace.as_deref(), Some("prod"));
        assert!(!found.holds_at(t(59)));
        assert!(found.holds_at(t(60)));
        assert!(found.holds_at(t(360)));
        assert!(!found.holds_at(t(361)));
        // A series' last observation is later than its lastTimestamp.
        let series = event_occurrence(&event(json!({
            "eventTime": "2027-01-15T08:00:00.000000Z",
            "lastTimestamp": rfc3339(60),
            "series": {"count": 9, "lastObservedTime": rfc3339(600)},
        })))
        .expect("an occurrence");
        assert_eq!(series.holds, window(t(600)));
        // Only a creation time: it counts from then.
        let created = event_occurrence(&event(json!({
            "metadata": {"name": "e", "namespace": "prod", "creationTimestamp": rfc3339(5)},
        })))
        .expect("an occurrence");
        assert_eq!(created.holds, window(t(5)));
    }

    #[test]
    fn an_event_without_reason_object_or_time_reports_nothing() {
        assert!(
            event_occurrence(&event(json!({"lastTimestamp": rfc3339(0), "reason": ""}))).is_none()
        );
        assert!(event_occurrence(&event(json!({}))).is_none(), "no time");
        assert!(
            event_occurrence(&event(json!({
                "lastTimestamp": rfc3339(0), "involvedObject": {"kind": "Pod"},
            })))
            .is_none()
        );
    }

    #[test]
    fn node_events_have_no_namespace() {
        let found = event_occurrence(&event(json!({
            "metadata": {"name": "n1.17a", "namespace": "default"},
            "involvedObject": {"kind": "Node", "name": "n1", "uid": "n1"},
            "reason": "NodeNotReady", "type": "Normal", "lastTimestamp": rfc3339(0),
        })))
        .expect("an occurrence");
        assert_eq!(found.namespace, None);
        assert_eq!(found.labels().get("node").map(String::as_str), Some("n1"));
    }

    #[rstest::rstest]
    #[case("spec.containers{app}", Some("app"))]
    #[case("spec.initContainers{migrate}", Some("migrate"))]
    #[case("spec.containers{}", None)]
    #[case("spec.containers{app", None)]
    #[case("", None)]
    fn containers_come_from_the_field_path(#[case] path: &str, #[case] want: Option<&str>) {
        assert_eq!(container_of(path).as_deref(), want);
    }

    fn samples(observation: Observation) -> Vec<LabelSet> {
        match observation {
            Observation::Holds(samples) => samples.into_iter().map(|s| s.labels).collect(),
            other => panic!("not Holds: {other:?}"),
        }
    }

    fn inconclusive(observation: Observation) -> String {
        match observation {
            Observation::Inconclusive(reason) => reason,
            other => panic!("not Inconclusive: {other:?}"),
        }
    }

    #[test]
    fn a_trigger_sees_its_kind_reasons_and_namespaces_only() {
        let store = EventStore::recorded([
            Occurrence::event("Pod", Some("prod"), "a", "BackOff", t(0)),
            Occurrence::event("Pod", Some("dev"), "b", "BackOff", t(0)),
            Occurrence::event("Pod", Some("prod"), "c", "Killing", t(0)),
            Occurrence::event("Deployment", Some("prod"), "d", "BackOff", t(0)),
            Occurrence::event("Node", None, "n1", "NodeNotReady", t(0)),
        ]);
        let names = |kind, reasons: &[&str], namespaces: &[&str]| -> Vec<String> {
            samples(store.observe(kind, &strings(reasons), &strings(namespaces), t(1)))
                .iter()
                .map(|l| l["name"].clone())
                .collect()
        };
        assert_eq!(names(TargetKind::Pod, &["BackOff"], &[]), ["a", "b"]);
        assert_eq!(names(TargetKind::Pod, &["BackOff"], &["prod"]), ["a"]);
        assert_eq!(
            names(TargetKind::Pod, &["BackOff", "Killing"], &["prod"]),
            ["a", "c"]
        );
        assert_eq!(names(TargetKind::Deployment, &["BackOff"], &[]), ["d"]);
        assert!(
            names(TargetKind::Pod, &["backoff"], &[]).is_empty(),
            "exact match"
        );
        // Namespaces do not apply to Nodes.
        assert_eq!(
            names(TargetKind::Node, &["NodeNotReady"], &["prod"]),
            ["n1"]
        );
    }

    fn store_watching(scope: &WatchScope) -> EventStore {
        let store = EventStore::with_stale_after(Duration::from_secs(60));
        let mut state = store.lock();
        for feed in scope.feeds() {
            state.feeds.insert(feed, FeedState::default());
        }
        drop(state);
        store
    }

    #[test]
    fn scopes_union_namespaces_and_watch_all_when_one_trigger_has_none() {
        let mut scope = WatchScope::default();
        assert!(scope.is_empty());
        scope.add(TargetKind::Pod, &strings(&["prod", "shop"]));
        scope.add(TargetKind::Deployment, &strings(&["batch"]));
        let feeds: Vec<String> = scope.feeds().iter().map(Feed::describe).collect();
        assert_eq!(
            feeds,
            [
                "Events in namespace batch",
                "Events in namespace prod",
                "Events in namespace shop",
                "Pods in namespace prod",
                "Pods in namespace shop",
            ]
        );
        scope.add(TargetKind::Node, &[]);
        scope.add(TargetKind::Job, &[]);
        let feeds: Vec<String> = scope.feeds().iter().map(Feed::describe).collect();
        assert_eq!(
            feeds,
            [
                "Events",
                "Pods in namespace prod",
                "Pods in namespace shop",
                "Nodes"
            ]
        );
    }

    #[test]
    fn missing_unlisted_and_failing_watches_are_inconclusive() {
        let mut scope = WatchScope::default();
        scope.add(TargetKind::Pod, &strings(&["prod"]));
        let store = store_watching(&scope);
        let reasons = strings(&["CrashLoopBackOff"]);
        let observe = |namespaces: &[&str]| {
            store.observe(TargetKind::Pod, &reasons, &strings(namespaces), t(0))
        };
        assert_eq!(
            inconclusive(observe(&["dev"])),
            "Pods in namespace dev are not watched (Salve watches what the playbooks loaded at its start need)"
        );
        assert_eq!(
            inconclusive(observe(&[])),
            "Pods are not watched (Salve watches what the playbooks loaded at its start need)"
        );
        assert_eq!(
            inconclusive(observe(&["prod"])),
            "waiting for the first list of Pods in namespace prod from the Kubernetes API"
        );
        let pods = Feed::namespaced(Resource::Pods, "prod");
        let events = Feed::namespaced(Resource::Events, "prod");
        let start = Instant::now();
        store.fail(&pods, "connection refused".into(), start);
        assert_eq!(
            inconclusive(observe(&["prod"])),
            "waiting for the first list of Pods in namespace prod from the Kubernetes API \
             (last error: connection refused)"
        );
        let crashing = Occurrence {
            container: Some("app".into()),
            holds: Holds::WhileReported,
            ..Occurrence::event("Pod", Some("prod"), "api-1", "CrashLoopBackOff", t(0))
        };
        store.apply(&pods, Change::Init);
        store.apply(
            &pods,
            Change::InitApply("prod/api-1".into(), vec![crashing]),
        );
        assert!(inconclusive(observe(&["prod"])).starts_with("waiting for the first list of Pods"));
        store.apply(&pods, Change::InitDone);
        assert!(
            inconclusive(observe(&["prod"])).starts_with("waiting for the first list of Events")
        );
        store.apply(&events, Change::Init);
        store.apply(&events, Change::InitDone);
        assert_eq!(samples(observe(&["prod"])).len(), 1);

        // Failing for less than stale_after: the last known state stands.
        let now = Instant::now();
        store.fail(&pods, "connection refused".into(), now);
        assert_eq!(samples(observe(&["prod"])).len(), 1);
        let state = store.lock();
        let at = |later| unknown(&state, TargetKind::Pod, &strings(&["prod"]), later);
        let failed_at = now;
        assert_eq!(at(failed_at + Duration::from_secs(59)), None);
        assert_eq!(
            at(failed_at + Duration::from_secs(60)).as_deref(),
            Some(
                "the watch of Pods in namespace prod has been failing for over 60s: \
                 connection refused"
            ),
        );
        // No error for RETRY_GRACE: the watcher reconnected quietly.
        assert_eq!(at(failed_at + RETRY_GRACE), None);
    }

    #[test]
    fn a_change_clears_a_failure_and_is_announced() {
        let mut scope = WatchScope::default();
        scope.add(TargetKind::Node, &[]);
        let store = store_watching(&scope);
        let mut changes = store.changes();
        let nodes = Feed::all(Resource::Nodes);
        store.apply(&nodes, Change::Init);
        assert!(
            !changes.has_changed().expect("alive"),
            "a list in progress is not news"
        );
        store.apply(&nodes, Change::InitDone);
        assert!(changes.has_changed().expect("alive"));
        changes.borrow_and_update();
        store.fail(&nodes, "boom".into(), Instant::now());
        store.apply(&nodes, Change::Apply("/n1".into(), vec![]));
        assert!(store.lock().feeds[&nodes].failure.is_none());
        assert!(
            !changes.has_changed().expect("alive"),
            "nothing to report, nothing changed"
        );
        let not_ready = Occurrence {
            holds: Holds::WhileReported,
            ..Occurrence::event("Node", None, "n1", "NodeNotReady", t(0))
        };
        store.apply(&nodes, Change::Apply("/n1".into(), vec![not_ready.clone()]));
        assert!(changes.has_changed().expect("alive"));
        changes.borrow_and_update();
        store.apply(&nodes, Change::Apply("/n1".into(), vec![not_ready]));
        assert!(!changes.has_changed().expect("alive"), "the same again");
        store.apply(&nodes, Change::Delete("/n1".into()));
        assert!(changes.has_changed().expect("alive"));
    }

    #[test]
    fn a_relist_replaces_what_was_known_when_it_completes() {
        let mut scope = WatchScope::default();
        scope.add(TargetKind::Node, &[]);
        let store = store_watching(&scope);
        let events = Feed::namespaced(Resource::Events, NODE_EVENTS_NAMESPACE);
        let nodes = Feed::all(Resource::Nodes);
        let occurrence = |name: &str| Occurrence {
            holds: Holds::WhileReported,
            ..Occurrence::event("Node", None, name, "NodeNotReady", t(0))
        };
        for feed in [&events, &nodes] {
            store.apply(feed, Change::Init);
            store.apply(feed, Change::InitDone);
        }
        store.apply(&nodes, Change::Apply("/n1".into(), vec![occurrence("n1")]));
        let names = || -> Vec<String> {
            samples(store.observe(TargetKind::Node, &strings(&["NodeNotReady"]), &[], t(0)))
                .iter()
                .map(|l| l["node"].clone())
                .collect()
        };
        assert_eq!(names(), ["n1"]);
        store.apply(&nodes, Change::Init);
        store.apply(
            &nodes,
            Change::InitApply("/n2".into(), vec![occurrence("n2")]),
        );
        assert_eq!(names(), ["n1"], "kept while the relist runs");
        store.apply(&nodes, Change::InitDone);
        assert_eq!(names(), ["n2"], "n1 was deleted while the watch was down");
    }
}
