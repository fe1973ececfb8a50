//! `annotate`: set annotations on the target (for people, and for other controllers).

use kube::api::Patch;
use serde_json::{Map, Value, json};

use super::{Call, Outcome, Result};

pub(super) async fn run(call: &Call<'_>) -> Result<Outcome> {
    let Some(wanted) = call.params.get("annotations").and_then(Value::as_object) else {
        return Err(call.invalid("`annotations` must be a map of strings".into()));
    };
    let api = call.api()?;
    let name = &call.target.name;
    let object = api.get(name).await.map_err(call.fail())?;
    let current = object.metadata.annotations.unwrap_or_default();
    let before: Map<String, Value> = wanted
        .keys()
        .map(|k| (k.clone(), current.get(k).map_or(Value::Null, |v| json!(v))))
        .collect();
    let missing: Map<String, Value> = wanted
        .iter()
        .filter(|(k, v)| current.get(*k).map(String::as_str) != v.as_str())
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if missing.is_empty() {
        let before = Value::Object(before);
        return Ok(call.outcome(false, "already annotated".into(), before.clone(), before));
    }
    let message = format!(
        "annotated {}",
        missing.keys().cloned().collect::<Vec<_>>().join(", ")
    );
    let patch = Patch::Merge(json!({"metadata": {"annotations": missing}}));
    api.patch(name, &call.patch_params(), &patch)
        .await
        .map_err(call.fail())?;
    Ok(call.outcome(
        true,
        message,
        Value::Object(before),
        Value::Object(wanted.clone()),
    ))
}
