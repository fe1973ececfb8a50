//! The HTTP endpoint Alertmanager's webhook posts to.

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::post;
use chrono::Utc;

use super::relay::{RELAYED, Relay, Relayed};
use super::store::AlertStore;
use super::webhook::Webhook;

/// Where Alertmanager posts: `webhook_configs: [{url: http://salve:PORT/api/v1/alerts/alertmanager}]`.
pub const WEBHOOK_PATH: &str = "/api/v1/alerts/alertmanager";

/// The largest body accepted (1 MiB); a larger one gets 413. A notification of one group with
/// a few thousand alerts could exceed it: set the webhook's `max_alerts` for such groups.
pub const MAX_BODY: usize = 1 << 20;

/// The webhook receiver: `POST` [`WEBHOOK_PATH`] applies each payload to `store`.
///
/// Answers 200 with `{"accepted": N, "stale": N}` for a payload it applied; 400 with
/// `{"error": "..."}` (saying what is wrong and where) for a body that is not a version-4
/// webhook payload; 413 for a body over [`MAX_BODY`]; 405 for another method. Alertmanager
/// retries only on 5xx, so a refused payload is not sent again.
pub fn routes(store: AlertStore) -> Router {
    relaying(store, None)
}

/// [`routes`] that, under leader election, relay each payload to the leader when this replica
/// does not lead ([`Relay`]): 503 when that fails (Alertmanager retries), with the payload
/// applied here all the same.
pub fn relaying(store: AlertStore, relay: Option<Relay>) -> Router {
    Router::new()
        .route(WEBHOOK_PATH, post(receive))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(Receiver { store, relay })
}

/// What the webhook's handler holds.
#[derive(Debug, Clone)]
struct Receiver {
    store: AlertStore,
    relay: Option<Relay>,
}

/// [`routes`] that answer only requests carrying `Authorization: Bearer <token>`: anyone who
/// can post alerts can make Salve act (within the risk ceiling), so outside a trusted network
/// give Alertmanager a token (`http_config: {authorization: {credentials_file: ...}}`).
/// Others get 401.
pub fn routes_with_token(store: AlertStore, token: String) -> Router {
    with_token(routes(store), token)
}

/// `webhook` (as [`routes`] or [`relaying`] make it) answering only requests with `token`, as
/// [`routes_with_token`] does.
pub fn with_token(webhook: Router, token: String) -> Router {
    let expected = std::sync::Arc::new(format!("Bearer {token}"));
    webhook.layer(axum::middleware::from_fn(
        move |request: axum::extract::Request, next: axum::middleware::Next| {
            let expected = std::sync::Arc::clone(&expected);
            async move {
                let given = request
                    .headers()
                    .get(axum::http::header::AUTHORIZATION)
                    .map(|v| v.as_bytes())
                    .unwrap_or_default();
                if constant_time_eq(given, expected.as_bytes()) {
                    next.run(request).await
                } else {
                    tracing::warn!(
                        "refused an alertmanager webhook without the right bearer token"
                    );
                    refuse(
                        StatusCode::UNAUTHORIZED,
                        "a bearer token is required (Authorization: Bearer ...)".into(),
                    )
                }
            }
        },
    ))
}

/// Compares without returning early, so the time taken does not tell how much of a guess was
/// right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

async fn receive(
    State(Receiver { store, relay }): State<Receiver>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match body {
        Ok(body) => body,
        Err(rejection) => {
            tracing::warn!(error = %rejection.body_text(), "refused an alertmanager webhook");
            return refuse(rejection.status(), rejection.body_text());
        }
    };
    match Webhook::parse(&body) {
        Ok(payload) => {
            let applied = store.apply(&payload, Utc::now());
            let mut answer =
                serde_json::json!({"accepted": applied.accepted, "stale": applied.stale});
            // Relayed once at most: a replica that took the lead meanwhile keeps it.
            if let Some(relay) = relay.filter(|_| !headers.contains_key(RELAYED)) {
                match relay
                    .relay(body, headers.get(axum::http::header::AUTHORIZATION))
                    .await
                {
                    Ok(Relayed::Leading) => {}
                    Ok(Relayed::To { holder }) => answer["relayedTo"] = holder.into(),
                    Err(why) => {
                        tracing::warn!(
                            why,
                            "an alertmanager webhook reached a replica that does not lead, \
                             and could not be relayed to the leader; Alertmanager retries"
                        );
                        return refuse(
                            StatusCode::SERVICE_UNAVAILABLE,
                            format!("this replica does not lead, and {why}"),
                        );
                    }
                }
            }
            (StatusCode::OK, Json(answer)).into_response()
        }
        Err(error) => {
            let message = crate::diagnostic::chain(&error);
            tracing::warn!(
                error = message,
                bytes = body.len(),
                "refused an alertmanager webhook"
            );
            refuse(StatusCode::BAD_REQUEST, message)
        }
    }
}

fn refuse(status: StatusCode, message: String) -> Response {
    (status, Json(serde_json::json!({ "error": message }))).into_response()
}
