//! `cordon` and `uncordon`: mark a node unschedulable, or schedulable again.

use kube::api::Patch;
use serde_json::json;

use super::{Call, Outcome, Result};

pub(super) async fn run(call: &Call<'_>, unschedulable: bool) -> Result<Outcome> {
    if call.target.kind != "Node" {
        return Err(call.invalid("only a Node is cordoned".into()));
    }
    let api = call.api()?;
    let name = &call.target.name;
    let node = api.get(name).await.map_err(call.fail())?;
    let current = node.data["spec"]["unschedulable"]
        .as_bool()
        .unwrap_or(false);
    let before = json!({"unschedulable": current});
    let verb = if unschedulable {
        "cordoned"
    } else {
        "uncordoned"
    };
    if current == unschedulable {
        return Ok(call.outcome(false, format!("already {verb}"), before.clone(), before));
    }
    let patch = Patch::Merge(json!({"spec": {"unschedulable": unschedulable}}));
    api.patch(name, &call.patch_params(), &patch)
        .await
        .map_err(call.fail())?;
    Ok(call.outcome(
        true,
        verb.to_string(),
        before,
        json!({"unschedulable": unschedulable}),
    ))
}
