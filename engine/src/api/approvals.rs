//! `/api/v1/approvals`: the requests waiting above the risk ceiling, and a person's answer.
//!
//! An answer goes through [`Approvals::answer`] exactly as `salve approve` does, so the same
//! exclusive transaction decides which of two answers counts; the approver's name comes from
//! [`super::auth`], never from the request.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Json, Response};
use chrono::Utc;
use serde::{Deserialize, Serialize};

use super::auth::{self, Verb};
use super::{ApiState, blocking, error, journal_error};
use crate::approval::{self, Answer, Approval, Approvals};
use crate::journal::{self, Journal, Kind};

/// `GET /api/v1/approvals`'s answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApprovalList {
    /// The requests waiting, oldest first.
    pub approvals: Vec<Approval>,
}

/// The body of an answer (optional; empty means `{}`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnswerBody {
    /// Why (kept with a rejection; ignored for an approval).
    #[serde(default)]
    pub reason: String,
}

/// `GET /api/v1/approvals`.
pub(super) async fn list(State(state): State<ApiState>) -> Response {
    let approvals = Approvals::new(Arc::clone(&state.journal));
    match blocking(move || approvals.pending()).await {
        Ok(Ok(pending)) => Json(ApprovalList { approvals: pending }).into_response(),
        Ok(Err(e)) => approval_error(e),
        Err(response) => response,
    }
}

/// `POST /api/v1/approvals/{id}/approve`.
pub(super) async fn approve(
    state: State<ApiState>,
    id: Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    answer(state, id, headers, body, false).await
}

/// `POST /api/v1/approvals/{id}/reject`.
pub(super) async fn reject(
    state: State<ApiState>,
    id: Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    answer(state, id, headers, body, true).await
}

async fn answer(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
    reject: bool,
) -> Response {
    let namespace = {
        let (journal, id) = (Arc::clone(&state.journal), id.clone());
        match blocking(move || target_namespace(&journal, &id)).await {
            Ok(Ok(namespace)) => namespace,
            Ok(Err(e)) => return journal_error(&e),
            Err(response) => return response,
        }
    };
    let request = auth::Request {
        verb: if reject { Verb::Reject } else { Verb::Approve },
        namespace: namespace.as_deref(),
        id: &id,
    };
    let approver = match state.approvers.authorize(&headers, &request).await {
        Ok(approver) => approver,
        Err(refusal) => {
            tracing::warn!(approval = id, why = refusal.message(), "refused an answer");
            return refusal.into_response();
        }
    };
    let body: AnswerBody = match super::optional_json(&body, r#"{"reason": "..."}"#) {
        Ok(body) => body,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    let answer = if reject {
        Answer::Reject(body.reason)
    } else {
        Answer::Approve
    };
    let approvals = Approvals::new(Arc::clone(&state.journal));
    let by = approver.name.clone();
    let answered = blocking(move || approvals.answer(&id, answer, &by, Utc::now())).await;
    match answered {
        Ok(Ok(approval)) => {
            tracing::info!(
                approval = approval.id,
                incident = approval.incident,
                step = approval.step,
                by = approver.name,
                answer = if reject { "reject" } else { "approve" },
                "approval answered over the API"
            );
            Json(approval).into_response()
        }
        Ok(Err(e)) => approval_error(e),
        Err(response) => response,
    }
}

/// The namespace of approval `id`'s target, from the plan its request journaled: what RBAC
/// authorises an answer in. `None` for a cluster-scoped target, or an unknown id (the answer
/// then reports it, to a caller allowed cluster-wide).
fn target_namespace(journal: &Journal, id: &str) -> journal::Result<Option<String>> {
    let entries = journal.by_detail("approval", id)?;
    Ok(entries
        .iter()
        .find(|e| e.record.kind == Kind::ApprovalRequested)
        .and_then(|e| e.record.detail["plan"]["target"]["namespace"].as_str())
        .filter(|namespace| !namespace.is_empty())
        .map(str::to_owned))
}

fn approval_error(e: approval::Error) -> Response {
    match e {
        approval::Error::Unknown(_) => error(StatusCode::NOT_FOUND, e.to_string()),
        approval::Error::Decided { .. } => error(StatusCode::CONFLICT, e.to_string()),
        approval::Error::Journal(e) => journal_error(&e),
        approval::Error::Random(_) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}
