//! The three patch types `kubectl` and kube send: JSON merge patch (RFC 7386), strategic merge
//! patch (a subset, described on [`strategic_merge`]) and JSON patch (RFC 6902).

use serde_json::{Map, Value};

use super::status::ApiError;

/// The patch types the fake accepts, by `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PatchType {
    /// `application/merge-patch+json`: RFC 7386.
    Merge,
    /// `application/strategic-merge-patch+json`: see [`strategic_merge`].
    Strategic,
    /// `application/json-patch+json`: RFC 6902.
    Json,
}

impl PatchType {
    /// The patch type for a `Content-Type` header; server-side apply and anything else is a
    /// 415, as from a server that does not know the type.
    pub(crate) fn from_content_type(content_type: &str) -> Result<Self, ApiError> {
        match content_type.split(';').next().unwrap_or_default().trim() {
            "application/merge-patch+json" => Ok(Self::Merge),
            "application/strategic-merge-patch+json" => Ok(Self::Strategic),
            "application/json-patch+json" => Ok(Self::Json),
            other => Err(ApiError::unsupported_media_type(other)),
        }
    }
}

/// Applies `patch` (the request body) of type `kind` to `doc`, returning the patched document.
pub(crate) fn apply(kind: PatchType, doc: &Value, patch: &[u8]) -> Result<Value, ApiError> {
    let mut out = doc.clone();
    match kind {
        PatchType::Merge => {
            let patch: Value = parse(patch)?;
            json_patch::merge(&mut out, &patch);
        }
        PatchType::Strategic => {
            let patch: Value = parse(patch)?;
            if !patch.is_object() {
                return Err(ApiError::bad_request(
                    "a strategic merge patch must be a JSON object",
                ));
            }
            out = strategic_merge(doc, &patch, None);
        }
        PatchType::Json => {
            let patch: json_patch::Patch = serde_json::from_slice(patch)
                .map_err(|e| ApiError::bad_request(format!("invalid JSON patch: {e}")))?;
            json_patch::patch(&mut out, &patch)
                .map_err(|e| ApiError::invalid_patch(format!("the JSON patch failed: {e}")))?;
        }
    }
    Ok(out)
}

fn parse(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("invalid JSON: {e}")))
}

/// The merge key of a list field, as Kubernetes' `patchMergeKey` tags declare it for the
/// fields the fake knows. `ports` is keyed by `containerPort` in a container and by `port` in
/// a Service; the items themselves tell which.
fn merge_key(field: &str, items: &[Value]) -> Option<&'static str> {
    Some(match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "volumes"
        | "env"
        | "imagePullSecrets" => "name",
        "volumeMounts" | "volumeDevices" => "mountPath",
        "conditions" => "type",
        "ports" => {
            if items.iter().any(|i| i.get("containerPort").is_some()) {
                "containerPort"
            } else {
                "port"
            }
        }
        _ => return None,
    })
}

/// A strategic merge patch, as much of it as Salve's actions use:
///
/// - objects merge recursively as in a JSON merge patch; `null` deletes a key;
/// - the lists Kubernetes merges by key are merged by key: `containers`, `initContainers`,
///   `ephemeralContainers`, `volumes`, `env`, `imagePullSecrets` by `name`; `volumeMounts` and
///   `volumeDevices` by `mountPath`; `conditions` by `type`; `ports` by `containerPort`
///   (containers) or `port` (Services). A patch item updates the item with the same key (which
///   keeps its other fields), or is appended; an item with `"$patch": "delete"` removes it;
/// - `"$patch": "replace"` in an object replaces that object instead of merging;
/// - every other list is replaced, and other `$` directives (`$setElementOrder`,
///   `$retainKeys`, `$deleteFromPrimitiveList`) are ignored.
///
/// Not supported: merging lists of primitives (e.g. `finalizers`) and per-type merge keys
/// beyond the table above.
pub(crate) fn strategic_merge(doc: &Value, patch: &Value, field: Option<&str>) -> Value {
    match (doc, patch) {
        (_, Value::Object(p)) if p.get("$patch").and_then(Value::as_str) == Some("replace") => {
            Value::Object(without_directives(p))
        }
        (Value::Object(d), Value::Object(p)) => {
            let mut out = d.clone();
            for (k, v) in p {
                if k.starts_with('$') {
                    continue;
                }
                if v.is_null() {
                    out.remove(k);
                } else {
                    let merged = match out.get(k) {
                        Some(old) => strategic_merge(old, v, Some(k)),
                        None => strategic_merge(&Value::Null, v, Some(k)),
                    };
                    out.insert(k.clone(), merged);
                }
            }
            Value::Object(out)
        }
        (Value::Array(d), Value::Array(p)) => match field.and_then(|f| merge_key(f, p)) {
            Some(key) => Value::Array(merge_list(d, p, key)),
            None => Value::Array(p.iter().map(clean).collect()),
        },
        (_, p) => clean(p),
    }
}

/// Merges list `patch` into list `doc` by `key`.
fn merge_list(doc: &[Value], patch: &[Value], key: &str) -> Vec<Value> {
    let mut out = doc.to_vec();
    for item in patch {
        let id = item.get(key);
        let at = id.and_then(|id| out.iter().position(|o| o.get(key) == Some(id)));
        let delete = item.get("$patch").and_then(Value::as_str) == Some("delete");
        match (at, delete) {
            (Some(i), true) => {
                out.remove(i);
            }
            (None, true) => {}
            (Some(i), false) => out[i] = strategic_merge(&out[i], item, None),
            (None, false) => out.push(clean(item)),
        }
    }
    out
}

/// A patch value with its `$` directives and `null`s removed, as it is stored when there is
/// nothing to merge it into.
fn clean(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, v)| !k.starts_with('$') && !v.is_null())
                .map(|(k, v)| (k.clone(), clean(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(clean).collect()),
        other => other.clone(),
    }
}

fn without_directives(m: &Map<String, Value>) -> Map<String, Value> {
    match clean(&Value::Object(m.clone())) {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployment() -> Value {
        json!({"spec": {"replicas": 2, "template": {"spec": {"containers": [
            {"name": "app", "image": "app:1", "resources": {"limits": {"memory": "1Gi"}}},
            {"name": "sidecar", "image": "proxy:1"},
        ]}}}})
    }

    #[test]
    fn strategic_merge_updates_a_container_by_name_and_keeps_its_other_fields() {
        let patch = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "app", "resources": {"limits": {"memory": "2Gi"}}},
        ]}}}});
        let out = strategic_merge(&deployment(), &patch, None);
        let containers = &out["spec"]["template"]["spec"]["containers"];
        assert_eq!(containers[0]["image"], "app:1");
        assert_eq!(containers[0]["resources"]["limits"]["memory"], "2Gi");
        assert_eq!(containers[1]["name"], "sidecar");
        assert_eq!(out["spec"]["replicas"], 2);
    }

    #[test]
    fn strategic_merge_appends_deletes_and_replaces() {
        let patch = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "sidecar", "$patch": "delete"},
            {"name": "debug", "image": "busybox", "args": null},
        ]}}, "strategy": {"$patch": "replace", "type": "Recreate"}}});
        let mut doc = deployment();
        doc["spec"]["strategy"] = json!({"type": "RollingUpdate", "rollingUpdate": {}});
        let out = strategic_merge(&doc, &patch, None);
        let names: Vec<_> = out["spec"]["template"]["spec"]["containers"]
            .as_array()
            .map(|c| c.iter().map(|c| c["name"].clone()).collect())
            .unwrap_or_default();
        assert_eq!(names, [json!("app"), json!("debug")]);
        assert_eq!(
            out["spec"]["template"]["spec"]["containers"][1],
            json!({"name": "debug", "image": "busybox"})
        );
        assert_eq!(out["spec"]["strategy"], json!({"type": "Recreate"}));
    }

    #[test]
    fn merge_patch_replaces_lists_whole() {
        let patch = br#"{"spec": {"template": {"spec": {"containers": [{"name": "app"}]}}}}"#;
        let out = apply(PatchType::Merge, &deployment(), patch).expect("patch applies");
        assert_eq!(
            out["spec"]["template"]["spec"]["containers"],
            json!([{"name": "app"}])
        );
    }

    #[test]
    fn json_patch_tests_and_fails_as_invalid() {
        let ok = br#"[{"op": "replace", "path": "/spec/replicas", "value": 5}]"#;
        let out = apply(PatchType::Json, &deployment(), ok).expect("patch applies");
        assert_eq!(out["spec"]["replicas"], 5);
        let failing = br#"[{"op": "test", "path": "/spec/replicas", "value": 9}]"#;
        let err = apply(PatchType::Json, &deployment(), failing).expect_err("test op fails");
        assert_eq!(err.code.as_u16(), 422);
        let unknown = PatchType::from_content_type("application/apply-patch+yaml");
        assert_eq!(unknown.expect_err("415").code.as_u16(), 415);
    }
}
