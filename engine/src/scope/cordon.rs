//! The cluster-wide count of nodes Salve has cordoned, so node-local Salves (one per node) never
//! take more than `max_cordoned` nodes out of scheduling at once — as Medik8s' `maxUnhealthy`.
//!
//! The count lives in one `coordination.k8s.io/v1` Lease, [`LEASE`] in Salve's namespace, whose
//! annotation [`ANNOTATION`] maps each node Salve cordoned to when it took the slot (JSON).
//! A Salve takes a slot *before* it cordons its node and gives it back after an uncordon.
//! Every change is a replace carrying the `resourceVersion` it read, so of two Salves deciding
//! at once only one write lands; the other gets 409, reads again and decides again — two
//! cannot both pass the check.
//!
//! A slot whose node is schedulable again (uncordoned by a person) or gone is stale; it is
//! dropped once it is older than [`STALE_GRACE`] (younger, its Salve may be cordoning right
//! now). Anything unexpected — the API failing, a Lease whose annotation does not parse — is a
//! refusal: no cordon without a counted slot.

use std::collections::BTreeMap;

use chrono::{DateTime, TimeDelta, Utc};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, ObjectMeta, PostParams};

/// The Lease's name.
pub const LEASE: &str = "salve-cordons";

/// The Lease's annotation listing the cordoned nodes: `{"node": "RFC 3339 time"}`.
pub const ANNOTATION: &str = "salve.dev/cordoned-nodes";

/// How old a slot must be before a schedulable (or missing) node's slot is dropped.
pub const STALE_GRACE: TimeDelta = TimeDelta::minutes(5);

/// How many times a write that lost a race is decided again.
const ATTEMPTS: usize = 16;

/// Why a slot could not be had, or given back.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `max_cordoned` nodes are cordoned already.
    #[error(
        "{max} node(s) may be cordoned by Salve at once and {} already are ({}): node {node} is not cordoned",
        cordoned.len(),
        cordoned.join(", ")
    )]
    Full {
        /// The node asking.
        node: String,
        /// The limit.
        max: u32,
        /// The nodes holding the slots.
        cordoned: Vec<String>,
    },
    /// The Kubernetes API failed.
    #[error("the count of cordoned nodes (Lease {lease}) cannot be read or written: {source}")]
    Api {
        /// `namespace/name`.
        lease: String,
        /// The client's error.
        #[source]
        source: kube::Error,
    },
    /// The Lease's annotation is not what Salve writes.
    #[error("Lease {lease}'s annotation {ANNOTATION} does not parse ({reason}): not cordoning")]
    Corrupt {
        /// `namespace/name`.
        lease: String,
        /// Why.
        reason: String,
    },
    /// Other Salves kept changing the Lease.
    #[error("Lease {lease} kept changing under {ATTEMPTS} tries: not cordoning")]
    Contended {
        /// `namespace/name`.
        lease: String,
    },
}

/// `Result` with this module's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One node's view of the cluster-wide count.
#[derive(Clone)]
pub struct Cordons {
    leases: Api<Lease>,
    nodes: Api<Node>,
    namespace: String,
    node: String,
    max: u32,
}

impl std::fmt::Debug for Cordons {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cordons")
            .field("lease", &self.lease())
            .field("node", &self.node)
            .field("max", &self.max)
            .finish()
    }
}

/// What [`Cordons::take`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Taken {
    /// The node took a free slot.
    New,
    /// The node held a slot already.
    Held,
}

impl Cordons {
    /// The count for `node`, at most `max` nodes, in Lease [`LEASE`] of `namespace`.
    pub fn new(client: kube::Client, namespace: &str, node: &str, max: u32) -> Self {
        Cordons {
            leases: Api::namespaced(client.clone(), namespace),
            nodes: Api::all(client),
            namespace: namespace.to_string(),
            node: node.to_string(),
            max,
        }
    }

    /// `namespace/name` of the Lease.
    pub fn lease(&self) -> String {
        format!("{}/{LEASE}", self.namespace)
    }

    /// Takes a slot for this node (before cordoning it); `Err(Error::Full)` when `max` other
    /// nodes hold them.
    pub async fn take(&self, now: DateTime<Utc>) -> Result<Taken> {
        for _ in 0..ATTEMPTS {
            let Some(lease) = self.leases.get_opt(LEASE).await.map_err(self.api())? else {
                if self.max == 0 {
                    return Err(self.full(Vec::new()));
                }
                let slots = BTreeMap::from([(self.node.clone(), now.to_rfc3339())]);
                match self
                    .leases
                    .create(&PostParams::default(), &self.object(None, &slots))
                    .await
                {
                    Ok(_) => return Ok(Taken::New),
                    Err(e) if is_status(&e, 409) => continue,
                    Err(e) => return Err(self.api()(e)),
                }
            };
            let mut slots = self.slots(&lease)?;
            if slots.contains_key(&self.node) {
                return Ok(Taken::Held);
            }
            let pruned = self.prune(&mut slots, now).await?;
            if slots.len() >= usize::try_from(self.max).unwrap_or(usize::MAX) {
                if pruned {
                    // Write the pruning anyway, so the next reader need not look again.
                    let _ = self.replace(&lease, &slots).await;
                }
                return Err(self.full(slots.into_keys().collect()));
            }
            slots.insert(self.node.clone(), now.to_rfc3339());
            match self.replace(&lease, &slots).await {
                Ok(()) => return Ok(Taken::New),
                Err(e) if is_status(&e, 409) => continue,
                Err(e) => return Err(self.api()(e)),
            }
        }
        Err(Error::Contended {
            lease: self.lease(),
        })
    }

    /// Gives this node's slot back (after uncordoning it); nothing to do when it holds none.
    pub async fn give_back(&self) -> Result<()> {
        for _ in 0..ATTEMPTS {
            let Some(lease) = self.leases.get_opt(LEASE).await.map_err(self.api())? else {
                return Ok(());
            };
            let mut slots = self.slots(&lease)?;
            if slots.remove(&self.node).is_none() {
                return Ok(());
            }
            match self.replace(&lease, &slots).await {
                Ok(()) => return Ok(()),
                Err(e) if is_status(&e, 409) => continue,
                Err(e) => return Err(self.api()(e)),
            }
        }
        Err(Error::Contended {
            lease: self.lease(),
        })
    }

    /// The nodes holding slots now.
    pub async fn cordoned(&self) -> Result<Vec<String>> {
        match self.leases.get_opt(LEASE).await.map_err(self.api())? {
            Some(lease) => Ok(self.slots(&lease)?.into_keys().collect()),
            None => Ok(Vec::new()),
        }
    }

    /// Drops the slots of other nodes that are stale (see the module); whether any was.
    async fn prune(
        &self,
        slots: &mut BTreeMap<String, String>,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let mut stale = Vec::new();
        for (node, since) in slots.iter() {
            let old = DateTime::parse_from_rfc3339(since)
                .map(|t| now - t.with_timezone(&Utc) > STALE_GRACE)
                .unwrap_or(true);
            if !old {
                continue;
            }
            // Reads only: whether the node is still cordoned.
            let cordoned = match self.nodes.get_opt(node).await {
                Ok(Some(object)) => object.spec.and_then(|s| s.unschedulable).unwrap_or(false),
                Ok(None) => false,
                Err(_) => true,
            };
            if !cordoned {
                stale.push(node.clone());
            }
        }
        for node in &stale {
            tracing::info!(node, lease = self.lease(), "dropping a stale cordon slot");
            slots.remove(node);
        }
        Ok(!stale.is_empty())
    }

    fn slots(&self, lease: &Lease) -> Result<BTreeMap<String, String>> {
        let Some(text) = lease
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(ANNOTATION))
        else {
            return Ok(BTreeMap::new());
        };
        serde_json::from_str(text).map_err(|e| Error::Corrupt {
            lease: self.lease(),
            reason: e.to_string(),
        })
    }

    async fn replace(&self, lease: &Lease, slots: &BTreeMap<String, String>) -> kube::Result<()> {
        let object = self.object(lease.metadata.resource_version.clone(), slots);
        let mut object = Lease {
            spec: lease.spec.clone(),
            ..object
        };
        object.metadata.labels = lease.metadata.labels.clone();
        let mut annotations = lease.metadata.annotations.clone().unwrap_or_default();
        annotations.insert(ANNOTATION.to_string(), json(slots));
        object.metadata.annotations = Some(annotations);
        self.leases
            .replace(LEASE, &PostParams::default(), &object)
            .await
            .map(|_| ())
    }

    fn object(&self, resource_version: Option<String>, slots: &BTreeMap<String, String>) -> Lease {
        Lease {
            metadata: ObjectMeta {
                name: Some(LEASE.to_string()),
                namespace: Some(self.namespace.clone()),
                resource_version,
                annotations: Some(BTreeMap::from([(ANNOTATION.to_string(), json(slots))])),
                ..ObjectMeta::default()
            },
            spec: None,
        }
    }

    fn full(&self, cordoned: Vec<String>) -> Error {
        Error::Full {
            node: self.node.clone(),
            max: self.max,
            cordoned,
        }
    }

    fn api(&self) -> impl Fn(kube::Error) -> Error + '_ {
        |source| Error::Api {
            lease: self.lease(),
            source,
        }
    }
}

fn json(slots: &BTreeMap<String, String>) -> String {
    serde_json::to_string(slots).unwrap_or_else(|_| "{}".into())
}

fn is_status(error: &kube::Error, code: u16) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == code)
}
