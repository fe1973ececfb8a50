//! Diagnosis: what the Kubernetes API says about an incident before anything is planned — the
//! workload that owns the signal's pod (`${owner.*}`) and the target as it is now (revision,
//! when that revision rolled out, replicas, labels).
//!
//! Everything here only reads. What cannot be read stays unknown, with a note saying why: the
//! planner then refuses to fill a template from it and skips a step whose `when` needs it
//! (fail safe), rather than guessing.

use chrono::{DateTime, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject, ListParams};
use serde_json::Value;

use crate::plan::{Facts, ObjectRef, TargetFacts};
use crate::playbook::Playbook;
use crate::signal::state::LabelSet;

/// The annotation in which the deployment controller numbers revisions.
pub(crate) const REVISION: &str = "deployment.kubernetes.io/revision";

/// What was learned, and what could not be.
#[derive(Debug, Clone, Default)]
pub struct Diagnosis {
    /// The facts for the planner.
    pub facts: Facts,
    /// The target, when it could be named.
    pub target: Option<ObjectRef>,
    /// Why something is unknown (one line each).
    pub notes: Vec<String>,
}

/// Reads the owner of the signal's pod and the target of `playbook` for a signal with `labels`.
pub async fn diagnose(client: &Client, playbook: &Playbook, labels: &LabelSet) -> Diagnosis {
    let mut diagnosis = Diagnosis::default();
    if let (Some(namespace), Some(pod)) = (labels.get("namespace"), labels.get("pod")) {
        match owner_of_pod(client, namespace, pod).await {
            Ok(owner) => diagnosis.facts.owner = owner,
            Err(note) => diagnosis.notes.push(note),
        }
    }
    let target = match crate::plan::name_target(&playbook.target, labels, &diagnosis.facts) {
        Ok(target) => target,
        Err(error) => {
            diagnosis.notes.push(error.to_string());
            return diagnosis;
        }
    };
    match read_target(client, &target).await {
        Ok(facts) => diagnosis.facts.target = facts,
        Err(note) => diagnosis.notes.push(note),
    }
    diagnosis.target = Some(target);
    diagnosis
}

/// The top controller of a pod: its ReplicaSet's Deployment, or the StatefulSet, DaemonSet, Job
/// or bare ReplicaSet that controls it; `None` for a pod nothing controls.
async fn owner_of_pod(
    client: &Client,
    namespace: &str,
    pod: &str,
) -> Result<Option<ObjectRef>, String> {
    let pod_object = get(client, "Pod", Some(namespace), pod).await?;
    let Some(owner) = controller(&pod_object) else {
        return Ok(None);
    };
    let reference = |kind: &str, name: &str| ObjectRef {
        kind: kind.to_string(),
        name: name.to_string(),
        namespace: Some(namespace.to_string()),
    };
    if owner.kind != "ReplicaSet" {
        return Ok(Some(reference(&owner.kind, &owner.name)));
    }
    let replica_set = get(client, "ReplicaSet", Some(namespace), &owner.name).await?;
    Ok(Some(match controller(&replica_set) {
        Some(deployment) if deployment.kind == "Deployment" => {
            reference("Deployment", &deployment.name)
        }
        _ => reference("ReplicaSet", &owner.name),
    }))
}

/// What can be read of `target` now.
async fn read_target(client: &Client, target: &ObjectRef) -> Result<TargetFacts, String> {
    let object = get(
        client,
        &target.kind,
        target.namespace.as_deref(),
        &target.name,
    )
    .await?;
    let strings =
        |map: Option<&std::collections::BTreeMap<String, String>>| map.cloned().unwrap_or_default();
    let mut facts = TargetFacts {
        labels: strings(object.metadata.labels.as_ref()),
        annotations: strings(object.metadata.annotations.as_ref()),
        replicas: object.data["spec"]["replicas"].as_i64(),
        ready_replicas: object.data["status"]["readyReplicas"].as_i64(),
        node: object.data["spec"]["nodeName"].as_str().map(str::to_string),
        ..TargetFacts::default()
    };
    facts.revision = facts.annotations.get(REVISION).and_then(|r| r.parse().ok());
    facts.deployed_at = match (target.kind.as_str(), facts.revision) {
        ("Deployment", Some(revision)) => revision_created(client, target, &object, revision).await,
        ("Pod", _) => object.metadata.creation_timestamp.as_ref().and_then(time),
        _ => None,
    };
    if target.kind == "Deployment" && facts.ready_replicas.is_none() {
        // The status omits zero.
        facts.ready_replicas = object.data["status"].is_object().then_some(0);
    }
    Ok(facts)
}

/// When a Deployment's `revision` rolled out: the creation of its ReplicaSet with that
/// revision (the controller creates it for the rollout). Unknown when it cannot be read.
async fn revision_created(
    client: &Client,
    deployment: &ObjectRef,
    object: &DynamicObject,
    revision: i64,
) -> Option<DateTime<Utc>> {
    let namespace = deployment.namespace.as_deref()?;
    let selector = object.data["spec"]["selector"]["matchLabels"].as_object()?;
    let selector = selector
        .iter()
        .filter_map(|(k, v)| Some(format!("{k}={}", v.as_str()?)))
        .collect::<Vec<_>>()
        .join(",");
    let api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), namespace, &resource("ReplicaSet")?);
    let sets = api
        .list(&ListParams::default().labels(&selector))
        .await
        .ok()?;
    let uid = object.metadata.uid.as_deref();
    sets.items
        .iter()
        .filter(|set| controller(set).is_some_and(|o| Some(o.uid.as_str()) == uid))
        .find(|set| {
            set.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(REVISION))
                .and_then(|r| r.parse::<i64>().ok())
                == Some(revision)
        })
        .and_then(|set| set.metadata.creation_timestamp.as_ref().and_then(time))
}

/// A Kubernetes time as a chrono one.
/// A Kubernetes timestamp as a chrono time.
pub(crate) fn time(time: &Time) -> Option<DateTime<Utc>> {
    let nanos = u32::try_from(time.0.subsec_nanosecond()).ok()?;
    DateTime::from_timestamp(time.0.as_second(), nanos)
}

fn controller(object: &DynamicObject) -> Option<&OwnerReference> {
    object
        .metadata
        .owner_references
        .as_ref()?
        .iter()
        .find(|o| o.controller == Some(true))
}

async fn get(
    client: &Client,
    kind: &str,
    namespace: Option<&str>,
    name: &str,
) -> Result<DynamicObject, String> {
    let what = match namespace {
        Some(namespace) => format!("{kind} {namespace}/{name}"),
        None => format!("{kind} {name}"),
    };
    let resource = resource(kind).ok_or_else(|| format!("{what}: Salve does not read {kind}"))?;
    let api: Api<DynamicObject> = match namespace {
        Some(namespace) => Api::namespaced_with(client.clone(), namespace, &resource),
        None => Api::all_with(client.clone(), &resource),
    };
    api.get(name)
        .await
        .map_err(|error| format!("cannot read {what}: {}", reason(&error)))
}

/// A client error in one line (the API's own message when it sent a Status).
pub(crate) fn reason(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(status) => format!("{} ({})", status.message, status.code),
        other => other.to_string(),
    }
}

fn resource(kind: &str) -> Option<ApiResource> {
    use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
    use k8s_openapi::api::batch::v1::Job;
    use k8s_openapi::api::core::v1::{Node, Pod};
    Some(match kind {
        "Deployment" => ApiResource::erase::<Deployment>(&()),
        "StatefulSet" => ApiResource::erase::<StatefulSet>(&()),
        "DaemonSet" => ApiResource::erase::<DaemonSet>(&()),
        "ReplicaSet" => ApiResource::erase::<ReplicaSet>(&()),
        "Job" => ApiResource::erase::<Job>(&()),
        "Pod" => ApiResource::erase::<Pod>(&()),
        "Node" => ApiResource::erase::<Node>(&()),
        _ => return None,
    })
}

/// The diagnosis as journaled: owner, target and its facts, and what is unknown.
pub(crate) fn to_json(diagnosis: &Diagnosis) -> Value {
    let facts = &diagnosis.facts.target;
    serde_json::json!({
        "owner": diagnosis.facts.owner,
        "target": diagnosis.target.as_ref().map(ToString::to_string),
        "revision": facts.revision,
        "deployedAt": facts.deployed_at.map(|t| t.to_rfc3339()),
        "replicas": facts.replicas,
        "readyReplicas": facts.ready_replicas,
        "node": facts.node,
        "notes": diagnosis.notes,
    })
}
