//! `scale`: set a workload's replicas through its `scale` subresource — to `replicas`, or up by
//! `delta` — kept within `min` and `max`.

use kube::api::Patch;
use serde_json::{Value, json};

use super::{Call, Outcome, Result};

pub(super) async fn run(call: &Call<'_>) -> Result<Outcome> {
    let api = call.api()?;
    let name = &call.target.name;
    let scale = api.get_scale(name).await.map_err(call.fail())?;
    let current = scale
        .spec
        .as_ref()
        .and_then(|s| s.replicas)
        .map_or(0, i64::from);
    let param = |key: &str| call.params.get(key).and_then(Value::as_i64);
    let mut want = match (param("replicas"), param("delta")) {
        (Some(replicas), None) => replicas,
        (None, Some(delta)) => current.saturating_add(delta),
        (Some(_), Some(_)) => {
            return Err(call.invalid("give `replicas` or `delta`, not both".into()));
        }
        (None, None) => return Err(call.invalid("give `replicas` or `delta`".into())),
    };
    if let Some(min) = param("min") {
        want = want.max(min);
    }
    if let Some(max) = param("max") {
        want = want.min(max);
    }
    let want = want.clamp(0, i64::from(i32::MAX));
    let before = json!({"replicas": current});
    if want == current {
        let message = format!("already at {current} replicas");
        return Ok(call.outcome(false, message, before.clone(), before));
    }
    let patch = Patch::Merge(json!({"spec": {"replicas": want}}));
    let after = api
        .patch_scale(name, &call.patch_params(), &patch)
        .await
        .map_err(call.fail())?;
    let now = after.spec.and_then(|s| s.replicas).map_or(want, i64::from);
    let message = format!("scaled from {current} to {now} replicas");
    Ok(call.outcome(true, message, before, json!({"replicas": now})))
}
