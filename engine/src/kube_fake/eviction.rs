//! The `pods/{name}/eviction` subresource: delete a pod unless a PodDisruptionBudget forbids
//! it now, as the real server's eviction REST handler does.
//!
//! The real server reads `status.disruptionsAllowed`, which the disruption controller keeps up
//! to date; the fake has no controller, so it computes the same figure at the time of the
//! request: the pods the budget selects that are Ready (condition `Ready=True`, not being
//! deleted) are the healthy ones, and the budget wants `minAvailable` of them, or all selected
//! pods but `maxUnavailable` (percentages rounded up). The expected count is the selected pods
//! for an integer `minAvailable`, else the scale of their controllers (a ReplicaSet's, or its
//! Deployment's), as the disruption controller counts.

use serde_json::{Value, json};

use super::selector::LabelSelector;
use super::status::ApiError;
use super::store::{ObjectKey, Store};

/// What an eviction asks, read from its body and query.
pub(crate) struct Eviction<'a> {
    /// The pod's namespace.
    pub(crate) namespace: &'a str,
    /// The pod's name, from the URL.
    pub(crate) name: &'a str,
    /// The `policy/v1` Eviction body.
    pub(crate) body: &'a Value,
    /// `dryRun=All` in the query.
    pub(crate) dry_run: bool,
}

/// Evicts the pod, or answers why not. Returns the `Status` of a success (the caller sends it
/// with 201 Created).
pub(crate) fn evict(store: &mut Store, eviction: &Eviction<'_>) -> Result<Value, ApiError> {
    let Eviction {
        namespace, name, ..
    } = *eviction;
    let body = eviction.body;
    check_body(body, name)?;
    let key = ObjectKey::pod(namespace, name);
    let pod = store
        .objects
        .get(&key)
        .cloned()
        .ok_or_else(|| ApiError::not_found(format!("pods \"{name}\" not found")))?;
    let options = &body["deleteOptions"];
    for field in ["uid", "resourceVersion"] {
        if let Some(want) = options["preconditions"].get(field).and_then(Value::as_str)
            && pod["metadata"][field].as_str() != Some(want)
        {
            return Err(ApiError::conflict("pods", name));
        }
    }
    if !ignores_budgets(&pod) {
        check_budgets(store, namespace, &pod)?;
    }
    let body_dry = options["dryRun"]
        .as_array()
        .is_some_and(|a| a.iter().any(|v| v == "All"));
    if !(eviction.dry_run || body_dry) {
        store.commit(key, None);
    }
    Ok(json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "code": 201,
    }))
}

/// The body must be an Eviction (kube's client sends no `apiVersion`/`kind`, which the real
/// server accepts) naming the pod of the URL, if it names one.
fn check_body(body: &Value, name: &str) -> Result<(), ApiError> {
    if !body.is_object() {
        return Err(ApiError::bad_request(
            "the request body must be a JSON object",
        ));
    }
    match body.get("apiVersion").and_then(Value::as_str) {
        None | Some("policy/v1" | "policy/v1beta1") => {}
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "the apiVersion of an eviction must be policy/v1, not {other}"
            )));
        }
    }
    match body.get("kind").and_then(Value::as_str) {
        None | Some("Eviction") => {}
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "the kind of an eviction must be Eviction, not {other}"
            )));
        }
    }
    match body["metadata"].get("name").and_then(Value::as_str) {
        Some(n) if n != name => Err(ApiError::bad_request(
            "name in URL does not match name in Eviction object",
        )),
        _ => Ok(()),
    }
}

/// A pod that is not running (Pending, Succeeded, Failed) or already being deleted is evicted
/// without asking its budgets, as by the real server.
fn ignores_budgets(pod: &Value) -> bool {
    matches!(
        pod["status"]["phase"].as_str(),
        Some("Pending" | "Succeeded" | "Failed")
    ) || pod["metadata"].get("deletionTimestamp").is_some()
}

/// Whether a pod counts as healthy for a budget: Ready and not being deleted.
fn is_ready(pod: &Value) -> bool {
    pod["metadata"].get("deletionTimestamp").is_none()
        && pod["status"]["conditions"].as_array().is_some_and(|c| {
            c.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
}

/// Refuses the eviction when the one budget that selects the pod allows no disruption now.
fn check_budgets(store: &Store, namespace: &str, pod: &Value) -> Result<(), ApiError> {
    let in_namespace = |api_version: &'static str, plural: &'static str| {
        objects_in(store, namespace, api_version, plural)
    };
    let selects = |budget: &Value, pod: &Value| {
        // A budget without a selector selects nothing; an empty one selects every pod.
        budget["spec"]
            .get("selector")
            .and_then(LabelSelector::from_object)
            .is_some_and(|s| s.matches(pod))
    };
    let budgets: Vec<&Value> = in_namespace("policy/v1", "poddisruptionbudgets")
        .filter(|b| selects(b, pod))
        .collect();
    let budget = match budgets.as_slice() {
        [] => return Ok(()),
        [one] => *one,
        _ => {
            return Err(ApiError::internal(
                "This pod has more than one PodDisruptionBudget, which the eviction \
                 subresource does not support.",
            ));
        }
    };
    let selected: Vec<&Value> = in_namespace("v1", "pods")
        .filter(|p| selects(budget, p))
        .collect();
    let spec = &budget["spec"];
    let expected = match spec.get("minAvailable") {
        Some(Value::Number(_)) => selected.len(),
        _ => expected_pods(store, namespace, &selected),
    };
    let healthy = selected.iter().filter(|p| is_ready(p)).count();
    let desired = if let Some(min) = spec.get("minAvailable") {
        scaled(min, expected)
    } else if let Some(max) = spec.get("maxUnavailable") {
        expected.saturating_sub(scaled(max, expected))
    } else {
        // Neither set: the API defaults minAvailable to 1.
        1
    };
    let budget_name = budget["metadata"]["name"].as_str().unwrap_or_default();
    let pod_healthy = is_ready(pod);
    let allowed = if pod_healthy {
        healthy > desired
    } else {
        // An unhealthy pod may go when the budget is met anyway (`IfHealthyBudget`, the
        // default), or always (`AlwaysAllow`).
        spec["unhealthyPodEvictionPolicy"] == "AlwaysAllow" || healthy >= desired
    };
    if allowed {
        return Ok(());
    }
    Err(ApiError::disruption_budget(format!(
        "The disruption budget {budget_name} needs {desired} healthy pods and has {healthy} \
         currently"
    )))
}

/// How many pods a budget expects, as the disruption controller counts them for a percentage
/// or `maxUnavailable`: the scale of each controller of the selected pods (a ReplicaSet owned
/// by a Deployment counts the Deployment's), and 1 for a pod without a controller.
fn expected_pods(store: &Store, namespace: &str, pods: &[&Value]) -> usize {
    let mut owners = std::collections::BTreeSet::new();
    let mut expected = 0;
    for pod in pods {
        let scale = controller(store, namespace, pod).map(|owner| {
            let owner = controller(store, namespace, owner)
                .filter(|o| o["kind"] == "Deployment")
                .unwrap_or(owner);
            let key = (
                owner["kind"].as_str().unwrap_or_default().to_owned(),
                owner["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            );
            (key, owner["spec"]["replicas"].as_u64().unwrap_or(1))
        });
        match scale {
            Some((key, replicas)) => {
                if owners.insert(key) {
                    expected += usize::try_from(replicas).unwrap_or(usize::MAX);
                }
            }
            None => expected += 1,
        }
    }
    expected.max(pods.len())
}

/// The stored scalable controller (ReplicaSet, Deployment, StatefulSet) of `obj`, if any.
fn controller<'a>(store: &'a Store, namespace: &str, obj: &Value) -> Option<&'a Value> {
    let owner = obj["metadata"]["ownerReferences"]
        .as_array()?
        .iter()
        .find(|o| o["controller"] == true)?;
    let plural = match owner["kind"].as_str()? {
        "ReplicaSet" => "replicasets",
        "Deployment" => "deployments",
        "StatefulSet" => "statefulsets",
        _ => return None,
    };
    let key = ObjectKey {
        api_version: "apps/v1".into(),
        plural: plural.into(),
        namespace: Some(namespace.to_owned()),
        name: owner["name"].as_str()?.to_owned(),
    };
    store
        .objects
        .get(&key)
        .filter(|o| o["metadata"]["uid"] == owner["uid"])
}

/// The stored objects of one type in `namespace`.
fn objects_in<'a>(
    store: &'a Store,
    namespace: &'a str,
    api_version: &'static str,
    plural: &'static str,
) -> impl Iterator<Item = &'a Value> + 'a {
    store
        .objects
        .iter()
        .filter(move |(k, _)| {
            k.api_version == api_version
                && k.plural == plural
                && k.namespace.as_deref() == Some(namespace)
        })
        .map(|(_, v)| v)
}

/// An int-or-percent budget field against `total` pods (percentages rounded up, as the real
/// disruption controller does); anything unreadable counts as 0.
fn scaled(value: &Value, total: usize) -> usize {
    match value {
        Value::Number(n) => n
            .as_u64()
            .and_then(|n| usize::try_from(n).ok())
            .unwrap_or(0),
        Value::String(s) => match s.strip_suffix('%').map(str::parse::<usize>) {
            Some(Ok(percent)) => (percent.saturating_mul(total)).div_ceil(100),
            _ => s.parse().unwrap_or(0),
        },
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_fields_scale_like_the_disruption_controller() {
        assert_eq!(scaled(&json!(2), 5), 2);
        assert_eq!(scaled(&json!("50%"), 3), 2);
        assert_eq!(scaled(&json!("100%"), 4), 4);
        assert_eq!(scaled(&json!("0%"), 4), 0);
        assert_eq!(scaled(&json!("lots"), 4), 0);
        assert_eq!(scaled(&json!(-1), 4), 0);
    }
}
