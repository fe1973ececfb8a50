//! `POST /api/v1/playbooks/{name}/trigger`: rehearse a playbook on demand, as if its trigger had
//! fired with the labels given — the real diagnosis, plan and gate verdicts, every step a
//! server-side dry run ([`crate::executor::Executor::rehearse`]). It answers `202 Accepted`
//! with the rehearsal's incident id at once; the rehearsal's timeline is then read like any
//! incident's. Asking for one is authorized like an answer to an approval (verb `trigger`).

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use serde::{Deserialize, Serialize};

use super::auth::{self, Verb};
use super::{ApiState, error, journal_error};

/// The request's body: the labels of the signal to rehearse with.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TriggerBody {
    /// The signal's labels (its target's templates read them: `${labels.namespace}`).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// The answer to a trigger: the rehearsal started.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Triggered {
    /// The rehearsal's incident id (`reh-...`).
    pub incident: String,
    /// Always true: a trigger only ever rehearses.
    pub rehearsal: bool,
    /// Where its timeline is read (`/api/v1/incidents/{id}`).
    pub timeline: String,
}

/// Starts a rehearsal of playbook `name`.
pub(super) async fn trigger(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(executor) = state.executor.clone() else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "this Salve runs no remediations (it was started without a Kubernetes client)",
        );
    };
    let Some(active) = state.playbooks.active() else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the playbook set is not loaded yet",
        );
    };
    let body: TriggerBody =
        match super::optional_json(&body, r#"{"labels": {"name": "value", ...}}"#) {
            Ok(body) => body,
            Err(message) => return error(StatusCode::BAD_REQUEST, message),
        };
    let playbook = active.load().playbook(&name).cloned();
    // Who may rehearse is asked before whether the playbook exists, so that a caller without
    // the right learns nothing of the set.
    let target = playbook
        .as_ref()
        .and_then(|p| crate::incident::render_target(&p.target, &body.labels));
    let request = auth::Request {
        verb: Verb::Trigger,
        namespace: target.as_ref().and_then(|t| t.namespace.as_deref()),
        id: &name,
    };
    let who = match state.approvers.authorize(&headers, &request).await {
        Ok(who) => who,
        Err(refusal) => {
            tracing::warn!(
                playbook = name,
                why = refusal.message(),
                "refused a trigger"
            );
            return refusal.into_response();
        }
    };
    let Some(playbook) = playbook else {
        return error(
            StatusCode::NOT_FOUND,
            format!("no playbook `{name}` in the active set"),
        );
    };
    if target.is_none() {
        let t = &playbook.target;
        let wanted = match &t.namespace {
            Some(ns) => format!("{} {}/{}", t.kind, ns.source(), t.name.source()),
            None => format!("{} {}", t.kind, t.name.source()),
        };
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!(
                "the labels given do not name the target of `{name}`, {wanted}: give the labels \
                 its templates read"
            ),
        );
    }
    match executor.rehearse(playbook, body.labels, &who.name) {
        Ok((id, _running)) => {
            tracing::info!(
                playbook = name,
                incident = id,
                by = who.name,
                "rehearsal started"
            );
            let location = format!("/api/v1/incidents/{id}");
            let answer = Triggered {
                incident: id,
                rehearsal: true,
                timeline: location.clone(),
            };
            let mut response = (StatusCode::ACCEPTED, Json(answer)).into_response();
            if let Ok(value) = location.parse() {
                response.headers_mut().insert(header::LOCATION, value);
            }
            response
        }
        Err(crate::executor::Error::Journal(e)) => journal_error(&e),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}
