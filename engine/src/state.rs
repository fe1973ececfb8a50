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
//! Not wired into the engine yet: the journal does not mirror its entries here, and a new
//! leader does not import them (see the "state that survives pods").

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Api;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, PostParams};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::crd::{GROUP, VERSION};

/// The kind's name.
pub const KIND: &str = "SalveIncident";

/// The kind's plural, in URLs.
pub const PLURAL: &str = "salveincidents";

/// How many times a conflicting write is read again and retried before giving up. Of the
/// writers that read one version, exactly one replace lands, so N writers racing on one
/// incident all land within N attempts; the engine has one or two (the leader, an approval).
const ATTEMPTS: usize = 16;

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
    /// Writers kept conflicting.
    #[error("incident {incident}: still conflicting after {ATTEMPTS} attempts")]
    Contended {
        /// The incident.
        incident: String,
    },
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
        Ok(object.map(|o| state_of(&o)))
    }

    /// Appends `entry` to `incident` of `playbook` as a writer of `term`: created when
    /// missing; read again and retried on a conflict; a no-op when an entry with its id is
    /// already there; refused when a newer term wrote.
    pub async fn append(
        &self,
        incident: &str,
        playbook: &str,
        entry: &StateEntry,
        term: u64,
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
            let mut state = state_of(&object);
            if state.term > term {
                return Err(Error::Fenced {
                    incident: incident.into(),
                    recorded: state.term,
                    ours: term,
                });
            }
            if state.entries.iter().any(|e| e.id == entry.id) {
                return Ok(());
            }
            state.term = term;
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
        object.data = json!({"spec": {"playbook": playbook}});
        self.api
            .create(&PostParams::default(), &object)
            .await
            .map_err(api(incident))
    }
}

/// The status of `object`, empty when it has none (just created) or it does not read.
fn state_of(object: &DynamicObject) -> IncidentState {
    serde_json::from_value(object.data["status"].clone()).unwrap_or_default()
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
