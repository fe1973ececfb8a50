//! `rollout_undo`: what `kubectl rollout undo` does for a Deployment — find the ReplicaSet of
//! the previous revision (or of `toRevision`) among those the Deployment controls, and put its
//! pod template back on the Deployment with a JSON patch, so the controller rolls back to it.
//!
//! The revision it left is recorded (`before: {"revision": N}`), so undoing this step is a
//! `rollout_undo` with `toRevision: N`. Which incident step rolled back is recorded on the
//! Deployment, so a retry of the same step does not roll back twice (a second plain undo would
//! otherwise flip back, as kubectl's does). StatefulSets and DaemonSets (whose history lives in
//! ControllerRevisions) are not supported yet.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use kube::api::{ListParams, Patch};
use serde_json::{Value, json};

use super::{Call, Outcome, Result, selector_query};

/// The annotation holding a Deployment's and a ReplicaSet's revision number.
const REVISION: &str = "deployment.kubernetes.io/revision";
/// The annotation listing the revisions a reused ReplicaSet had before.
const REVISION_HISTORY: &str = "deployment.kubernetes.io/revision-history";
/// The label the Deployment controller adds to tell its ReplicaSets apart.
const POD_TEMPLATE_HASH: &str = "pod-template-hash";
/// The Deployment annotation naming the incident step that rolled it back.
const ROLLED_BACK_FOR: &str = "salve.dev/rolled-back-for";
/// ReplicaSet annotations kubectl does not copy back to the Deployment.
const NOT_COPIED: [&str; 6] = [
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION,
    REVISION_HISTORY,
    "deployment.kubernetes.io/desired-replicas",
    "deployment.kubernetes.io/max-replicas",
    "deprecated.deployment.rollback.to",
];

pub(super) async fn run(call: &Call<'_>) -> Result<Outcome> {
    match call.target.kind.as_str() {
        "Deployment" => {}
        "StatefulSet" | "DaemonSet" => {
            return Err(call.invalid(format!(
                "rolling a {} back (through its ControllerRevisions) is not supported yet",
                call.target.kind
            )));
        }
        _ => return Err(call.invalid("only a Deployment is rolled back".into())),
    }
    let to_revision = match call.params.get("toRevision") {
        None => None,
        Some(value) => Some(revision_param(value).ok_or_else(|| {
            call.invalid(format!("`toRevision` {value} is not a revision number"))
        })?),
    };
    let deployments = call.namespaced::<Deployment>()?;
    let name = &call.target.name;
    let deployment = deployments.get(name).await.map_err(call.fail())?;
    let spec = deployment.spec.clone().unwrap_or_default();
    let template = serde_json::to_value(&spec.template).unwrap_or_default();
    let mut without = template.clone();
    remove_hash(&mut without);
    let annotations = deployment.metadata.annotations.clone().unwrap_or_default();
    if annotations.get(ROLLED_BACK_FOR).map(String::as_str) == Some(call.key) {
        let before = json!({
            "revision": revision(&deployment.metadata.annotations),
            "images": images(&template),
        });
        let message = format!("already rolled back for {}", call.key);
        return Ok(call.outcome(false, message, before.clone(), before));
    }
    if spec.paused == Some(true) {
        return Err(
            call.invalid("the Deployment is paused: resume it before rolling it back".into())
        );
    }

    let history = history(call, &deployment).await?;
    // The Deployment's revision, or (not annotated yet) that of the ReplicaSet of its template.
    let current = match revision(&deployment.metadata.annotations) {
        0 => history
            .iter()
            .find(|(_, rs)| template_of(rs) == without)
            .map_or(0, |(number, _)| *number),
        number => number,
    };
    let before = json!({"revision": current, "images": images(&template)});
    let target = match to_revision {
        Some(wanted) => find_revision(&history, wanted).ok_or_else(|| {
            call.invalid(format!(
                "revision {wanted} is not in the rollout history ({})",
                listed(&history)
            ))
        })?,
        // As kubectl: the second newest revision in the history.
        None => history.values().rev().nth(1).ok_or_else(|| {
            call.invalid(format!(
                "no previous revision to roll back to ({})",
                listed(&history)
            ))
        })?,
    };
    let target_revision = revision(&target.metadata.annotations);
    let target_template = template_of(target);
    let after = json!({"revision": target_revision, "images": images(&target_template)});
    if without == target_template {
        let message = format!("already at the template of revision {target_revision}");
        return Ok(call.outcome(false, message, before.clone(), before));
    }

    // As kubectl: the Deployment takes the ReplicaSet's own annotations (a change-cause, say)
    // but for the controller's bookkeeping; here it keeps its others too.
    let mut annotations: BTreeMap<String, String> = annotations;
    for (k, v) in target.metadata.annotations.iter().flatten() {
        if !NOT_COPIED.contains(&k.as_str()) {
            annotations.insert(k.clone(), v.clone());
        }
    }
    annotations.insert(ROLLED_BACK_FOR.into(), call.key.into());
    let ops: json_patch::Patch = serde_json::from_value(json!([
        {"op": "replace", "path": "/spec/template", "value": target_template},
        {"op": "add", "path": "/metadata/annotations", "value": annotations},
    ]))
    .map_err(|e| call.invalid(format!("cannot build the rollback patch: {e}")))?;
    deployments
        .patch(name, &call.patch_params(), &Patch::Json::<()>(ops))
        .await
        .map_err(call.fail())?;
    let message = format!("rolled back from revision {current} to revision {target_revision}");
    Ok(call.outcome(true, message, before, after))
}

/// The ReplicaSets the Deployment controls, by revision (kubectl: its selector, then the
/// controller owner reference).
async fn history(call: &Call<'_>, deployment: &Deployment) -> Result<BTreeMap<u64, ReplicaSet>> {
    rollout_history(&call.namespaced::<ReplicaSet>()?, deployment)
        .await
        .map_err(|error| match error {
            HistoryError::Selector => {
                call.invalid("the Deployment's selector cannot be read".into())
            }
            HistoryError::Api(error) => call.fail()(error),
        })
}

/// Why a Deployment's rollout history cannot be read.
#[derive(Debug)]
pub(crate) enum HistoryError {
    /// Its selector cannot be read.
    Selector,
    /// The API refused the list.
    Api(kube::Error),
}

impl std::fmt::Display for HistoryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HistoryError::Selector => f.write_str("the Deployment's selector cannot be read"),
            HistoryError::Api(error) => error.fmt(f),
        }
    }
}

/// The ReplicaSets (listed through `replica_sets`, the Deployment's namespace) that
/// `deployment` controls, by revision: those its selector matches whose controller owner
/// reference is the Deployment, as kubectl finds them.
pub(crate) async fn rollout_history(
    replica_sets: &kube::Api<ReplicaSet>,
    deployment: &Deployment,
) -> std::result::Result<BTreeMap<u64, ReplicaSet>, HistoryError> {
    let selector = deployment
        .spec
        .as_ref()
        .map(|s| &s.selector)
        .and_then(selector_query)
        .ok_or(HistoryError::Selector)?;
    let uid = deployment.metadata.uid.as_deref().unwrap_or_default();
    let sets = replica_sets
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(HistoryError::Api)?;
    Ok(sets
        .items
        .into_iter()
        .filter(|rs| {
            rs.metadata
                .owner_references
                .iter()
                .flatten()
                .any(|o| o.controller == Some(true) && o.uid == uid && o.kind == "Deployment")
        })
        .map(|rs| (revision(&rs.metadata.annotations), rs))
        .filter(|(number, _)| *number > 0)
        .collect())
}

/// The ReplicaSet of revision `wanted`: the one numbered so, or the one that was (a rollback
/// to an old template renumbers its ReplicaSet, and the controller keeps the old numbers in
/// `revision-history`).
fn find_revision(history: &BTreeMap<u64, ReplicaSet>, wanted: u64) -> Option<&ReplicaSet> {
    history.get(&wanted).or_else(|| {
        history.values().find(|rs| {
            rs.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(REVISION_HISTORY))
                .is_some_and(|h| h.split(',').any(|n| n.trim().parse() == Ok(wanted)))
        })
    })
}

/// A ReplicaSet's pod template as JSON, without the `pod-template-hash` label.
fn template_of(rs: &ReplicaSet) -> Value {
    let mut template = rs
        .spec
        .as_ref()
        .and_then(|s| s.template.as_ref())
        .and_then(|t| serde_json::to_value(t).ok())
        .unwrap_or_default();
    remove_hash(&mut template);
    template
}

/// The revision annotation as a number (0 when missing or unreadable).
fn revision(annotations: &Option<BTreeMap<String, String>>) -> u64 {
    annotations
        .as_ref()
        .and_then(|a| a.get(REVISION))
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

/// A `toRevision` value: a whole number, or one in a string (from a template).
fn revision_param(value: &Value) -> Option<u64> {
    match value {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
    .filter(|n| *n > 0)
}

/// `revisions: 1, 2, 3`, for messages.
fn listed(history: &BTreeMap<u64, ReplicaSet>) -> String {
    if history.is_empty() {
        return "no revisions found".into();
    }
    let numbers: Vec<String> = history.keys().map(u64::to_string).collect();
    format!("revisions: {}", numbers.join(", "))
}

/// A pod template without the `pod-template-hash` label, as kubectl puts it back.
fn remove_hash(template: &mut Value) {
    if let Some(meta) = template.get_mut("metadata").and_then(Value::as_object_mut)
        && let Some(labels) = meta.get_mut("labels").and_then(Value::as_object_mut)
    {
        labels.remove(POD_TEMPLATE_HASH);
        if labels.is_empty() {
            meta.remove("labels");
        }
    }
}

/// The images of a pod template's containers, by container name, for the record.
fn images(template: &Value) -> Value {
    template["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| Some((c["name"].as_str()?.to_owned(), c["image"].clone())))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn to_revision_is_a_positive_whole_number() {
        assert_eq!(revision_param(&json!(3)), Some(3));
        assert_eq!(revision_param(&json!("2")), Some(2));
        assert_eq!(revision_param(&json!(0)), None);
        assert_eq!(revision_param(&json!(-1)), None);
        assert_eq!(revision_param(&json!("two")), None);
    }

    #[test]
    fn the_hash_label_is_not_put_back() {
        let mut template = json!({"metadata": {"labels": {"app": "api", POD_TEMPLATE_HASH: "x"}}});
        remove_hash(&mut template);
        assert_eq!(template, json!({"metadata": {"labels": {"app": "api"}}}));
    }
}
