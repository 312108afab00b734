//! Errors in OpenAI's shape: every failure a client sees is `{"error": {"message", "type",
//! "param", "code"}}` with the status OpenAI's API uses for it (400 bad request, 401 API key,
//! 404 unknown model or path, 413 body too large, 429 too many requests in flight, 502 a
//! private session failed, 503 the cluster is unavailable).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use thiserror::Error;

/// What went wrong with a request, as the client is told.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum ApiError {
    /// The request is malformed or asks for something unsupported.
    #[error("{message}")]
    BadRequest {
        /// what is wrong, naming the parameter
        message: String,
        /// the parameter at fault, when one is
        param: Option<String>,
        /// a machine-readable code (e.g. `context_length_exceeded`, `unsupported_parameter`)
        code: Option<&'static str>,
    },
    /// The request names a model this gateway does not serve.
    #[error("the model `{0}` does not exist")]
    ModelNotFound(String),
    /// No path of the API here.
    #[error("no route for {0}")]
    NoRoute(String),
    /// A missing or wrong API key.
    #[error("{0}")]
    Unauthorized(String),
    /// The body exceeds the gateway's limit.
    #[error("the request body exceeds the limit of {0} bytes")]
    TooLarge(usize),
    /// Every session slot is taken.
    #[error("too many requests in flight (at most {0}); retry later")]
    Busy(usize),
    /// No private session could start (the broker or the coordinator out of reach).
    #[error("the cluster is unavailable: {0}")]
    Unavailable(String),
    /// A private session failed in the 2PC (a step failed or timed out).
    #[error("the private session failed: {0}")]
    SessionFailed(String),
    /// A bug or an unexpected local failure.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    /// A 400 naming `param`.
    pub fn invalid(param: &str, message: impl Into<String>) -> Self {
        Self::BadRequest {
            message: message.into(),
            param: Some(param.to_string()),
            code: None,
        }
    }

    /// A 400 without a parameter to name.
    pub fn bad(message: impl Into<String>) -> Self {
        Self::BadRequest {
            message: message.into(),
            param: None,
            code: None,
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest { .. } => StatusCode::BAD_REQUEST,
            Self::ModelNotFound(_) | Self::NoRoute(_) => StatusCode::NOT_FOUND,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Busy(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::SessionFailed(_) => StatusCode::BAD_GATEWAY,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// OpenAI's `type` of the error.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::BadRequest { .. }
            | Self::ModelNotFound(_)
            | Self::NoRoute(_)
            | Self::TooLarge(_) => "invalid_request_error",
            Self::Unauthorized(_) => "authentication_error",
            Self::Busy(_) => "rate_limit_error",
            Self::Unavailable(_) | Self::SessionFailed(_) | Self::Internal(_) => "server_error",
        }
    }

    /// The `code` of the error.
    pub fn code(&self) -> Option<&'static str> {
        match self {
            Self::BadRequest { code, .. } => *code,
            Self::ModelNotFound(_) => Some("model_not_found"),
            Self::NoRoute(_) => Some("unknown_url"),
            Self::Unauthorized(_) => Some("invalid_api_key"),
            Self::TooLarge(_) => Some("request_too_large"),
            Self::Busy(_) => Some("too_many_requests"),
            Self::Unavailable(_) => Some("cluster_unavailable"),
            Self::SessionFailed(_) => Some("session_failed"),
            Self::Internal(_) => Some("internal_error"),
        }
    }

    /// The `param` of the error.
    pub fn param(&self) -> Option<&str> {
        match self {
            Self::BadRequest { param, .. } => param.as_deref(),
            Self::ModelNotFound(_) => Some("model"),
            _ => None,
        }
    }

    /// The `outcome` label of `marill_gateway_requests_total` for this error.
    pub fn outcome(&self) -> &'static str {
        match self {
            Self::BadRequest { .. } | Self::TooLarge(_) => "bad_request",
            Self::ModelNotFound(_) | Self::NoRoute(_) => "not_found",
            Self::Unauthorized(_) => "unauthorized",
            Self::Busy(_) => "busy",
            Self::Unavailable(_) => "unavailable",
            Self::SessionFailed(_) | Self::Internal(_) => "failed",
        }
    }

    /// The body: `{"error": {"message", "type", "param", "code"}}`.
    pub fn body(&self) -> serde_json::Value {
        json!({
            "error": {
                "message": self.to_string(),
                "type": self.kind(),
                "param": self.param(),
                "code": self.code(),
            }
        })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status(), axum::Json(self.body())).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_has_openais_shape() {
        for (e, status) in [
            (ApiError::invalid("n", "n > 1 is not supported"), 400),
            (ApiError::ModelNotFound("gpt-4".into()), 404),
            (ApiError::NoRoute("/v2".into()), 404),
            (ApiError::Unauthorized("no key".into()), 401),
            (ApiError::TooLarge(10), 413),
            (ApiError::Busy(2), 429),
            (ApiError::Unavailable("broker".into()), 503),
            (ApiError::SessionFailed("step".into()), 502),
            (ApiError::Internal("x".into()), 500),
        ] {
            assert_eq!(e.status().as_u16(), status, "{e:?}");
            let b = e.body();
            let err = b.get("error").expect("error object");
            for k in ["message", "type", "param", "code"] {
                assert!(err.get(k).is_some(), "{e:?} lacks {k}");
            }
            assert!(err["message"].as_str().is_some_and(|m| !m.is_empty()));
            assert!(err["type"].is_string());
        }
        let b = ApiError::ModelNotFound("gpt-4".into()).body();
        assert_eq!(b["error"]["code"], "model_not_found");
        assert_eq!(b["error"]["type"], "invalid_request_error");
        assert!(b["error"]["message"].as_str().unwrap().contains("gpt-4"));
    }
}
