//! Salve's HTTP API: one listener for health, metrics, Alertmanager's webhook and `/api/v1/`.
//!
//! | Path | What |
//! |---|---|
//! | `GET /healthz` | 200 while the process runs |
//! | `GET /readyz` | 200 once the playbook set is loaded and the journal answers; 503 otherwise |
//! | `GET /metrics` | Salve's metrics, OpenMetrics text |
//! | `POST /api/v1/alerts/alertmanager` | Alertmanager's webhook ([`crate::alertmanager`]) |
//! | `GET /api/v1/incidents[/{id}]` | the journal's incidents; one with its timeline ([`incidents`]) |
//! | `GET /api/v1/approvals` | the approval requests waiting ([`approvals`]) |
//! | `POST /api/v1/approvals/{id}/approve\|reject` | an answer, authenticated ([`auth`]) |
//! | `GET /api/v1/playbooks` | the active set and the last reload ([`playbooks`]) |
//! | `POST /api/v1/playbooks/{name}/trigger` | a rehearsal, every step a dry run, authenticated ([`trigger`]) |
//!
//! Every error is `{"error": "..."}` with its status, unknown paths included. Nothing here can
//! change the policy or raise the risk ceiling: the writes are an answer to a request the gate
//! raised, and a rehearsal, which changes nothing in the cluster.

pub mod approvals;
pub mod auth;
pub mod client;
pub mod incidents;
pub mod playbooks;
pub mod trigger;

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, post};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::alertmanager::AlertStore;
use crate::journal::Journal;
use crate::metrics::Metrics;

pub use auth::{Approver, Approvers, Refusal, Tokens};
pub use playbooks::{LastReload, PlaybookStatus};

/// The content type of `/metrics`.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Why the API could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A token file cannot be used.
    #[error("cannot use {path} as the API's token file: {reason}")]
    TokenFile {
        /// The file.
        path: std::path::PathBuf,
        /// Why (the line, when one is wrong).
        reason: String,
    },
}

/// `Result` with this module's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What the API reads and who may answer approvals. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ApiState {
    journal: Arc<Journal>,
    playbooks: PlaybookStatus,
    metrics: Metrics,
    approvers: Arc<Approvers>,
    /// Runs the rehearsals `trigger` asks for (none: the endpoint answers 503).
    executor: Option<crate::executor::Executor>,
}

impl ApiState {
    /// The API over `journal`, the playbook set `playbooks` reports, `metrics`, with approvals
    /// answered by `approvers`.
    pub fn new(
        journal: Arc<Journal>,
        playbooks: PlaybookStatus,
        metrics: Metrics,
        approvers: Approvers,
    ) -> Self {
        ApiState {
            journal,
            playbooks,
            metrics,
            approvers: Arc::new(approvers),
            executor: None,
        }
    }

    /// The same API, rehearsing playbooks through `executor` on `POST .../trigger`.
    pub fn rehearsing(mut self, executor: crate::executor::Executor) -> Self {
        self.executor = Some(executor);
        self
    }
}

/// Alertmanager's webhook, served beside the API.
#[derive(Debug, Clone)]
pub struct Webhook {
    /// Where the alerts go.
    pub store: AlertStore,
    /// The bearer token it requires, if any.
    pub token: Option<String>,
    /// Under leader election, how a follower hands each payload to the leader.
    pub relay: Option<crate::alertmanager::relay::Relay>,
}

/// Every route: health, metrics, `/api/v1/`, the webhook when given, and a JSON 404 for the
/// rest.
pub fn router(state: ApiState, webhook: Option<Webhook>) -> Router {
    let api = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/api/v1/incidents", get(incidents::list))
        .route("/api/v1/incidents/{id}", get(incidents::one))
        .route("/api/v1/approvals", get(approvals::list))
        .route("/api/v1/approvals/{id}/approve", post(approvals::approve))
        .route("/api/v1/approvals/{id}/reject", post(approvals::reject))
        .route("/api/v1/playbooks", get(playbooks::list))
        .route("/api/v1/playbooks/{name}/trigger", post(trigger::trigger))
        .with_state(state);
    let api = match webhook {
        Some(Webhook {
            store,
            token,
            relay,
        }) => {
            let routes = crate::alertmanager::relaying(store, relay);
            api.merge(match token {
                Some(token) => crate::alertmanager::with_token(routes, token),
                None => {
                    tracing::warn!(
                        "the webhook takes alerts from anyone who can reach it; \
                         set --webhook-token-file outside a trusted network"
                    );
                    routes
                }
            })
        }
        None => api,
    };
    api.fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
}

/// Serves `router` on `listener` until `cancel`.
pub fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    cancel: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let shutdown = async move { cancel.cancelled().await };
        if let Err(error) = axum::serve(listener, router)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::error!(%error, "the API listener stopped");
        }
    })
}

/// A request body that may be empty (then `T`'s default) or JSON of `T`; otherwise what is
/// wrong with it, saying the expected `shape` (for a 400).
pub(crate) fn optional_json<T: serde::de::DeserializeOwned + Default>(
    body: &[u8],
    shape: &str,
) -> std::result::Result<T, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| format!("the body is not {shape}: {e}"))
}

pub(crate) fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

/// Runs `work` (journal reads and writes block) off the async workers; a panic is a 500.
pub(crate) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Response> {
    tokio::task::spawn_blocking(work).await.map_err(|e| {
        tracing::error!(error = %e, "an API handler failed");
        error(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
    })
}

/// A journal failure as a 500, logged.
pub(crate) fn journal_error(e: &crate::journal::Error) -> Response {
    let message = crate::diagnostic::chain(e);
    if let crate::journal::Error::Mirror { .. } = e {
        // Nothing was recorded: the cluster refused it (another replica's answer counts) or
        // could not be reached.
        tracing::warn!(error = message, "not kept in the cluster");
        return error(StatusCode::SERVICE_UNAVAILABLE, message);
    }
    tracing::error!(error = message, "the API cannot read the journal");
    error(StatusCode::INTERNAL_SERVER_ERROR, message)
}

async fn healthz() -> Response {
    Json(json!({"status": "ok"})).into_response()
}

async fn readyz(State(state): State<ApiState>) -> Response {
    let Some(set) = state.playbooks.active() else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: the playbook set is not loaded yet",
        );
    };
    let journal = Arc::clone(&state.journal);
    match blocking(move || journal.last_seq()).await {
        Ok(Ok(_)) => {
            let set = set.load();
            Json(json!({
                "status": "ready",
                "playbooks": set.playbooks().len(),
                "generation": set.generation(),
            }))
            .into_response()
        }
        Ok(Err(e)) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "not ready: the journal cannot be read: {}",
                crate::diagnostic::chain(&e)
            ),
        ),
        Err(response) => response,
    }
}

async fn metrics(State(state): State<ApiState>) -> Response {
    (
        [(header::CONTENT_TYPE, OPENMETRICS)],
        state.metrics.encode(),
    )
        .into_response()
}

async fn not_found(uri: axum::http::Uri) -> Response {
    error(
        StatusCode::NOT_FOUND,
        format!("no such path: {}", uri.path()),
    )
}

async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> Response {
    error(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{method} is not allowed on {}", uri.path()),
    )
}
