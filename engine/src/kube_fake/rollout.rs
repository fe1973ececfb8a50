//! The Deployment controller's revision bookkeeping, done at once on every write of a
//! Deployment (nothing else of the controller runs: no Pods, no rolling update).
//!
//! As the real controller does: the ReplicaSet the Deployment controls whose `spec.template`
//! equals the Deployment's (ignoring the `pod-template-hash` label) is the current one; when
//! there is none, a new one `{deployment}-{hash}` is created. The current ReplicaSet's
//! `deployment.kubernetes.io/revision` becomes one more than every other owned ReplicaSet's
//! (so a reused one is renumbered, and its old number kept in `revision-history`), it gets the
//! Deployment's replicas and the others get 0, and the Deployment's own revision annotation
//! names the current revision. This is the history `kubectl rollout undo` reads.

use serde_json::{Map, Value, json};

use super::server::stamp_new;
use super::store::{ObjectKey, Store};

/// The annotation holding a Deployment's and a ReplicaSet's revision number.
pub(crate) const REVISION: &str = "deployment.kubernetes.io/revision";
/// The annotation listing the revisions a reused ReplicaSet had before.
const REVISION_HISTORY: &str = "deployment.kubernetes.io/revision-history";
/// The label that tells the ReplicaSets of one Deployment apart.
pub(crate) const POD_TEMPLATE_HASH: &str = "pod-template-hash";
/// How many hash collisions are tried before giving up (each adds a collision count).
const MAX_COLLISIONS: u32 = 16;

/// Brings the revision bookkeeping of the object at `key` up to date, if it is a Deployment,
/// and returns the Deployment as then stored. Anything else is left alone (`None`). A paused
/// Deployment gets no new revision, as with the real controller.
pub(crate) fn sync(store: &mut Store, key: &ObjectKey) -> Option<Value> {
    if key.api_version != "apps/v1" || key.plural != "deployments" {
        return None;
    }
    let deployment = store.objects.get(key)?.clone();
    if deployment["spec"]["paused"] == true {
        return Some(deployment);
    }
    let uid = deployment["metadata"]["uid"].as_str()?.to_owned();
    let template = &deployment["spec"]["template"];
    let replicas = deployment["spec"]
        .get("replicas")
        .cloned()
        .unwrap_or(json!(1));
    let owned: Vec<(ObjectKey, Value)> = store
        .objects
        .iter()
        .filter(|(k, rs)| {
            k.api_version == "apps/v1"
                && k.plural == "replicasets"
                && k.namespace == key.namespace
                && controlled_by(rs, &uid)
        })
        .map(|(k, rs)| (k.clone(), rs.clone()))
        .collect();
    let current = owned
        .iter()
        .position(|(_, rs)| same_template(&rs["spec"]["template"], template));
    let newest_other = owned
        .iter()
        .enumerate()
        .filter(|(i, _)| Some(*i) != current)
        .map(|(_, (_, rs))| revision(rs))
        .max()
        .unwrap_or(0);
    let (current_key, current_revision) = match current {
        Some(i) => {
            let (rs_key, old) = &owned[i];
            let mut rs = old.clone();
            let mut number = revision(&rs);
            if number <= newest_other {
                if number > 0 {
                    push_history(&mut rs, number);
                }
                number = newest_other + 1;
                rs["metadata"]["annotations"][REVISION] = json!(number.to_string());
            }
            rs["spec"]["replicas"] = replicas;
            if rs != *old {
                store.commit(rs_key.clone(), Some(rs));
            }
            (rs_key.clone(), number)
        }
        None => {
            let number = newest_other + 1;
            let (rs_key, rs) = new_replica_set(store, key, &deployment, number, replicas)?;
            store.commit(rs_key.clone(), Some(rs));
            (rs_key, number)
        }
    };
    for (rs_key, old) in owned.into_iter().filter(|(k, _)| *k != current_key) {
        if old["spec"]["replicas"] != 0 {
            let mut rs = old;
            rs["spec"]["replicas"] = json!(0);
            store.commit(rs_key, Some(rs));
        }
    }
    let number = json!(current_revision.to_string());
    if deployment["metadata"]["annotations"][REVISION] != number {
        let mut deployment = deployment;
        if !deployment["metadata"]["annotations"].is_object() {
            deployment["metadata"]["annotations"] = json!({});
        }
        deployment["metadata"]["annotations"][REVISION] = number;
        return Some(store.commit(key.clone(), Some(deployment)));
    }
    Some(deployment)
}

/// Whether `obj` has a controller owner reference to the object with `uid`.
fn controlled_by(obj: &Value, uid: &str) -> bool {
    obj["metadata"]["ownerReferences"]
        .as_array()
        .is_some_and(|refs| {
            refs.iter()
                .any(|r| r["uid"] == uid && r["controller"] == true)
        })
}

/// An object's revision annotation as a number (0 when missing or not a number).
fn revision(obj: &Value) -> u64 {
    obj["metadata"]["annotations"][REVISION]
        .as_str()
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

fn push_history(rs: &mut Value, old: u64) {
    let annotations = &mut rs["metadata"]["annotations"];
    let history = match annotations[REVISION_HISTORY].as_str() {
        Some(h) if !h.is_empty() => format!("{h},{old}"),
        _ => old.to_string(),
    };
    annotations[REVISION_HISTORY] = json!(history);
}

/// A pod template without the `pod-template-hash` label.
fn without_hash(template: &Value) -> Value {
    let mut template = template.clone();
    if let Some(meta) = template.get_mut("metadata").and_then(Value::as_object_mut)
        && let Some(labels) = meta.get_mut("labels").and_then(Value::as_object_mut)
    {
        labels.remove(POD_TEMPLATE_HASH);
        if labels.is_empty() {
            meta.remove("labels");
        }
    }
    template
}

/// Whether two pod templates are equal but for the `pod-template-hash` label.
pub(crate) fn same_template(a: &Value, b: &Value) -> bool {
    without_hash(a) == without_hash(b)
}

/// A short, stable hash of a pod template (FNV-1a over its JSON, keys sorted), in hex.
fn template_hash(template: &Value, collisions: u32) -> String {
    let mut text = without_hash(template).to_string();
    if collisions > 0 {
        text.push_str(&collisions.to_string());
    }
    let hash = text.bytes().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    format!("{hash:08x}")
}

/// The ReplicaSet the controller creates for the Deployment's current template.
fn new_replica_set(
    store: &mut Store,
    key: &ObjectKey,
    deployment: &Value,
    number: u64,
    replicas: Value,
) -> Option<(ObjectKey, Value)> {
    let meta = &deployment["metadata"];
    let template = &deployment["spec"]["template"];
    let (hash, rs_key) = (0..MAX_COLLISIONS).find_map(|collisions| {
        let hash = template_hash(template, collisions);
        let rs_key = ObjectKey {
            api_version: "apps/v1".into(),
            plural: "replicasets".into(),
            namespace: key.namespace.clone(),
            name: format!("{}-{hash}", key.name),
        };
        (!store.objects.contains_key(&rs_key)).then_some((hash, rs_key))
    })?;
    let mut template = without_hash(template);
    with_label(&mut template["metadata"]["labels"], &hash);
    let mut selector = deployment["spec"]["selector"].clone();
    with_label(&mut selector["matchLabels"], &hash);
    let mut annotations: Map<String, Value> = meta["annotations"]
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(k, _)| {
            !k.starts_with("deployment.kubernetes.io/")
                && *k != "kubectl.kubernetes.io/last-applied-configuration"
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    annotations.insert(REVISION.into(), json!(number.to_string()));
    let mut rs = json!({
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {
            "name": rs_key.name,
            "namespace": key.namespace,
            "labels": template["metadata"]["labels"],
            "annotations": annotations,
            "ownerReferences": [{
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": key.name,
                "uid": meta["uid"],
                "controller": true,
                "blockOwnerDeletion": true,
            }],
        },
        "spec": {
            "replicas": replicas,
            "selector": selector,
            "template": template,
        },
    });
    if let Some(min_ready) = deployment["spec"].get("minReadySeconds") {
        rs["spec"]["minReadySeconds"] = min_ready.clone();
    }
    stamp_new(store, &mut rs);
    Some((rs_key, rs))
}

/// Adds the `pod-template-hash` label to a label map (making the map if missing).
fn with_label(labels: &mut Value, hash: &str) {
    if !labels.is_object() {
        *labels = json!({});
    }
    labels[POD_TEMPLATE_HASH] = json!(hash);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_ignores_the_hash_label_and_key_order() {
        let a = json!({"metadata": {"labels": {"app": "api"}}, "spec": {"x": 1, "y": 2}});
        let b = json!({"spec": {"y": 2, "x": 1},
                       "metadata": {"labels": {"app": "api", POD_TEMPLATE_HASH: "abc"}}});
        assert_eq!(template_hash(&a, 0), template_hash(&b, 0));
        assert!(same_template(&a, &b));
        assert_ne!(template_hash(&a, 0), template_hash(&a, 1));
        assert_eq!(template_hash(&a, 0).len(), 8);
    }
}
