//! Errors as the real API server sends them: a `Status` object with a reason and an HTTP code,
//! so that callers see `kube::Error::Api` exactly as they would against a cluster.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// A failed request, answered as a Kubernetes `Status` object.
#[derive(Debug, Clone)]
pub(crate) struct ApiError {
    /// The HTTP status code, repeated in the Status object's `code`.
    pub(crate) code: StatusCode,
    /// The machine-readable reason (`NotFound`, `AlreadyExists`, `Conflict`, ...).
    pub(crate) reason: &'static str,
    /// The human-readable message, worded like the real server's.
    pub(crate) message: String,
    /// The Status object's `details` (causes, `retryAfterSeconds`), if any.
    pub(crate) details: Option<Value>,
}

impl ApiError {
    /// 404: the object (`{resource} "{name}" not found`) or the resource does not exist.
    pub(crate) fn not_found(message: String) -> Self {
        Self {
            code: StatusCode::NOT_FOUND,
            reason: "NotFound",
            message,
            details: None,
        }
    }

    /// 409 AlreadyExists on create.
    pub(crate) fn already_exists(resource: &str, name: &str) -> Self {
        Self {
            code: StatusCode::CONFLICT,
            reason: "AlreadyExists",
            message: format!("{resource} \"{name}\" already exists"),
            details: None,
        }
    }

    /// 409 Conflict: a stale `resourceVersion` (or uid) precondition.
    pub(crate) fn conflict(resource: &str, name: &str) -> Self {
        Self {
            code: StatusCode::CONFLICT,
            reason: "Conflict",
            message: format!(
                "Operation cannot be fulfilled on {resource} \"{name}\": the object has been \
                 modified; please apply your changes to the latest version and try again"
            ),
            details: None,
        }
    }

    /// 422 Invalid: the object fails validation.
    pub(crate) fn invalid(resource: &str, name: &str, why: impl std::fmt::Display) -> Self {
        Self {
            code: StatusCode::UNPROCESSABLE_ENTITY,
            reason: "Invalid",
            message: format!("{resource} \"{name}\" is invalid: {why}"),
            details: None,
        }
    }

    /// 422 Invalid: a JSON patch that cannot be applied (a failed `test`, a missing path).
    pub(crate) fn invalid_patch(message: String) -> Self {
        Self {
            code: StatusCode::UNPROCESSABLE_ENTITY,
            reason: "Invalid",
            message,
            details: None,
        }
    }

    /// 400 BadRequest: a malformed body, query or patch.
    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self {
            code: StatusCode::BAD_REQUEST,
            reason: "BadRequest",
            message: message.into(),
            details: None,
        }
    }

    /// 405 MethodNotAllowed.
    pub(crate) fn method_not_allowed(message: impl Into<String>) -> Self {
        Self {
            code: StatusCode::METHOD_NOT_ALLOWED,
            reason: "MethodNotAllowed",
            message: message.into(),
            details: None,
        }
    }

    /// 415 UnsupportedMediaType: a patch type the fake does not implement (server-side apply).
    pub(crate) fn unsupported_media_type(content_type: &str) -> Self {
        Self {
            code: StatusCode::UNSUPPORTED_MEDIA_TYPE,
            reason: "UnsupportedMediaType",
            message: format!("the body of the request was in an unknown format: {content_type}"),
            details: None,
        }
    }

    /// 410 Expired: a watch asked for a `resourceVersion` older than the kept history.
    pub(crate) fn expired(rv: u64) -> Self {
        Self {
            code: StatusCode::GONE,
            reason: "Expired",
            message: format!("too old resource version: {rv}"),
            details: None,
        }
    }

    /// 429 TooManyRequests: an eviction a PodDisruptionBudget does not allow now; `cause`
    /// says which budget and why, and the client may retry after 10 seconds, as from the real
    /// server.
    pub(crate) fn disruption_budget(cause: String) -> Self {
        Self {
            code: StatusCode::TOO_MANY_REQUESTS,
            reason: "TooManyRequests",
            message: "Cannot evict pod as it would violate the pod's disruption budget.".into(),
            details: Some(json!({
                "causes": [{"reason": "DisruptionBudget", "message": cause}],
                "retryAfterSeconds": 10,
            })),
        }
    }

    /// 500 InternalError: a state the real server refuses to handle (a pod under two
    /// disruption budgets).
    pub(crate) fn internal(message: impl Into<String>) -> Self {
        Self {
            code: StatusCode::INTERNAL_SERVER_ERROR,
            reason: "InternalError",
            message: message.into(),
            details: None,
        }
    }

    /// The `Status` object for this error.
    pub(crate) fn to_status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code.as_u16(),
        });
        if let Some(details) = &self.details {
            status["details"] = details.clone();
        }
        status
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.code, axum::Json(self.to_status())).into_response();
        // As the real server: `details.retryAfterSeconds` is also the `Retry-After` header.
        let retry_after = self
            .details
            .as_ref()
            .and_then(|d| d["retryAfterSeconds"].as_u64());
        if let Some(seconds) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}
