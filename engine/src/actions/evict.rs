//! `evict`: evict a Pod through the Eviction API, so PodDisruptionBudgets hold — or, for a
//! Node, its pods as `kubectl drain` does: every pod on the node (`spec.nodeName`) but
//! DaemonSet-managed pods (their controller would put them back at once) and mirror pods (the
//! kubelet's own), nor pods already being deleted.
//!
//! Params: `selector` (Node only) narrows the pods by label, as `kubectl drain
//! --pod-selector`; `skipCritical` leaves pods of the `system-node-critical` and
//! `system-cluster-critical` priority classes alone; `maxPods` evicts at most that many in
//! this run (the rest are reported).
//!
//! A pod already gone is nothing to do. A budget that refuses (the API's 429) fails the step
//! with [`Error::DisruptionBudget`], after the node's other pods were tried.

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, EvictParams, ListParams, PostParams};
use serde_json::{Value, json};

use super::{Call, Error, Outcome, Result, describe, is_status};

/// The priority classes of the pods a cluster cannot run without.
const CRITICAL: [&str; 2] = ["system-node-critical", "system-cluster-critical"];
/// The annotation the kubelet puts on the API mirror of a static pod.
const MIRROR: &str = "kubernetes.io/config.mirror";

pub(super) async fn run(call: &Call<'_>) -> Result<Outcome> {
    let skip_critical = match call.params.get("skipCritical") {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(other) => {
            return Err(call.invalid(format!("`skipCritical` {other} is not true or false")));
        }
    };
    let max_pods = match call.params.get("maxPods") {
        None => None,
        Some(value) => Some(
            value
                .as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .ok_or_else(|| call.invalid(format!("`maxPods` {value} is not a count")))?,
        ),
    };
    let mut skipped = Vec::new();
    let candidates: Vec<Pod> = match call.target.kind.as_str() {
        "Pod" => {
            let pods = call.namespaced::<Pod>()?;
            match pods.get_opt(&call.target.name).await.map_err(call.fail())? {
                Some(pod) if pod.metadata.deletion_timestamp.is_none() => vec![pod],
                Some(_) => {
                    let before = json!({"pods": []});
                    let message = "already being deleted".into();
                    return Ok(call.outcome(false, message, before.clone(), before));
                }
                None => {
                    let before = json!({"pods": []});
                    return Ok(call.outcome(false, "already gone".into(), before.clone(), before));
                }
            }
        }
        "Node" => {
            let mut params =
                ListParams::default().fields(&format!("spec.nodeName={}", call.target.name));
            if let Some(selector) = call.params.get("selector") {
                let selector = selector
                    .as_str()
                    .ok_or_else(|| call.invalid(format!("`selector` {selector} is not text")))?;
                params = params.labels(selector);
            }
            let pods = call.cluster_wide::<Pod>();
            let mut found = pods.list(&params).await.map_err(call.fail())?.items;
            found.sort_by_key(pod_name);
            found
                .into_iter()
                .filter(|pod| match drain_skips(pod) {
                    Some(why) => {
                        skipped.push(json!({"pod": pod_name(pod), "why": why}));
                        false
                    }
                    None => true,
                })
                .collect()
        }
        _ => return Err(call.invalid("only a Pod or a Node's pods are evicted".into())),
    };
    let mut chosen = Vec::new();
    for pod in candidates {
        if skip_critical && is_critical(&pod) {
            skipped.push(json!({"pod": pod_name(&pod), "why": "critical priority class"}));
        } else if max_pods.is_some_and(|max| chosen.len() >= max) {
            skipped.push(json!({"pod": pod_name(&pod), "why": "over maxPods"}));
        } else {
            chosen.push(pod);
        }
    }
    let before = json!({"pods": chosen.iter().map(pod_name).collect::<Vec<_>>()});

    let params = EvictParams {
        delete_options: None,
        post_options: PostParams {
            dry_run: call.dry_run,
            ..PostParams::default()
        },
    };
    let (mut evicted, mut gone, mut refused) = (Vec::new(), Vec::new(), None);
    for pod in &chosen {
        let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
        let name = pod.metadata.name.as_deref().unwrap_or_default();
        let pods: Api<Pod> = Api::namespaced(call.cluster.client.clone(), namespace);
        match pods.evict(name, &params).await {
            Ok(_) => evicted.push(pod_name(pod)),
            Err(e) if is_status(&e, 404) => gone.push(pod_name(pod)),
            Err(e) if is_status(&e, 429) => {
                if refused.is_none() {
                    refused = Some((pod_name(pod), e));
                }
            }
            Err(source) => {
                return Err(Error::Api {
                    action: call.action,
                    target: format!("{} (pod {})", describe(call.target), pod_name(pod)),
                    source,
                });
            }
        }
    }
    if let Some((pod, source)) = refused {
        let why = budget_reason(&source);
        let done = if evicted.is_empty() {
            String::new()
        } else {
            format!(" ({} other pods evicted)", evicted.len())
        };
        return Err(Error::DisruptionBudget {
            action: call.action,
            target: describe(call.target),
            reason: format!("pod {pod} cannot be evicted now: {why}{done}"),
            source,
        });
    }
    let message = match (evicted.len(), gone.len(), skipped.len()) {
        (0, 0, 0) => "no pods to evict".to_owned(),
        (0, _, 0) => "already gone".to_owned(),
        (n, _, 0) => format!("evicted {n} pods"),
        (n, _, s) => format!("evicted {n} pods, skipped {s}"),
    };
    let after = json!({"evicted": evicted, "gone": gone, "skipped": skipped});
    Ok(call.outcome(!evicted.is_empty(), message, before, after))
}

/// `namespace/name`.
fn pod_name(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod.metadata.name.as_deref().unwrap_or_default()
    )
}

/// Why `kubectl drain` would leave this pod on the node, if it would.
fn drain_skips(pod: &Pod) -> Option<&'static str> {
    let meta = &pod.metadata;
    if meta.deletion_timestamp.is_some() {
        return Some("already being deleted");
    }
    if meta
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(MIRROR))
    {
        return Some("mirror pod");
    }
    let by_daemon_set = meta
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.controller == Some(true) && o.kind == "DaemonSet");
    by_daemon_set.then_some("managed by a DaemonSet")
}

fn is_critical(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.priority_class_name.as_deref())
        .is_some_and(|class| CRITICAL.contains(&class))
}

/// The budget's own words from a 429 (its `details.causes`), else the Status message.
fn budget_reason(error: &kube::Error) -> String {
    let kube::Error::Api(status) = error else {
        return error.to_string();
    };
    let causes: Vec<&str> = status
        .details
        .iter()
        .flat_map(|d| &d.causes)
        .map(|c| c.message.as_str())
        .filter(|m| !m.is_empty())
        .collect();
    if causes.is_empty() {
        status.message.clone()
    } else {
        format!("{} {}", status.message, causes.join("; "))
    }
}
