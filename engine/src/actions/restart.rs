//! `rollout_restart`: what `kubectl rollout restart` does — stamp the pod template so the
//! workload rolls its pods — and record which incident step did it, so a retry of the same step
//! does not restart twice.

use chrono::{SecondsFormat, Utc};
use kube::api::Patch;
use serde_json::json;

use super::{Call, Outcome, Result};

/// The template annotation kubectl sets.
const RESTARTED_AT: &str = "kubectl.kubernetes.io/restartedAt";
/// The template annotation naming the incident step that restarted it.
const RESTARTED_FOR: &str = "salve.dev/restarted-for";

pub(super) async fn run(call: &Call<'_>) -> Result<Outcome> {
    if !matches!(
        call.target.kind.as_str(),
        "Deployment" | "StatefulSet" | "DaemonSet"
    ) {
        return Err(call.invalid("only Deployments, StatefulSets and DaemonSets roll".into()));
    }
    let api = call.api()?;
    let name = &call.target.name;
    let object = api.get(name).await.map_err(call.fail())?;
    let annotations = &object.data["spec"]["template"]["metadata"]["annotations"];
    let before = json!({
        RESTARTED_AT: annotations[RESTARTED_AT],
        RESTARTED_FOR: annotations[RESTARTED_FOR],
    });
    if annotations[RESTARTED_FOR].as_str() == Some(call.key) {
        let message = format!("already restarted for {}", call.key);
        return Ok(call.outcome(false, message, before.clone(), before));
    }
    let at = Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true);
    let patch = Patch::Merge(json!({
        "spec": {"template": {"metadata": {"annotations": {
            RESTARTED_AT: at,
            RESTARTED_FOR: call.key,
        }}}}
    }));
    api.patch(name, &call.patch_params(), &patch)
        .await
        .map_err(call.fail())?;
    let after = json!({RESTARTED_AT: at, RESTARTED_FOR: call.key});
    Ok(call.outcome(true, format!("restarted at {at}"), before, after))
}
