//! `capture_logs`: copy recent container logs into the journal — of a Pod, or of a workload's
//! pods (found by its `spec.selector`, at most `maxPods`, default 3, by name). For each
//! container the last `tailLines` lines (default 200, at most 5000), and those of its previous
//! instance too when it restarted (`previous: false` turns that off). Each container's text is
//! cut to its last 64 KiB, and the entry says so (`truncated: true`).
//!
//! The logs go in `Outcome.after` as `{"logs": [{"pod", "container", "previous", "lines",
//! "truncated"}], "lines": total}`. Reading changes nothing, so a dry run reads them the same
//! way and the outcome is never `changed`.

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::{ListParams, LogParams};
use serde_json::{Value, json};

use super::{Call, Outcome, Result, is_status, selector_query};

/// Lines per container when `tailLines` is not given.
const DEFAULT_TAIL_LINES: u64 = 200;
/// The most lines per container, whatever `tailLines` says.
const MAX_TAIL_LINES: u64 = 5000;
/// Pods of a workload read when `maxPods` is not given.
const DEFAULT_MAX_PODS: u64 = 3;
/// The most bytes of log kept per container (the newest).
const MAX_BYTES: usize = 64 * 1024;

/// What to read, from the step's params.
struct Wanted {
    container: Option<String>,
    tail_lines: i64,
    since_seconds: Option<i64>,
    previous: bool,
    max_pods: usize,
}

pub(super) async fn run(call: &Call<'_>) -> Result<Outcome> {
    let wanted = wanted(call)?;
    let pods_api = call.namespaced::<Pod>()?;
    let name = &call.target.name;
    let pods = match call.target.kind.as_str() {
        "Pod" => vec![pods_api.get(name).await.map_err(call.fail())?],
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job" => {
            let workload = call.api()?.get(name).await.map_err(call.fail())?;
            let selector =
                serde_json::from_value::<LabelSelector>(workload.data["spec"]["selector"].clone())
                    .ok()
                    .and_then(|s| selector_query(&s))
                    .filter(|s| !s.is_empty())
                    .ok_or_else(|| call.invalid("the workload's selector cannot be read".into()))?;
            let mut pods = pods_api
                .list(&ListParams::default().labels(&selector))
                .await
                .map_err(call.fail())?
                .items;
            pods.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
            pods.truncate(wanted.max_pods);
            pods
        }
        other => return Err(call.invalid(format!("a {other} has no logs"))),
    };

    let mut entries = Vec::new();
    let mut truncated_any = false;
    for pod in &pods {
        let pod_name = pod.metadata.name.clone().unwrap_or_default();
        let containers = pod
            .spec
            .iter()
            .flat_map(|s| &s.containers)
            .map(|c| c.name.as_str())
            .filter(|c| wanted.container.as_deref().is_none_or(|w| w == *c));
        for container in containers {
            let restarts = pod
                .status
                .iter()
                .flat_map(|s| s.container_statuses.iter().flatten())
                .find(|s| s.name == container)
                .map_or(0, |s| s.restart_count);
            let instances: &[bool] = if wanted.previous && restarts > 0 {
                &[true, false]
            } else {
                &[false]
            };
            for &previous in instances {
                let params = LogParams {
                    container: Some(container.to_owned()),
                    tail_lines: Some(wanted.tail_lines),
                    since_seconds: wanted.since_seconds,
                    previous,
                    ..LogParams::default()
                };
                let entry = match pods_api.logs(&pod_name, &params).await {
                    Ok(text) => {
                        let (text, truncated) = newest(&text, MAX_BYTES);
                        truncated_any |= truncated;
                        json!({
                            "pod": pod_name, "container": container, "previous": previous,
                            "lines": text.lines().collect::<Vec<_>>(), "truncated": truncated,
                        })
                    }
                    // No previous instance kept, or the pod went away meanwhile: nothing to read.
                    Err(e) if previous && (is_status(&e, 400) || is_status(&e, 404)) => continue,
                    Err(e) if is_status(&e, 404) => continue,
                    // A container still waiting to start has no log yet; say why.
                    Err(kube::Error::Api(status)) if status.code == 400 => json!({
                        "pod": pod_name, "container": container, "previous": previous,
                        "lines": [], "truncated": false, "error": status.message,
                    }),
                    Err(e) => return Err(call.fail()(e)),
                };
                entries.push(entry);
            }
        }
    }
    if let Some(container) = &wanted.container
        && entries.is_empty()
        && !pods.is_empty()
    {
        return Err(call.invalid(format!("no pod has a container `{container}`")));
    }
    let lines: usize = entries
        .iter()
        .map(|e| e["lines"].as_array().map_or(0, Vec::len))
        .sum();
    let mut message = format!(
        "captured {lines} lines from {} containers of {} pods",
        entries.len(),
        pods.len()
    );
    if truncated_any {
        message.push_str(&format!(
            " (some cut to their last {} KiB)",
            MAX_BYTES / 1024
        ));
    }
    let after = json!({"logs": entries, "lines": lines});
    Ok(call.outcome(false, message, Value::Null, after))
}

fn wanted(call: &Call<'_>) -> Result<Wanted> {
    let count = |name: &str, default: u64| -> Result<u64> {
        match call.params.get(name) {
            None => Ok(default),
            Some(value) => value
                .as_u64()
                .ok_or_else(|| call.invalid(format!("`{name}` {value} is not a count"))),
        }
    };
    let tail_lines = count("tailLines", DEFAULT_TAIL_LINES)?.clamp(1, MAX_TAIL_LINES);
    let max_pods = count("maxPods", DEFAULT_MAX_PODS)?;
    let since_seconds = match call.params.get("since") {
        None => None,
        Some(value) => {
            let text = value.as_str().unwrap_or_default();
            let duration = crate::check::parse_duration(text)
                .ok_or_else(|| call.invalid(format!("`since` {value} is not a duration")))?;
            Some(i64::try_from(duration.as_secs().max(1)).unwrap_or(i64::MAX))
        }
    };
    let previous = match call.params.get("previous") {
        None => true,
        Some(Value::Bool(b)) => *b,
        Some(other) => {
            return Err(call.invalid(format!("`previous` {other} is not true or false")));
        }
    };
    let container = match call.params.get("container") {
        None => None,
        Some(Value::String(name)) => Some(name.clone()),
        Some(other) => return Err(call.invalid(format!("`container` {other} is not a name"))),
    };
    Ok(Wanted {
        container,
        tail_lines: i64::try_from(tail_lines).unwrap_or(i64::MAX),
        since_seconds,
        previous,
        max_pods: usize::try_from(max_pods).unwrap_or(usize::MAX),
    })
}

/// The newest at most `cap` bytes of `text`, from a line start, and whether anything was cut.
fn newest(text: &str, cap: usize) -> (&str, bool) {
    if text.len() <= cap {
        return (text, false);
    }
    let mut start = text.len() - cap;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    let kept = &text[start..];
    // Drop the partial first line, unless the cut fell on a line start or that is all there is.
    let at_line_start = text[..start].ends_with('\n');
    let kept = match kept.find('\n') {
        Some(i) if !at_line_start && i + 1 < kept.len() => &kept[i + 1..],
        _ => kept,
    };
    (kept, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_bytes_are_kept_from_a_line_start() {
        assert_eq!(newest("a\nb\n", 10), ("a\nb\n", false));
        assert_eq!(newest("aaaa\nbb\ncc\n", 7), ("bb\ncc\n", true));
        assert_eq!(newest("aaa\nbb\ncc\n", 6), ("bb\ncc\n", true));
        assert_eq!(newest("héllo", 4), ("llo", true));
        assert_eq!(newest("abcdef", 3), ("def", true));
    }
}
