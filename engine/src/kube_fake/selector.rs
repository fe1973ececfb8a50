//! Label and field selectors, parsed from the `labelSelector` and `fieldSelector` parameters.

use serde_json::Value;

use super::status::ApiError;

/// One requirement of a label selector.
#[derive(Debug, Clone, PartialEq, Eq)]
enum LabelRequirement {
    /// `k=v` or `k==v`.
    Equals(String, String),
    /// `k!=v` (also true when `k` is absent).
    NotEquals(String, String),
    /// `k in (a,b)`.
    In(String, Vec<String>),
    /// `k notin (a,b)` (also true when `k` is absent).
    NotIn(String, Vec<String>),
    /// `k`.
    Exists(String),
    /// `!k`.
    DoesNotExist(String),
}

/// A parsed label selector: every requirement must hold.
#[derive(Debug, Clone, Default)]
pub(crate) struct LabelSelector(Vec<LabelRequirement>);

impl LabelSelector {
    /// Parses the `labelSelector` syntax: equality (`=`, `==`, `!=`), set (`in`, `notin`) and
    /// existence (`k`, `!k`) requirements separated by commas.
    pub(crate) fn parse(s: &str) -> Result<Self, ApiError> {
        let mut reqs = Vec::new();
        for part in split_top_level(s) {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            let bad = || ApiError::bad_request(format!("unable to parse requirement: {part:?}"));
            let req = if let Some((k, v)) = part.split_once("!=") {
                LabelRequirement::NotEquals(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
                LabelRequirement::Equals(k.trim().into(), v.trim().into())
            } else if let Some((k, set)) = part.split_once(" notin ") {
                LabelRequirement::NotIn(k.trim().into(), parse_set(set).ok_or_else(bad)?)
            } else if let Some((k, set)) = part.split_once(" in ") {
                LabelRequirement::In(k.trim().into(), parse_set(set).ok_or_else(bad)?)
            } else if let Some(k) = part.strip_prefix('!') {
                LabelRequirement::DoesNotExist(k.trim().into())
            } else if part.contains(char::is_whitespace) {
                return Err(bad());
            } else {
                LabelRequirement::Exists(part.into())
            };
            reqs.push(req);
        }
        Ok(Self(reqs))
    }

    /// The selector of an object's `spec.selector` (`matchLabels` and `matchExpressions`, as in
    /// a PodDisruptionBudget or a Deployment). `None` for an operator the API does not know
    /// (the real server would have refused such an object).
    pub(crate) fn from_object(selector: &Value) -> Option<Self> {
        let mut reqs = Vec::new();
        if let Some(labels) = selector.get("matchLabels").and_then(Value::as_object) {
            for (k, v) in labels {
                reqs.push(LabelRequirement::Equals(k.clone(), v.as_str()?.to_owned()));
            }
        }
        let expressions = selector.get("matchExpressions").and_then(Value::as_array);
        for expr in expressions.into_iter().flatten() {
            let key = expr.get("key").and_then(Value::as_str)?.to_owned();
            let values = || -> Vec<String> {
                expr.get("values")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            };
            reqs.push(match expr.get("operator").and_then(Value::as_str)? {
                "In" => LabelRequirement::In(key, values()),
                "NotIn" => LabelRequirement::NotIn(key, values()),
                "Exists" => LabelRequirement::Exists(key),
                "DoesNotExist" => LabelRequirement::DoesNotExist(key),
                _ => return None,
            });
        }
        Some(Self(reqs))
    }

    /// Whether an object's `metadata.labels` satisfy every requirement.
    pub(crate) fn matches(&self, obj: &Value) -> bool {
        let labels = &obj["metadata"]["labels"];
        let get = |k: &str| labels.get(k).and_then(Value::as_str);
        self.0.iter().all(|req| match req {
            LabelRequirement::Equals(k, v) => get(k) == Some(v),
            LabelRequirement::NotEquals(k, v) => get(k) != Some(v),
            LabelRequirement::In(k, set) => get(k).is_some_and(|l| set.iter().any(|s| s == l)),
            LabelRequirement::NotIn(k, set) => !get(k).is_some_and(|l| set.iter().any(|s| s == l)),
            LabelRequirement::Exists(k) => get(k).is_some(),
            LabelRequirement::DoesNotExist(k) => get(k).is_none(),
        })
    }
}

fn parse_set(s: &str) -> Option<Vec<String>> {
    let inner = s.trim().strip_prefix('(')?.strip_suffix(')')?;
    Some(
        inner
            .split(',')
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
            .collect(),
    )
}

/// Splits on commas outside parentheses.
fn split_top_level(s: &str) -> Vec<&str> {
    let (mut parts, mut depth, mut start) = (Vec::new(), 0usize, 0);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts
}

/// A parsed field selector: `path=value`, `path==value` or `path!=value` terms.
#[derive(Debug, Clone, Default)]
pub(crate) struct FieldSelector(Vec<(String, bool, String)>);

/// The field paths the real server lets a field selector use, beyond `metadata.name` and
/// `metadata.namespace` (which every resource supports), by kind.
fn allowed_fields(kind: &str) -> &'static [&'static str] {
    match kind {
        "Pod" => &[
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        ],
        "Event" => &[
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "type",
            "source",
        ],
        "Node" => &["spec.unschedulable"],
        "Secret" => &["type"],
        _ => &[],
    }
}

impl FieldSelector {
    /// Parses a field selector for objects of `kind`; a field the real server would not
    /// accept for that kind is a 400, as there.
    pub(crate) fn parse(s: &str, kind: &str) -> Result<Self, ApiError> {
        let mut terms = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (path, eq, value) = if let Some((k, v)) = part.split_once("!=") {
                (k, false, v)
            } else if let Some((k, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
                (k, true, v)
            } else {
                return Err(ApiError::bad_request(format!("invalid selector: '{part}'")));
            };
            let path = path.trim();
            if !matches!(path, "metadata.name" | "metadata.namespace")
                && !allowed_fields(kind).contains(&path)
            {
                return Err(ApiError::bad_request(format!(
                    "field label not supported: {path}"
                )));
            }
            terms.push((path.to_owned(), eq, value.trim().to_owned()));
        }
        Ok(Self(terms))
    }

    /// Whether the object's fields satisfy every term (a missing field reads as `""`, and
    /// booleans as `true`/`false`, as in the real server).
    pub(crate) fn matches(&self, obj: &Value) -> bool {
        self.0.iter().all(|(path, eq, value)| {
            let field = path.split('.').try_fold(obj, |v, seg| v.get(seg));
            let actual = match field {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Bool(b)) => b.to_string(),
                Some(Value::Number(n)) => n.to_string(),
                _ => String::new(),
            };
            (actual == *value) == *eq
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn label_selectors_match_like_the_real_server() {
        let obj = json!({"metadata": {"labels": {"app": "api", "tier": "web"}}});
        for (sel, want) in [
            ("app=api", true),
            ("app==api,tier=web", true),
            ("app=db", false),
            ("app!=db", true),
            ("env!=prod", true),
            ("tier in (web, db)", true),
            ("tier notin (web)", false),
            ("app", true),
            ("!env", true),
            ("!app", false),
            ("app in (api),!env", true),
        ] {
            let parsed = LabelSelector::parse(sel).expect(sel);
            assert_eq!(parsed.matches(&obj), want, "{sel}");
        }
    }

    #[test]
    fn object_selectors_match_labels_and_expressions() {
        let obj = json!({"metadata": {"labels": {"app": "api", "tier": "web"}}});
        for (sel, want) in [
            (json!({}), true),
            (json!({"matchLabels": {"app": "api"}}), true),
            (json!({"matchLabels": {"app": "db"}}), false),
            (
                json!({"matchExpressions": [{"key": "tier", "operator": "In", "values": ["web"]}]}),
                true,
            ),
            (
                json!({"matchExpressions": [{"key": "env", "operator": "Exists"}]}),
                false,
            ),
        ] {
            let parsed = LabelSelector::from_object(&sel).expect("a known operator");
            assert_eq!(parsed.matches(&obj), want, "{sel}");
        }
        let odd = json!({"matchExpressions": [{"key": "a", "operator": "Near"}]});
        assert!(LabelSelector::from_object(&odd).is_none());
    }

    #[test]
    fn field_selectors_allow_only_known_fields() {
        let pod = json!({"metadata": {"name": "p"}, "spec": {"nodeName": "n1"}});
        assert!(
            FieldSelector::parse("spec.nodeName=n1", "Pod")
                .expect("ok")
                .matches(&pod)
        );
        assert!(
            !FieldSelector::parse("metadata.name!=p", "Pod")
                .expect("ok")
                .matches(&pod)
        );
        let err = FieldSelector::parse("spec.nodeName=n1", "Deployment").expect_err("400");
        assert_eq!(err.code.as_u16(), 400);
    }
}
