//! `delete_pod`: delete a pod (its controller makes a new one), with an optional
//! `gracePeriod`. A pod already gone, or already being deleted (it has a
//! `deletionTimestamp`), is not an error: there is nothing left to do.

use kube::api::DeleteParams;
use serde_json::{Value, json};

use super::{Call, Outcome, Result};

pub(super) async fn run(call: &Call<'_>) -> Result<Outcome> {
    if call.target.kind != "Pod" {
        return Err(call.invalid("only a Pod is deleted".into()));
    }
    let grace = match call.params.get("gracePeriod").and_then(Value::as_str) {
        Some(text) => Some(
            crate::check::parse_duration(text)
                .and_then(|d| u32::try_from(d.as_secs()).ok())
                .ok_or_else(|| call.invalid(format!("`gracePeriod` `{text}` is not a duration")))?,
        ),
        None => None,
    };
    let api = call.api()?;
    let name = &call.target.name;
    let Some(pod) = api.get_opt(name).await.map_err(call.fail())? else {
        let before = json!({"exists": false});
        return Ok(call.outcome(false, "already gone".into(), before.clone(), before));
    };
    if pod.metadata.deletion_timestamp.is_some() {
        let before = json!({"exists": true, "terminating": true, "uid": pod.metadata.uid});
        return Ok(call.outcome(
            false,
            "already being deleted".into(),
            before.clone(),
            before,
        ));
    }
    let params = DeleteParams {
        dry_run: call.dry_run,
        grace_period_seconds: grace,
        ..DeleteParams::default()
    };
    api.delete(name, &params).await.map_err(call.fail())?;
    let before = json!({"exists": true, "uid": pod.metadata.uid});
    Ok(call.outcome(true, "deleted".into(), before, json!({"exists": false})))
}
