//! `patch_resources`: set a container's memory and CPU requests and limits (`memoryLimit:
//! 1Gi`, ...), or raise its memory limit by a factor (`memoryLimitFactor: "1.5"`), with a
//! strategic merge patch of the pod template — the workload then rolls its pods. Which incident
//! step did it is recorded, so a retry does not raise a limit twice.

use kube::api::Patch;
use serde_json::{Map, Value, json};

use super::{Call, Outcome, Result};

/// The template annotation naming the incident step that patched it.
const PATCHED_FOR: &str = "salve.dev/resources-patched-for";

pub(super) async fn run(call: &Call<'_>) -> Result<Outcome> {
    if !matches!(
        call.target.kind.as_str(),
        "Deployment" | "StatefulSet" | "DaemonSet"
    ) {
        return Err(call.invalid("only a workload's pod template has resources".into()));
    }
    let api = call.api()?;
    let name = &call.target.name;
    let object = api.get(name).await.map_err(call.fail())?;
    let template = &object.data["spec"]["template"];
    let containers = template["spec"]["containers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let wanted = call.params.get("container").and_then(Value::as_str);
    let container = match wanted {
        Some(wanted) => containers.iter().find(|c| c["name"] == wanted),
        None => containers.first(),
    }
    .ok_or_else(|| {
        call.invalid(match wanted {
            Some(wanted) => format!("no container `{wanted}`"),
            None => "the pod template has no container".into(),
        })
    })?;
    let container_name = container["name"].as_str().unwrap_or_default().to_string();
    let before = container["resources"].clone();
    if template["metadata"]["annotations"][PATCHED_FOR].as_str() == Some(call.key) {
        let message = format!("already patched for {}", call.key);
        return Ok(call.outcome(false, message, before.clone(), before));
    }

    let text = |key: &str| call.params.get(key).and_then(Value::as_str);
    let mut limits = Map::new();
    let mut requests = Map::new();
    for (key, limit, field) in [
        ("memoryLimit", true, "memory"),
        ("cpuLimit", true, "cpu"),
        ("memoryRequest", false, "memory"),
        ("cpuRequest", false, "cpu"),
    ] {
        if let Some(value) = text(key) {
            let map = if limit { &mut limits } else { &mut requests };
            map.insert(field.to_string(), json!(value));
        }
    }
    if let Some(factor) = text("memoryLimitFactor") {
        let factor: f64 = factor
            .parse()
            .ok()
            .filter(|f: &f64| f.is_finite() && *f > 0.0)
            .ok_or_else(|| {
                call.invalid(format!(
                    "`memoryLimitFactor` `{factor}` is not a positive number"
                ))
            })?;
        let current = before["limits"]["memory"].as_str().ok_or_else(|| {
            call.invalid(format!(
                "container `{container_name}` has no memory limit to raise"
            ))
        })?;
        let bytes = memory_bytes(current)
            .ok_or_else(|| call.invalid(format!("cannot read the memory limit `{current}`")))?;
        let raised = (bytes * factor / MIB).ceil();
        limits.insert("memory".into(), json!(format!("{raised}Mi")));
    }
    if limits.is_empty() && requests.is_empty() {
        return Err(call.invalid("give at least one of memoryLimit, memoryRequest, cpuLimit, cpuRequest, memoryLimitFactor".into()));
    }
    let mut resources = Map::new();
    if !limits.is_empty() {
        resources.insert("limits".into(), Value::Object(limits));
    }
    if !requests.is_empty() {
        resources.insert("requests".into(), Value::Object(requests));
    }
    let patch = Patch::Strategic(json!({
        "spec": {"template": {
            "metadata": {"annotations": {PATCHED_FOR: call.key}},
            "spec": {"containers": [{"name": container_name, "resources": resources}]},
        }}
    }));
    api.patch(name, &call.patch_params(), &patch)
        .await
        .map_err(call.fail())?;
    let message = format!("set resources of container `{container_name}`");
    Ok(call.outcome(true, message, before, Value::Object(resources)))
}

const MIB: f64 = 1024.0 * 1024.0;

/// A memory quantity in bytes: `512Mi`, `1Gi`, `1G`, `1500M`, `2e9`, `1073741824`.
fn memory_bytes(quantity: &str) -> Option<f64> {
    const SUFFIXES: [(&str, f64); 12] = [
        ("Ki", 1024.0),
        ("Mi", MIB),
        ("Gi", MIB * 1024.0),
        ("Ti", MIB * MIB),
        ("Pi", MIB * MIB * 1024.0),
        ("Ei", MIB * MIB * MIB),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("P", 1e15),
        ("E", 1e18),
    ];
    let quantity = quantity.trim();
    let (number, scale) = SUFFIXES
        .iter()
        .find_map(|(suffix, scale)| quantity.strip_suffix(suffix).map(|n| (n, *scale)))
        .unwrap_or((quantity, 1.0));
    number
        .parse::<f64>()
        .ok()
        .filter(|n| n.is_finite() && *n >= 0.0)
        .map(|n| n * scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_quantities_read_as_kubernetes_writes_them() {
        assert_eq!(memory_bytes("512Mi"), Some(512.0 * MIB));
        assert_eq!(memory_bytes("1Gi"), Some(1024.0 * MIB));
        assert_eq!(memory_bytes("1G"), Some(1e9));
        assert_eq!(memory_bytes("2e9"), Some(2e9));
        assert_eq!(memory_bytes("1073741824"), Some(1_073_741_824.0));
        assert_eq!(memory_bytes("lots"), None);
        assert_eq!(memory_bytes("-1Gi"), None);
    }
}
