//! Playbooks and autonomy policies kept in the cluster as `Playbook` and `AutonomyPolicy`
//! custom resources (`salve.dev/v1`, [`crate::crd`]), loaded with the files and reported on in
//! each object's status.
//!
//! A [`Resources`] keeps the latest objects, fed by `kube::runtime` watchers (one per kind and
//! namespace, [`run`]). It is a [`Documents`] source for the [`Reloader`]: at every reload each
//! object is rendered as the YAML file it stands for (`apiVersion`, `kind`, `metadata.name`
//! and its `spec`: the spec of a file, exactly) under the name `cluster:NS/KIND/NAME`
//! (`cluster:prod/playbook/api-restart`), and loaded with the files by the same loader, so it
//! is checked the same way and diagnostics say where it came from. An object may not name a
//! file: a `runbook` or a WASM `module` in one is an error (there is no directory to find it
//! in, and Salve reads no file on behalf of a custom resource).
//!
//! A change to an object's spec (a new `metadata.generation`) reloads the set; a change to its
//! status alone (Salve's own writes, coming back through the watch) does not. After each
//! reload, every object loaded gets its status through the status subresource (a JSON merge
//! patch), only when it would change:
//!
//! - `observedGeneration`: the generation loaded;
//! - condition `Valid`: `True`, or `False` with reason `Invalid` and the first error;
//! - condition `Active`: `True` when this version of the object is part of the active set;
//!   `False` with reason `SetRejected` when the set was refused (by this object's errors or
//!   another's) and the last good set still runs (with an earlier version of the object, or
//!   without it);
//! - `digest`: the content digest, as `salve validate -v` prints it, when it compiled;
//! - `errors`: each diagnostic about the object (warnings prefixed `warning:`), its `path` the
//!   JSON pointer of the field it is about (`/spec/steps/0/risk`), or `""` with the line and
//!   column in the rendered YAML in the message when it names no field.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use futures_util::StreamExt as _;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
use kube::runtime::{WatchStreamExt as _, watcher};
use serde_json::{Value, json};
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::load::InMemoryDocument;
use super::watch::{Documents, LoadReport, ReloadOutcome, Reloader, log_outcome};
use crate::crd::{self, Condition, ResourceError, ResourceStatus};
use crate::diagnostic::Diagnostic;
use crate::schema::DocumentKind;

/// At most this many errors are written to one object's status (the rest are counted).
pub const MAX_STATUS_ERRORS: usize = 50;

/// How long [`start`] waits for the first list of every watcher before the engine starts
/// without the objects (they join at the first reload after the list arrives).
pub const SYNC_PATIENCE: Duration = Duration::from_secs(10);

/// The API resource of `kind` in `salve.dev/v1`.
pub fn api_resource(kind: DocumentKind) -> ApiResource {
    let plural = match kind {
        DocumentKind::Playbook => "playbooks",
        DocumentKind::AutonomyPolicy => "autonomypolicies",
    };
    ApiResource {
        group: crd::GROUP.into(),
        version: crd::VERSION.into(),
        api_version: format!("{}/{}", crd::GROUP, crd::VERSION),
        kind: kind.as_str().into(),
        plural: plural.into(),
    }
}

/// One object: its kind, namespace and name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ResourceKey {
    /// `Playbook` or `AutonomyPolicy`.
    pub kind: DocumentKind,
    /// Its namespace.
    pub namespace: String,
    /// Its name (the playbook's or policy's name in the set).
    pub name: String,
}

impl ResourceKey {
    /// The name it is loaded under, in place of a file's path:
    /// `cluster:NS/playbook/NAME` or `cluster:NS/autonomypolicy/NAME`.
    pub fn document_name(&self) -> PathBuf {
        PathBuf::from(format!(
            "cluster:{}/{}/{}",
            self.namespace,
            self.kind.as_str().to_ascii_lowercase(),
            self.name
        ))
    }

    fn of(kind: DocumentKind, object: &DynamicObject) -> Self {
        ResourceKey {
            kind,
            namespace: object.metadata.namespace.clone().unwrap_or_default(),
            name: object.metadata.name.clone().unwrap_or_default(),
        }
    }
}

/// What is kept of an object.
#[derive(Debug, Clone, PartialEq)]
struct Stored {
    generation: Option<i64>,
    spec: Value,
    /// Its status as last seen (`None` when absent or not Salve's shape).
    status: Option<ResourceStatus>,
}

impl Stored {
    fn of(object: &DynamicObject) -> Self {
        Stored {
            generation: object.metadata.generation,
            spec: object.data.get("spec").cloned().unwrap_or(Value::Null),
            status: object
                .data
                .get("status")
                .and_then(|s| serde_json::from_value(s.clone()).ok()),
        }
    }

    /// The document it stands for.
    fn document(&self, key: &ResourceKey) -> Value {
        json!({
            "apiVersion": format!("{}/{}", crd::GROUP, crd::VERSION),
            "kind": key.kind.as_str(),
            "metadata": {"name": key.name},
            "spec": self.spec,
        })
    }
}

/// The latest `Playbook` and `AutonomyPolicy` objects, as a [`Documents`] source.
#[derive(Debug)]
pub struct Resources {
    state: Mutex<State>,
    changes: Arc<Notify>,
    reported: Notify,
    /// (watchers that listed once, watchers started).
    synced: watch::Sender<(usize, usize)>,
}

#[derive(Debug, Default)]
struct State {
    objects: BTreeMap<ResourceKey, Stored>,
    /// The generation of each object in the last answer of `documents()`.
    loading: BTreeMap<ResourceKey, Option<i64>>,
    /// The last reload's report, with the generations it loaded.
    report: Option<(BTreeMap<ResourceKey, Option<i64>>, LoadReport)>,
}

impl Default for Resources {
    fn default() -> Self {
        Resources {
            state: Mutex::default(),
            changes: Arc::new(Notify::new()),
            reported: Notify::new(),
            synced: watch::Sender::new((0, 0)),
        }
    }
}

impl Resources {
    /// An empty store.
    pub fn new() -> Arc<Self> {
        Arc::new(Resources::default())
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The objects held, in order.
    pub fn keys(&self) -> Vec<ResourceKey> {
        self.state().objects.keys().cloned().collect()
    }

    /// Waits until every watcher [`run`] started has listed its objects once.
    pub async fn synced(&self) {
        let mut rx = self.synced.subscribe();
        let _ = rx
            .wait_for(|(done, started)| *started > 0 && done >= started)
            .await;
    }

    /// Records `object`; whether the set must be reloaded (its spec or generation changed, or
    /// it is new). A status-only change updates the status kept, nothing more.
    fn apply(&self, key: ResourceKey, stored: Stored) -> bool {
        let mut state = self.state();
        match state.objects.get_mut(&key) {
            Some(old) if old.spec == stored.spec && old.generation == stored.generation => {
                old.status = stored.status;
                false
            }
            _ => {
                state.objects.insert(key, stored);
                true
            }
        }
    }

    /// Forgets an object; whether it was held.
    fn delete(&self, key: &ResourceKey) -> bool {
        self.state().objects.remove(key).is_some()
    }

    /// Replaces every object of `kind` in `namespace` (all when `None`) by `listed`, after a
    /// watcher's (re)list; whether the set must be reloaded.
    fn replace(
        &self,
        kind: DocumentKind,
        namespace: Option<&str>,
        listed: BTreeMap<ResourceKey, Stored>,
    ) -> bool {
        let mut state = self.state();
        let in_feed =
            |k: &ResourceKey| k.kind == kind && namespace.is_none_or(|ns| k.namespace == ns);
        let before = state.objects.len();
        state
            .objects
            .retain(|k, _| !in_feed(k) || listed.contains_key(k));
        let mut changed = state.objects.len() != before;
        for (key, stored) in listed {
            match state.objects.get_mut(&key) {
                Some(old) if old.spec == stored.spec && old.generation == stored.generation => {
                    old.status = stored.status;
                }
                _ => {
                    state.objects.insert(key, stored);
                    changed = true;
                }
            }
        }
        changed
    }

    /// The statuses the last report asks for that differ from the objects' own, stamped
    /// `now` where a condition changes.
    fn pending_writes(&self, now: &str) -> Vec<(ResourceKey, ResourceStatus)> {
        let state = self.state();
        let Some((loaded, report)) = &state.report else {
            return Vec::new();
        };
        let mut writes = Vec::new();
        for (key, generation) in loaded {
            // Gone, or changed since: the reload that change causes reports on it.
            let Some(stored) = state.objects.get(key) else {
                continue;
            };
            if stored.generation != *generation {
                continue;
            }
            let mut status = status_of(key, stored, report, now);
            if let Some(observed) = &stored.status {
                keep_transition_times(&mut status, observed);
            }
            if stored.status.as_ref() != Some(&status) {
                writes.push((key.clone(), status));
            }
        }
        writes
    }

    /// Records the status written (the watch brings it back later).
    fn wrote(&self, key: &ResourceKey, status: ResourceStatus) {
        if let Some(stored) = self.state().objects.get_mut(key) {
            stored.status = Some(status);
        }
    }
}

impl Documents for Resources {
    fn documents(&self) -> Vec<InMemoryDocument> {
        let mut state = self.state();
        let mut loading = BTreeMap::new();
        let documents = state
            .objects
            .iter()
            .map(|(key, stored)| {
                loading.insert(key.clone(), stored.generation);
                InMemoryDocument {
                    name: key.document_name(),
                    // Plain JSON data always serializes.
                    text: serde_saphyr::to_string(&stored.document(key)).unwrap_or_default(),
                }
            })
            .collect();
        state.loading = loading;
        documents
    }

    fn changes(&self) -> Arc<Notify> {
        Arc::clone(&self.changes)
    }

    fn reloaded(&self, report: &LoadReport) {
        let mut state = self.state();
        let loaded = std::mem::take(&mut state.loading);
        state.report = Some((loaded, report.clone()));
        drop(state);
        self.reported.notify_one();
    }
}

/// The status `report` gives the object `key`.
fn status_of(key: &ResourceKey, stored: &Stored, report: &LoadReport, now: &str) -> ResourceStatus {
    let name = key.document_name();
    let diagnostics: Vec<&Diagnostic> = report
        .diagnostics
        .iter()
        .filter(|d| d.file == name)
        .collect();
    let errors = diagnostics.iter().filter(|d| d.is_error()).count();
    let warnings = diagnostics.len() - errors;
    let condition = |type_: &str, ok: bool, reason: &str, message: String| Condition {
        type_: type_.into(),
        status: if ok { "True" } else { "False" }.into(),
        reason: reason.into(),
        message,
        last_transition_time: now.into(),
    };
    let valid = match diagnostics.iter().find(|d| d.is_error()) {
        None if warnings == 0 => condition("Valid", true, "Valid", "loaded without errors".into()),
        None => condition(
            "Valid",
            true,
            "Valid",
            format!("loaded, with {warnings} warning(s) (see errors)"),
        ),
        Some(first) => {
            let mut message = headline(first);
            if errors > 1 {
                message.push_str(&format!(" (and {} more errors)", errors - 1));
            }
            condition("Valid", false, "Invalid", message)
        }
    };
    let digest = report.digests.get(&name).cloned();
    let active_digest = match key.kind {
        DocumentKind::Playbook => report
            .active
            .playbook(&key.name)
            .filter(|p| p.source.file == name)
            .map(|p| p.digest.clone()),
        DocumentKind::AutonomyPolicy => report
            .active
            .policy(&key.name)
            .filter(|p| p.source.file == name)
            .map(|p| p.digest.clone()),
    };
    let what = match key.kind {
        DocumentKind::Playbook => "playbook",
        DocumentKind::AutonomyPolicy => "policy",
    };
    let whose = if errors > 0 {
        "fix the errors below"
    } else {
        "the errors are in other playbooks or policies: see their status or Salve's log"
    };
    let active = match (&active_digest, &digest) {
        (Some(active), Some(digest)) if active == digest => {
            condition("Active", true, "Active", "part of the active set".into())
        }
        (Some(_), _) if report.rejected => condition(
            "Active",
            false,
            "SetRejected",
            format!(
                "the change was rejected ({whose}): the last good set still runs, with an \
                 earlier version of this {what}"
            ),
        ),
        (None, _) if report.rejected => condition(
            "Active",
            false,
            "SetRejected",
            format!(
                "the change was rejected ({whose}): the last good set still runs, without this \
                 {what}"
            ),
        ),
        _ => condition(
            "Active",
            false,
            "NotLoaded",
            format!("this version of the {what} is not part of the active set"),
        ),
    };
    let document = stored.document(key);
    let mut listed: Vec<ResourceError> = diagnostics
        .iter()
        .take(MAX_STATUS_ERRORS)
        .map(|d| resource_error(d, &document))
        .collect();
    if diagnostics.len() > MAX_STATUS_ERRORS {
        listed.push(ResourceError {
            path: String::new(),
            message: format!(
                "and {} more (see `salve validate` on the object)",
                diagnostics.len() - MAX_STATUS_ERRORS
            ),
        });
    }
    ResourceStatus {
        observed_generation: stored.generation,
        conditions: vec![valid, active],
        digest,
        errors: listed,
    }
}

/// A diagnostic in one line: its field and message.
fn headline(diagnostic: &Diagnostic) -> String {
    match &diagnostic.field {
        Some(field) => format!("{field}: {}", diagnostic.message),
        None => diagnostic.message.clone(),
    }
}

/// A diagnostic as a status error: the JSON pointer of its field within `document`, or its
/// position in the rendered YAML when it names no field.
fn resource_error(diagnostic: &Diagnostic, document: &Value) -> ResourceError {
    let mut message = String::new();
    if !diagnostic.is_error() {
        message.push_str("warning: ");
    }
    let path = match &diagnostic.field {
        Some(field) => pointer_of(field, document),
        None => {
            message.push_str(&format!(
                "line {}, column {} of the object as YAML: ",
                diagnostic.pos.line, diagnostic.pos.column
            ));
            String::new()
        }
    };
    message.push_str(&diagnostic.message);
    if let Some(expected) = &diagnostic.expected {
        message.push_str(&format!("; expected {expected}"));
    }
    if let Some(help) = &diagnostic.help {
        message.push_str(&format!("; {help}"));
    }
    ResourceError { path, message }
}

/// The JSON pointer of a dotted field path (`spec.steps[0].risk`) within `document`. Keys may
/// hold dots (an annotation's name): the longest key of the object that the path continues
/// with is taken.
fn pointer_of(field: &str, document: &Value) -> String {
    let mut pointer = String::new();
    let mut node = Some(document);
    let mut rest = field;
    while !rest.is_empty() {
        let segment;
        if let Some(after) = rest.strip_prefix('[')
            && let Some((index, tail)) = after.split_once(']')
        {
            segment = index.to_string();
            node = node.and_then(|n| n.get(index.parse::<usize>().unwrap_or(usize::MAX)));
            rest = tail;
        } else {
            let key = node
                .and_then(Value::as_object)
                .and_then(|object| {
                    object
                        .keys()
                        .filter(|k| {
                            !k.is_empty()
                                && rest.starts_with(k.as_str())
                                && matches!(rest.as_bytes().get(k.len()), None | Some(b'.' | b'['))
                        })
                        .max_by_key(|k| k.len())
                        .cloned()
                })
                .unwrap_or_else(|| {
                    rest.split(['.', '['])
                        .next()
                        .unwrap_or_default()
                        .to_string()
                });
            node = node.and_then(|n| n.get(&key));
            rest = &rest[key.len().min(rest.len())..];
            segment = key;
        }
        pointer.push('/');
        pointer.push_str(&segment.replace('~', "~0").replace('/', "~1"));
        rest = rest.strip_prefix('.').unwrap_or(rest);
    }
    pointer
}

/// Keeps `observed`'s `lastTransitionTime` of each condition whose status did not change.
fn keep_transition_times(status: &mut ResourceStatus, observed: &ResourceStatus) {
    for condition in &mut status.conditions {
        if let Some(old) = observed
            .conditions
            .iter()
            .find(|c| c.type_ == condition.type_ && c.status == condition.status)
        {
            condition.last_transition_time = old.last_transition_time.clone();
        }
    }
}

/// A merge patch setting `status` whole: fields it lacks are removed (`null`).
fn status_patch(status: &ResourceStatus) -> Value {
    let mut body = serde_json::to_value(status).unwrap_or_else(|_| json!({}));
    if let Some(fields) = body.as_object_mut() {
        for field in ["observedGeneration", "conditions", "digest", "errors"] {
            fields.entry(field).or_insert(Value::Null);
        }
    }
    json!({ "status": body })
}

/// Watches the objects of both kinds in `namespaces` (every namespace when `None`) into
/// `resources`, and writes their status after each reload it hears of, until `cancel`.
pub async fn run(
    resources: Arc<Resources>,
    client: kube::Client,
    namespaces: Option<Vec<String>>,
    cancel: CancellationToken,
) {
    let scopes: Vec<Option<String>> = match namespaces {
        Some(namespaces) => namespaces.into_iter().map(Some).collect(),
        None => vec![None],
    };
    let mut tasks = JoinSet::new();
    for kind in DocumentKind::ALL {
        for namespace in &scopes {
            resources.synced.send_modify(|(_, started)| *started += 1);
            tasks.spawn(watch_feed(
                Arc::clone(&resources),
                client.clone(),
                kind,
                namespace.clone(),
                cancel.clone(),
            ));
        }
    }
    tasks.spawn(write_statuses(resources, client, cancel));
    while tasks.join_next().await.is_some() {}
}

/// Starts [`run`], waits for its first lists (at most [`SYNC_PATIENCE`]) and reloads once,
/// so that the set the engine starts with holds the objects. Returns the reloader, now
/// loading them at every reload, and the task.
pub async fn start(
    reloader: Reloader,
    client: kube::Client,
    namespaces: Option<Vec<String>>,
    cancel: CancellationToken,
) -> (Reloader, tokio::task::JoinHandle<()>) {
    let resources = Resources::new();
    let reloader = reloader.with_documents(Arc::clone(&resources) as Arc<dyn Documents>);
    let task = tokio::spawn(run(Arc::clone(&resources), client, namespaces, cancel));
    if tokio::time::timeout(SYNC_PATIENCE, resources.synced())
        .await
        .is_err()
    {
        tracing::warn!(
            "Playbook and AutonomyPolicy objects not listed within {}s; starting without them \
             (they join when the list arrives)",
            SYNC_PATIENCE.as_secs()
        );
        return (reloader, task);
    }
    let outcome = tokio::task::block_in_place(|| reloader.reload());
    log_outcome(&outcome);
    if let ReloadOutcome::Rejected { .. } = outcome {
        tracing::error!(
            "the Playbook and AutonomyPolicy objects make the set invalid: starting with the \
             files alone until they are fixed (see each object's status)"
        );
    }
    (reloader, task)
}

/// Runs one watcher: `kind` in `namespace` (every namespace when `None`).
async fn watch_feed(
    resources: Arc<Resources>,
    client: kube::Client,
    kind: DocumentKind,
    namespace: Option<String>,
    cancel: CancellationToken,
) {
    let resource = api_resource(kind);
    let api: Api<DynamicObject> = match &namespace {
        Some(namespace) => Api::namespaced_with(client, namespace, &resource),
        None => Api::all_with(client, &resource),
    };
    let mut stream = std::pin::pin!(watcher(api, watcher::Config::default()).default_backoff());
    let mut listing: Option<BTreeMap<ResourceKey, Stored>> = None;
    let mut synced = false;
    loop {
        let next = tokio::select! {
            () = cancel.cancelled() => return,
            next = stream.next() => next,
        };
        let reload = match next {
            None => {
                tracing::error!(kind = kind.as_str(), "the watch ended");
                return;
            }
            Some(Err(error)) => {
                tracing::warn!(
                    kind = kind.as_str(),
                    namespace = namespace.as_deref().unwrap_or("*"),
                    error = crate::diagnostic::chain(&error),
                    "cannot watch Salve's custom resources; retrying"
                );
                false
            }
            Some(Ok(watcher::Event::Apply(object))) => {
                resources.apply(ResourceKey::of(kind, &object), Stored::of(&object))
            }
            Some(Ok(watcher::Event::Delete(object))) => {
                resources.delete(&ResourceKey::of(kind, &object))
            }
            Some(Ok(watcher::Event::Init)) => {
                listing = Some(BTreeMap::new());
                false
            }
            Some(Ok(watcher::Event::InitApply(object))) => {
                listing
                    .get_or_insert_default()
                    .insert(ResourceKey::of(kind, &object), Stored::of(&object));
                false
            }
            Some(Ok(watcher::Event::InitDone)) => {
                let listed = listing.take().unwrap_or_default();
                let changed = resources.replace(kind, namespace.as_deref(), listed);
                if !synced {
                    synced = true;
                    resources.synced.send_modify(|(done, _)| *done += 1);
                }
                changed
            }
        };
        if reload {
            resources.changes.notify_one();
        }
    }
}

/// Writes the statuses each reload asks for, until `cancel`.
async fn write_statuses(
    resources: Arc<Resources>,
    client: kube::Client,
    cancel: CancellationToken,
) {
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            () = resources.reported.notified() => {}
        }
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        for (key, status) in resources.pending_writes(&now) {
            let api: Api<DynamicObject> =
                Api::namespaced_with(client.clone(), &key.namespace, &api_resource(key.kind));
            let patch = Patch::Merge(status_patch(&status));
            match api
                .patch_status(&key.name, &PatchParams::default(), &patch)
                .await
            {
                Ok(_) => resources.wrote(&key, status),
                // Deleted meanwhile: its deletion reloads.
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(error) => tracing::warn!(
                    kind = key.kind.as_str(),
                    namespace = key.namespace,
                    name = key.name,
                    error = crate::diagnostic::chain(&error),
                    "cannot write the status; trying again at the next reload"
                ),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_paths_become_pointers_even_through_keys_with_dots() {
        let document = json!({
            "spec": {
                "steps": [{"risk": "hgih", "params": {"annotations": {"a.b/c": "x"}}}],
            }
        });
        assert_eq!(
            pointer_of("spec.steps[0].risk", &document),
            "/spec/steps/0/risk"
        );
        assert_eq!(
            pointer_of("spec.steps[0].params.annotations.a.b/c", &document),
            "/spec/steps/0/params/annotations/a.b~1c"
        );
        assert_eq!(
            pointer_of("spec.missing.field", &document),
            "/spec/missing/field"
        );
        assert_eq!(pointer_of("metadata.name", &document), "/metadata/name");
    }

    #[test]
    fn a_status_patch_clears_what_the_status_lacks() {
        let patch = status_patch(&ResourceStatus::default());
        assert_eq!(
            patch,
            json!({"status": {"observedGeneration": null, "conditions": null, "digest": null, "errors": null}})
        );
    }

    #[test]
    fn documents_render_as_their_file_would_be_written() {
        let resources = Resources::default();
        let key = ResourceKey {
            kind: DocumentKind::Playbook,
            namespace: "prod".into(),
            name: "api".into(),
        };
        let spec = json!({"trigger": {"promql": {"expr": "up{job=\"a\"} == 0"}}, "target": {"kind": "Deployment", "namespace": "${labels.namespace}", "name": "api"}});
        let object = Stored {
            generation: Some(3),
            spec: spec.clone(),
            status: None,
        };
        assert!(resources.apply(key.clone(), object.clone()));
        assert!(
            !resources.apply(key.clone(), object),
            "the same object again"
        );
        let documents = resources.documents();
        assert_eq!(documents.len(), 1);
        assert_eq!(
            documents[0].name,
            PathBuf::from("cluster:prod/playbook/api")
        );
        let parsed = crate::yaml::parse_documents(&documents[0].text).expect("valid YAML");
        assert_eq!(parsed[0].value["spec"], spec);
        assert_eq!(parsed[0].value["metadata"], json!({"name": "api"}));
    }
}
