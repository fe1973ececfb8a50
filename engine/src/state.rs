//! Incidents kept in the cluster: a `SalveIncident` object per incident (`salve.dev/v1`, in
//! Salve's namespace, named by the incident id) whose status holds every journal entry of the
//! incident, in order, and the fencing term of the leader that wrote last — the state a new
//! leader (or a rescheduled pod) needs to resume or roll back a remediation in flight.
//!
//! [`IncidentStore::append`] adds one entry as a replace of the status carrying the
//! `resourceVersion` it read: a concurrent writer's `409 Conflict` makes it read again and
//! retry, so no entry is ever overwritten, and an entry already there (a retry after a lost
//! answer) is not added twice. A writer whose term is older than the one recorded is
//! **fenced**: the append fails and nothing is written, so a leader that lost its lease cannot
//! record (and so, journaling first, cannot take) another step once a newer leader wrote.
//!
//! An approval's answer ([`IncidentStore::answer`]) is not fenced — a person's answer is not
//! an action, and any replica's API may take it — but the cluster decides which answer counts:
//! the first one written; another for the same approval is refused.
//!
//! With `salve run --cluster-state` (implied by `--leader-elect`) the journal mirrors every
//! incident entry here ([`ClusterMirror`]); a replica that starts (a rescheduled pod) or
//! takes the lead imports what its journal lacks before recovering ([`Importer`]): the
//! remediation left in flight is resumed or rolled back from the step it recorded, and an old
//! leader, fenced, records (and so does) nothing more. Meanwhile every replica follows what
//! the others write, so a follower's API shows the leader's incidents and takes answers to its
//! approvals; the leader deletes the objects of incidents over for longer than the retention.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Api;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, PostParams};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::crd::{GROUP, VERSION};
use crate::journal::{Journal, Kind, Mirror, Record};
use crate::lease::Leadership;

/// The kind's name.
pub const KIND: &str = "SalveIncident";

/// The kind's plural, in URLs.
pub const PLURAL: &str = "salveincidents";

/// How many times a conflicting write is read again and retried before giving up. Of the
/// writers that read one version, exactly one replace lands, so N writers racing on one
/// incident all land within N attempts; the engine has one or two (the leader, an approval).
const ATTEMPTS: usize = 16;

/// A `SalveIncident`'s spec: what it is about (its name is the incident's id).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IncidentSpec {
    /// The playbook whose incident it is.
    pub playbook: String,
}

/// One journal entry as kept in the cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StateEntry {
    /// Unique across writers: the writer's identity and its journal's sequence number
    /// (`salve-7d9f_1a2b/42`), so that a retried write is recognized.
    pub id: String,
    /// When it was decided (RFC 3339).
    pub at: String,
    /// What it is (`planned`, `step_started`, ...), as the journal spells it.
    pub kind: String,
    /// Everything else the journal holds of it.
    #[schemars(extend("x-kubernetes-preserve-unknown-fields" = true))]
    pub detail: Value,
}

/// What a `SalveIncident`'s status holds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IncidentState {
    /// The fencing term of the leader that wrote last; writers with an older one are refused.
    #[serde(default)]
    pub term: u64,
    /// Every entry, in the order written.
    #[serde(default)]
    pub entries: Vec<StateEntry>,
}

/// Why an append failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A newer leader wrote this incident: this writer must stop acting.
    #[error("incident {incident} is held by a newer leader (term {recorded} > {ours})")]
    Fenced {
        /// The incident.
        incident: String,
        /// The term recorded.
        recorded: u64,
        /// This writer's.
        ours: u64,
    },
    /// The approval was answered already (through another replica): that answer counts.
    #[error("approval {approval} was answered already ({answer})")]
    Answered {
        /// The approval.
        approval: String,
        /// The answer that counts, as the journal spells its kind.
        answer: String,
    },
    /// Writers kept conflicting.
    #[error("incident {incident}: still conflicting after {ATTEMPTS} attempts")]
    Contended {
        /// The incident.
        incident: String,
    },
    /// The object's status does not read as Salve's: nothing is written over it.
    #[error("incident {incident}: its status is not Salve's ({reason}); left as it is")]
    Unreadable {
        /// The incident.
        incident: String,
        /// What did not read.
        reason: String,
    },
    /// The local journal could not take an imported entry.
    #[error("journal: {0}")]
    Journal(String),
    /// The API refused or could not be reached.
    #[error("incident {incident}: {source}")]
    Api {
        /// The incident.
        incident: String,
        /// The client's error.
        #[source]
        source: kube::Error,
    },
}

/// The `SalveIncident` objects of one namespace.
#[derive(Clone)]
pub struct IncidentStore {
    api: Api<DynamicObject>,
    resource: ApiResource,
}

impl std::fmt::Debug for IncidentStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IncidentStore").finish_non_exhaustive()
    }
}

impl IncidentStore {
    /// The store in `namespace` (Salve's own).
    pub fn new(client: kube::Client, namespace: &str) -> Self {
        let resource =
            ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(GROUP, VERSION, KIND), PLURAL);
        IncidentStore {
            api: Api::namespaced_with(client, namespace, &resource),
            resource,
        }
    }

    /// What the cluster holds of `incident` (`None`: nothing yet).
    pub async fn read(&self, incident: &str) -> Result<Option<IncidentState>, Error> {
        let object = self.api.get_opt(incident).await.map_err(api(incident))?;
        object.map(|o| state_of(&o)).transpose()
    }

    /// Appends `entry` to `incident` of `playbook` as a leader of `term`: created when
    /// missing; read again and retried on a conflict; a no-op when an entry with its id is
    /// already there; refused when a newer term wrote.
    pub async fn append(
        &self,
        incident: &str,
        playbook: &str,
        entry: &StateEntry,
        term: u64,
    ) -> Result<(), Error> {
        self.write(incident, playbook, entry, Some(term)).await
    }

    /// Appends `entry`, the answer to an approval (granted, rejected, expired), from any
    /// replica: a person's answer is not an action, so it is not fenced (a follower's API may
    /// take it) and leaves the term as it is. The cluster decides which answer counts: one
    /// already there for the same approval refuses this one ([`Error::Answered`]).
    pub async fn answer(
        &self,
        incident: &str,
        playbook: &str,
        entry: &StateEntry,
    ) -> Result<(), Error> {
        self.write(incident, playbook, entry, None).await
    }

    /// Every `SalveIncident` of the namespace.
    async fn list(&self) -> Result<Vec<DynamicObject>, Error> {
        let listed = self
            .api
            .list(&kube::api::ListParams::default())
            .await
            .map_err(api("*"))?;
        Ok(listed.items)
    }

    /// Deletes `incident`'s object if its `resourceVersion` is still `version` (nothing was
    /// appended since it was read); whether it was (a changed or missing object is not).
    pub async fn delete(&self, incident: &str, version: &str) -> Result<bool, Error> {
        let params = kube::api::DeleteParams {
            preconditions: Some(kube::api::Preconditions {
                resource_version: Some(version.into()),
                uid: None,
            }),
            ..kube::api::DeleteParams::default()
        };
        match self.api.delete(incident, &params).await {
            Ok(_) => Ok(true),
            Err(source) if is_status(&source, 409) || is_status(&source, 404) => Ok(false),
            Err(source) => Err(Error::Api {
                incident: incident.into(),
                source,
            }),
        }
    }

    /// [`IncidentStore::append`] under `term`, or [`IncidentStore::answer`] without one.
    async fn write(
        &self,
        incident: &str,
        playbook: &str,
        entry: &StateEntry,
        term: Option<u64>,
    ) -> Result<(), Error> {
        for attempt in 0..ATTEMPTS {
            let object = match self.api.get_opt(incident).await.map_err(api(incident))? {
                Some(object) => object,
                None => match self.create(incident, playbook).await {
                    Ok(object) => object,
                    // Another writer created it first: read theirs.
                    Err(Error::Api { source, .. }) if is_status(&source, 409) => continue,
                    Err(e) => return Err(e),
                },
            };
            let mut state = state_of(&object)?;
            if state.entries.iter().any(|e| e.id == entry.id) {
                return Ok(());
            }
            match term {
                Some(term) if state.term > term => {
                    return Err(Error::Fenced {
                        incident: incident.into(),
                        recorded: state.term,
                        ours: term,
                    });
                }
                Some(term) => state.term = term,
                None => {
                    let approval = &entry.detail["approval"];
                    if let Some(answered) = state
                        .entries
                        .iter()
                        .find(|e| is_answer(&e.kind) && e.detail["approval"] == *approval)
                    {
                        return Err(Error::Answered {
                            approval: approval.as_str().unwrap_or_default().into(),
                            answer: answered.kind.clone(),
                        });
                    }
                }
            }
            state.entries.push(entry.clone());
            let mut updated = object;
            updated.data["status"] = json!(state);
            match self
                .api
                .replace_status(incident, &PostParams::default(), &updated)
                .await
            {
                Ok(_) => return Ok(()),
                Err(source) if is_status(&source, 409) => {
                    // Someone wrote in between: read again, a little later each time.
                    tokio::time::sleep(Duration::from_millis(2 << attempt.min(5))).await;
                }
                Err(source) => {
                    return Err(Error::Api {
                        incident: incident.into(),
                        source,
                    });
                }
            }
        }
        Err(Error::Contended {
            incident: incident.into(),
        })
    }

    async fn create(&self, incident: &str, playbook: &str) -> Result<DynamicObject, Error> {
        let mut object = DynamicObject::new(incident, &self.resource);
        object.metadata = ObjectMeta {
            name: Some(incident.into()),
            labels: Some([("salve.dev/playbook".to_string(), playbook.to_string())].into()),
            ..ObjectMeta::default()
        };
        object.data = json!({"spec": IncidentSpec { playbook: playbook.into() }});
        self.api
            .create(&PostParams::default(), &object)
            .await
            .map_err(api(incident))
    }
}

/// The status of `object`, empty when it has none (just created); an error when it does not
/// read (edited by hand, or written by a newer Salve): appending to it would overwrite it.
fn state_of(object: &DynamicObject) -> Result<IncidentState, Error> {
    let status = &object.data["status"];
    if status.is_null() {
        return Ok(IncidentState::default());
    }
    serde_json::from_value(status.clone()).map_err(|e| Error::Unreadable {
        incident: object.metadata.name.clone().unwrap_or_default(),
        reason: e.to_string(),
    })
}

fn api(incident: &str) -> impl Fn(kube::Error) -> Error + '_ {
    move |source| Error::Api {
        incident: incident.into(),
        source,
    }
}

fn is_status(error: &kube::Error, code: u16) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == code)
}

/// Whether an entry of `kind` is the executor's, written only by the leader: a replica that
/// does not lead must not journal one (its mirror refuses it).
fn leaders_only(kind: Kind) -> bool {
    !kind.is_detection() && !is_answer(kind.as_str())
}

/// Whether an entry of `kind` (as the journal spells it) answers an approval.
fn is_answer(kind: &str) -> bool {
    [
        Kind::ApprovalGranted,
        Kind::ApprovalRejected,
        Kind::ApprovalExpired,
    ]
    .iter()
    .any(|k| k.as_str() == kind)
}

/// The journal's mirror in the cluster ([`Mirror`]): while this replica leads, each entry of
/// an incident is appended to its `SalveIncident` under the lead's fencing term before the
/// journal's append returns. An executor entry written without the lead is refused (the
/// remediation stops there); an approval's answer is appended whoever took it
/// ([`IncidentStore::answer`]); what a replica that does not lead detects (signals,
/// incidents) stays in its own journal.
///
/// The appends run on a thread of their own, with a client and a runtime of their own, so that
/// the journal's synchronous `append` can wait for them from anywhere (on a multi-thread
/// runtime's worker, the wait hands the worker's other tasks over meanwhile).
pub struct ClusterMirror {
    jobs: std::sync::Mutex<std::sync::mpsc::Sender<Job>>,
    writer: String,
    /// Under leader election, the elector's view; `None`: a single replica, always writing
    /// (term 0).
    leadership: Option<watch::Receiver<Leadership>>,
}

impl std::fmt::Debug for ClusterMirror {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterMirror")
            .field("writer", &self.writer)
            .finish_non_exhaustive()
    }
}

struct Job {
    incident: String,
    playbook: String,
    entry: StateEntry,
    /// The leader's term; `None`: an answer ([`IncidentStore::answer`]).
    term: Option<u64>,
    reply: std::sync::mpsc::SyncSender<Result<(), String>>,
}

/// How long an entry may take to reach the cluster before the append fails.
const MIRROR_TIMEOUT: Duration = Duration::from_secs(10);

impl ClusterMirror {
    /// Mirrors into the `SalveIncident`s of `namespace`, through a client of its own made
    /// from `config` (a client belongs to the runtime it was made on), as `writer` (unique per
    /// process: the elector's identity), under `leadership` (`None`: a single replica).
    pub fn start(
        config: kube::Config,
        namespace: &str,
        writer: impl Into<String>,
        leadership: Option<watch::Receiver<Leadership>>,
    ) -> std::io::Result<Self> {
        let (jobs, queue) = std::sync::mpsc::channel::<Job>();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let client = {
            let _entered = runtime.enter();
            kube::Client::try_from(config).map_err(std::io::Error::other)?
        };
        let store = IncidentStore::new(client, namespace);
        std::thread::Builder::new()
            .name("salve-state".into())
            .spawn(move || {
                for job in queue {
                    let appended = runtime
                        .block_on(store.write(&job.incident, &job.playbook, &job.entry, job.term))
                        .map_err(|e| e.to_string());
                    let _ = job.reply.send(appended);
                }
            })?;
        Ok(ClusterMirror {
            jobs: std::sync::Mutex::new(jobs),
            writer: writer.into(),
            leadership,
        })
    }
}

impl Mirror for ClusterMirror {
    fn mirror(&self, record: &Record, seq: i64) -> Result<(), String> {
        let Some(incident) = &record.incident else {
            return Ok(());
        };
        if crate::incident::is_rehearsal(incident) {
            return Ok(());
        }
        let acting = match &self.leadership {
            Some(leadership) => leadership
                .borrow()
                .acting_term(tokio::time::Instant::now())
                .map(|term| term.0),
            None => Some(0),
        };
        // An answer is kept whoever takes it (the leader must see it); an executor's entry only
        // by the leader; what a follower detects stays in its own journal.
        let term = match acting {
            _ if is_answer(record.kind.as_str()) => None,
            Some(term) => Some(term),
            None if leaders_only(record.kind) => {
                return Err("this replica does not hold the lead: a newer leader acts".into());
            }
            None => return Ok(()),
        };
        let (reply, answer) = std::sync::mpsc::sync_channel(1);
        let job = Job {
            incident: incident.clone(),
            playbook: record.playbook.clone(),
            entry: StateEntry {
                id: format!("{}/{seq}", self.writer),
                at: record.at.to_rfc3339(),
                kind: record.kind.as_str().into(),
                detail: record.detail.clone(),
            },
            term,
            reply,
        };
        self.jobs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .send(job)
            .map_err(|_| "the cluster state's writer stopped".to_string())?;
        let wait = || {
            answer
                .recv_timeout(MIRROR_TIMEOUT)
                .map_err(|_| format!("no answer from the API server within {MIRROR_TIMEOUT:?}"))?
        };
        // Called from a runtime's worker (the executor journaling), the wait must let the
        // runtime move that worker's other tasks (the client's own among them) elsewhere.
        match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
            Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(wait),
            _ => wait(),
        }
    }
}

/// What a replica reads back from the cluster: at start or on taking the lead, every incident
/// entry its journal lacks ([`Importer::import`]), so that recovery resumes or rolls back what
/// the previous leader (or this pod before it was rescheduled) left in flight; meanwhile, every
/// entry other replicas write as they write it ([`Importer::follow`]) — a follower's journal
/// (and so its API) shows the leader's incidents and approvals, and the leader sees an approval
/// answered through a follower's API. The leader also deletes the objects of incidents over
/// for longer than the retention ([`Importer::collect`]).
#[derive(Debug, Clone)]
pub struct Importer {
    store: IncidentStore,
    writer: String,
    retention: Duration,
    /// Each object's `resourceVersion` as last imported (an unchanged one is not read again);
    /// held for a whole import, so that two imports never add an entry twice.
    imported: Arc<tokio::sync::Mutex<HashMap<String, String>>>,
}

/// How long an incident's object is kept once it is over, unless told otherwise.
pub const RETENTION: Duration = Duration::from_secs(24 * 3600);

/// How often the leader looks for incidents over for longer than the retention.
const COLLECT_EVERY: Duration = Duration::from_secs(300);

impl Importer {
    /// Imports from `store` as `writer` (this replica's identity, as its mirror writes it),
    /// keeping incidents for [`RETENTION`] once over.
    pub fn new(store: IncidentStore, writer: impl Into<String>) -> Self {
        Importer {
            store,
            writer: writer.into(),
            retention: RETENTION,
            imported: Arc::default(),
        }
    }

    /// The same, keeping incidents for `retention` once over.
    pub fn retaining(self, retention: Duration) -> Self {
        Importer { retention, ..self }
    }

    /// Imports into `journal` the entries of every `SalveIncident` it lacks, in their order;
    /// how many.
    pub async fn import(&self, journal: &Journal) -> Result<usize, Error> {
        let mut imported = 0;
        for object in &self.store.list().await? {
            imported += self.import_object(journal, object).await?;
        }
        Ok(imported)
    }

    /// Follows the `SalveIncident`s until `cancel`, importing into `journal` each one's new
    /// entries as they are written; every few minutes, while `leading` says this replica leads,
    /// deletes those over for longer than the retention ([`Importer::collect`]).
    pub async fn follow(
        &self,
        journal: &Journal,
        leading: impl Fn() -> bool,
        cancel: CancellationToken,
    ) {
        use futures_util::StreamExt;
        use kube::runtime::{WatchStreamExt, watcher};
        let mut stream = std::pin::pin!(
            watcher(self.store.api.clone(), watcher::Config::default()).default_backoff()
        );
        let mut collect = tokio::time::interval(COLLECT_EVERY);
        collect.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let next = tokio::select! {
                () = cancel.cancelled() => return,
                _ = collect.tick() => {
                    if leading() {
                        match self.collect(chrono::Utc::now()).await {
                            Ok(0) => {}
                            Ok(deleted) => tracing::info!(deleted, "deleted incidents over"),
                            Err(error) => tracing::warn!(%error, "cannot delete incidents over"),
                        }
                    }
                    continue;
                }
                next = stream.next() => next,
            };
            let object = match next {
                Some(Ok(watcher::Event::Apply(object) | watcher::Event::InitApply(object))) => {
                    object
                }
                Some(Ok(watcher::Event::Delete(object))) => {
                    if let Some(name) = &object.metadata.name {
                        self.imported.lock().await.remove(name);
                    }
                    continue;
                }
                Some(Ok(watcher::Event::Init | watcher::Event::InitDone)) => continue,
                Some(Err(error)) => {
                    tracing::warn!(
                        error = crate::diagnostic::chain(&error),
                        "cannot watch the SalveIncidents; retrying"
                    );
                    continue;
                }
                None => return,
            };
            match self.import_object(journal, &object).await {
                Ok(0) => {}
                Ok(imported) => tracing::debug!(
                    incident = object.metadata.name.as_deref().unwrap_or_default(),
                    imported,
                    "imported another replica's incident entries"
                ),
                Err(error) => tracing::warn!(%error, "cannot import an incident's entries"),
            }
        }
    }

    /// Deletes the `SalveIncident`s of incidents over (no remediation in flight: none planned,
    /// or its end recorded) whose last entry is older than the retention at `now`, each only
    /// if unchanged since read; how many. Their entries stay in every journal that has them.
    pub async fn collect(&self, now: chrono::DateTime<chrono::Utc>) -> Result<usize, Error> {
        let objects = self.store.list().await?;
        let retention =
            chrono::TimeDelta::from_std(self.retention).unwrap_or(chrono::TimeDelta::MAX);
        let mut deleted = 0;
        for object in &objects {
            let (Some(name), Some(version)) =
                (&object.metadata.name, &object.metadata.resource_version)
            else {
                continue;
            };
            let Ok(state) = state_of(object) else {
                continue;
            };
            let last = state
                .entries
                .iter()
                .filter_map(|e| chrono::DateTime::parse_from_rfc3339(&e.at).ok())
                .max();
            let stale = last.is_some_and(|at| now - at.with_timezone(&chrono::Utc) > retention);
            if stale && is_over(&state) && self.store.delete(name, version).await? {
                deleted += 1;
            }
        }
        Ok(deleted)
    }

    /// Imports the entries of `object` that `journal` lacks; how many.
    async fn import_object(
        &self,
        journal: &Journal,
        object: &DynamicObject,
    ) -> Result<usize, Error> {
        let Some(incident) = object.metadata.name.clone() else {
            return Ok(0);
        };
        let mut imported_versions = self.imported.lock().await;
        let version = object.metadata.resource_version.clone().unwrap_or_default();
        if imported_versions.get(&incident) == Some(&version) {
            return Ok(0);
        }
        let playbook = object.data["spec"]["playbook"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let known: std::collections::BTreeSet<String> = journal
            .timeline(&incident)
            .map_err(|e| Error::Journal(e.to_string()))?
            .into_iter()
            .map(|e| {
                e.record.detail["stateId"]
                    .as_str()
                    .map_or_else(|| format!("{}/{}", self.writer, e.seq), str::to_string)
            })
            .collect();
        let mut imported = 0;
        for entry in state_of(object)?.entries {
            if known.contains(&entry.id) {
                continue;
            }
            let (Some(kind), Ok(at)) = (
                Kind::parse(&entry.kind),
                chrono::DateTime::parse_from_rfc3339(&entry.at),
            ) else {
                tracing::warn!(
                    incident,
                    id = entry.id,
                    "an unreadable entry in the cluster; skipped"
                );
                continue;
            };
            let mut detail = entry.detail;
            detail["stateId"] = json!(entry.id);
            journal
                .import(&Record {
                    at: at.with_timezone(&chrono::Utc),
                    kind,
                    playbook: playbook.clone(),
                    incident: Some(incident.clone()),
                    detail,
                })
                .map_err(|e| Error::Journal(e.to_string()))?;
            imported += 1;
        }
        imported_versions.insert(incident, version);
        Ok(imported)
    }
}

/// Whether no remediation of the incident is in flight: none was planned, or the last one
/// planned has its end recorded.
fn is_over(state: &IncidentState) -> bool {
    let planned = Kind::Planned.as_str();
    let finished = Kind::RemediationFinished.as_str();
    state
        .entries
        .iter()
        .rev()
        .find(|e| e.kind == planned || e.kind == finished)
        .is_none_or(|e| e.kind == finished)
}
