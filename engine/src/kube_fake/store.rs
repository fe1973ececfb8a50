//! The fake's storage: objects as JSON keyed by [`ObjectKey`], one global `resourceVersion`, a
//! bounded history of changes for watches that resume, and the request log.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use serde_json::{Value, json};
use tokio::sync::broadcast;

use super::RecordedRequest;
use super::logs::LogKey;
use super::resource::{ResourceType, builtins};

/// How many changes are kept for watches resuming from an older `resourceVersion`; older
/// ones get 410 Expired, as from a real server whose etcd history was compacted.
const HISTORY: usize = 4096;

/// Where an object lives: (group/version, resource plural, namespace, name).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey {
    /// `v1` or `group/version`.
    pub api_version: String,
    /// The plural resource name (`deployments`).
    pub plural: String,
    /// The namespace, `None` for cluster-scoped objects.
    pub namespace: Option<String>,
    /// The object's name.
    pub name: String,
}

impl ObjectKey {
    /// The key of Pod `namespace/name`.
    pub(crate) fn pod(namespace: &str, name: &str) -> Self {
        ObjectKey {
            api_version: "v1".into(),
            plural: "pods".into(),
            namespace: Some(namespace.to_owned()),
            name: name.to_owned(),
        }
    }
}

/// The watch event type of a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChangeType {
    Added,
    Modified,
    Deleted,
}

/// One committed change, as watches see it.
#[derive(Debug)]
pub(crate) struct Change {
    /// The `resourceVersion` the change was written at.
    pub(crate) rv: u64,
    pub(crate) key: ObjectKey,
    pub(crate) kind: ChangeType,
    /// The object before the change (for selector transitions).
    pub(crate) old: Option<Value>,
    /// The object after the change (the last state, for a deletion).
    pub(crate) new: Value,
}

/// Everything the fake holds, behind one mutex (no lock is held across an await).
pub(crate) struct Store {
    pub(crate) types: Vec<ResourceType>,
    pub(crate) objects: BTreeMap<ObjectKey, Value>,
    pub(crate) rv: u64,
    uid_seq: u64,
    pub(crate) history: VecDeque<Arc<Change>>,
    pub(crate) tx: broadcast::Sender<Arc<Change>>,
    pub(crate) requests: Vec<RecordedRequest>,
    /// Seeded container logs, served by `pods/{name}/log`.
    pub(crate) logs: BTreeMap<LogKey, String>,
}

impl Store {
    pub(crate) fn new() -> Self {
        Self {
            types: builtins(),
            objects: BTreeMap::new(),
            rv: 1,
            uid_seq: 0,
            history: VecDeque::new(),
            tx: broadcast::channel(HISTORY).0,
            requests: Vec::new(),
            logs: BTreeMap::new(),
        }
    }

    pub(crate) fn type_by_plural(&self, api_version: &str, plural: &str) -> Option<ResourceType> {
        self.types
            .iter()
            .find(|t| t.api_version == api_version && t.plural == plural)
            .cloned()
    }

    pub(crate) fn type_by_kind(&self, api_version: &str, kind: &str) -> Option<ResourceType> {
        self.types
            .iter()
            .find(|t| t.api_version == api_version && t.kind == kind)
            .cloned()
    }

    /// A fresh uid (UUID-shaped, unique within this server).
    pub(crate) fn next_uid(&mut self) -> String {
        self.uid_seq += 1;
        format!("5a17e000-0000-4000-8000-{:012x}", self.uid_seq)
    }

    /// A suffix for `generateName`, from the real server's alphabet.
    pub(crate) fn next_suffix(&mut self) -> String {
        const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
        self.uid_seq += 1;
        let mut n = self.uid_seq.wrapping_mul(2_654_435_761);
        (0..5)
            .map(|_| {
                let c = ALPHABET[(n % 27) as usize] as char;
                n /= 27;
                c
            })
            .collect()
    }

    /// The oldest `resourceVersion` a watch may resume from.
    pub(crate) fn oldest_resumable(&self) -> u64 {
        self.history.front().map_or(self.rv, |c| c.rv - 1)
    }

    /// Writes `new` at `key` (or deletes it when `None`), bumping the global resourceVersion,
    /// stamping it on the object, and telling watchers. Returns the stored object.
    pub(crate) fn commit(&mut self, key: ObjectKey, new: Option<Value>) -> Value {
        self.rv += 1;
        let rv = self.rv;
        let old = self.objects.get(&key).cloned();
        let (kind, stored) = match new {
            Some(mut obj) => {
                obj["metadata"]["resourceVersion"] = json!(rv.to_string());
                self.objects.insert(key.clone(), obj.clone());
                let kind = if old.is_some() {
                    ChangeType::Modified
                } else {
                    ChangeType::Added
                };
                (kind, obj)
            }
            None => {
                self.objects.remove(&key);
                let mut last = old.clone().unwrap_or_default();
                last["metadata"]["resourceVersion"] = json!(rv.to_string());
                (ChangeType::Deleted, last)
            }
        };
        let change = Arc::new(Change {
            rv,
            key,
            kind,
            old,
            new: stored.clone(),
        });
        if self.history.len() == HISTORY {
            self.history.pop_front();
        }
        self.history.push_back(change.clone());
        // No receivers is fine: nobody is watching.
        let _ = self.tx.send(change);
        stored
    }
}
