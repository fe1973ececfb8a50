//! `notify`: post the step's `message` to a webhook `url` — Slack's incoming-webhook format
//! (`{"text": ...}`) by default, or `format: json` for a JSON object that also names the
//! incident step and the target. The executor adds its account of the remediation (what
//! broke, why, what Salve wants to do next, what happens if nobody answers) as `summary`,
//! appended to the message. In a dry run the message is sent too, marked `[dry run]`:
//! telling people what Salve would do is the point of a dry run. A notification cannot be taken
//! back or deduplicated by the receiver, so a retry after a crash may send it twice.

use std::time::Duration;

use serde_json::{Value, json};

use super::{Call, Outcome, Result, describe};

/// How long the webhook gets to answer.
const TIMEOUT: Duration = Duration::from_secs(10);

pub(super) async fn run(call: &Call<'_>) -> Result<Outcome> {
    let text = |key: &str| call.params.get(key).and_then(Value::as_str);
    let url = text("url").ok_or_else(|| call.invalid("`url` is required".into()))?;
    let mut message = text("message")
        .map(str::to_string)
        .unwrap_or_else(|| format!("Salve: {} on {}", call.key, describe(call.target)));
    if call.dry_run {
        message = format!("[dry run] {message}");
    }
    // The executor's account of the remediation (what broke, why, what comes next).
    let summary = text("summary");
    if let Some(summary) = summary {
        message = format!("{message}\n{summary}");
    }
    let body = match text("format").unwrap_or("slack") {
        "slack" => json!({"text": message}),
        "json" => json!({
            "text": message,
            "step": call.key,
            "target": describe(call.target),
            "dryRun": call.dry_run,
            "summary": summary,
        }),
        other => {
            return Err(call.invalid(format!("`format` `{other}` is not `slack` or `json`")));
        }
    };
    let response = call
        .cluster
        .http
        .post(url)
        .timeout(TIMEOUT)
        .json(&body)
        .send()
        .await
        .map_err(|e| call.invalid(format!("cannot post to the webhook: {e}")))?;
    let status = response.status();
    if !status.is_success() {
        let answer = response.text().await.unwrap_or_default();
        return Err(call.invalid(format!(
            "the webhook answered {status}: {}",
            answer.chars().take(200).collect::<String>()
        )));
    }
    // The message is the record; the URL may hold a secret and is not journaled.
    Ok(Outcome {
        changed: true,
        dry_run: call.dry_run,
        message: "notified".into(),
        before: Value::Null,
        after: json!({"text": message}),
    })
}
