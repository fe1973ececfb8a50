//! The `pods/{name}/log` subresource: container logs seeded by the test
//! ([`super::FakeApiServer::set_logs`]), answered as `text/plain` with the real server's
//! checks (the container must be named when the pod has several; it must be one of the pod's).
//!
//! `tailLines` and `limitBytes` are applied; `sinceSeconds`, `sinceTime`, `timestamps` and
//! `follow` are accepted and ignored (the seeded text has no times, and the answer never
//! streams).

use std::collections::HashMap;

use super::status::ApiError;
use super::store::{ObjectKey, Store};

/// Where seeded log text belongs: (namespace, pod, container, previous instance).
pub(crate) type LogKey = (String, String, String, bool);

/// The text the real server would send for `GET .../pods/{name}/log` with `query`.
pub(crate) fn read(
    store: &Store,
    namespace: &str,
    name: &str,
    query: &HashMap<String, String>,
) -> Result<String, ApiError> {
    let key = ObjectKey::pod(namespace, name);
    let pod = store
        .objects
        .get(&key)
        .ok_or_else(|| ApiError::not_found(format!("pods \"{name}\" not found")))?;
    let containers: Vec<&str> = pod["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str())
        .collect();
    let init: Vec<&str> = pod["spec"]["initContainers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str())
        .collect();
    let container = match (query.get("container").map(String::as_str), &containers[..]) {
        (Some(c), _) if !c.is_empty() => {
            if !containers.contains(&c) && !init.contains(&c) {
                return Err(ApiError::bad_request(format!(
                    "container {c} is not valid for pod {name}"
                )));
            }
            c
        }
        (_, [only]) => only,
        (_, _) => {
            return Err(ApiError::bad_request(format!(
                "a container name must be specified for pod {name}, choose one of: [{}]",
                containers.join(" ")
            )));
        }
    };
    let previous = matches!(
        query.get("previous").map(String::as_str),
        Some("true" | "1")
    );
    let log_key = (
        namespace.to_owned(),
        name.to_owned(),
        container.to_owned(),
        previous,
    );
    let text = match store.logs.get(&log_key) {
        Some(text) => text.as_str(),
        None if previous => {
            return Err(ApiError::bad_request(format!(
                "previous terminated container \"{container}\" in pod \"{name}\" not found"
            )));
        }
        None => "",
    };
    let number = |param: &str| -> Result<Option<usize>, ApiError> {
        match query.get(param) {
            None => Ok(None),
            Some(v) => v
                .parse::<i64>()
                .ok()
                .and_then(|n| usize::try_from(n).ok())
                .map_or_else(
                    || {
                        Err(ApiError::invalid(
                            "pods",
                            name,
                            format!(
                                "{param}: Invalid value: {v:?}: must be greater than or equal to 0"
                            ),
                        ))
                    },
                    |n| Ok(Some(n)),
                ),
        }
    };
    let mut text = match number("tailLines")? {
        Some(tail) => tail_lines(text, tail),
        None => text,
    };
    if let Some(limit) = number("limitBytes")? {
        let mut end = limit.min(text.len());
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text = &text[..end];
    }
    Ok(text.to_owned())
}

/// The last `n` lines of `text` (a final newline ends the last line, it does not start one).
fn tail_lines(text: &str, n: usize) -> &str {
    if n == 0 {
        return "";
    }
    let body = text.strip_suffix('\n').unwrap_or(text);
    match body.rmatch_indices('\n').nth(n - 1) {
        Some((i, _)) => &text[i + 1..],
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_counts_lines_from_the_end() {
        assert_eq!(tail_lines("a\nb\nc\n", 2), "b\nc\n");
        assert_eq!(tail_lines("a\nb\nc", 2), "b\nc");
        assert_eq!(tail_lines("a\nb\n", 5), "a\nb\n");
        assert_eq!(tail_lines("a\n", 0), "");
        assert_eq!(tail_lines("", 3), "");
    }
}
