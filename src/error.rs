//! The one error type of the API, rendered as RFC 9457 `application/problem+json`.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

pub const PROBLEM_JSON: &str = "application/problem+json";

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The body is not JSON, or not JSON of the right shape.
    #[error("{detail}")]
    Malformed { field: Option<String>, detail: String },
    /// Well-formed, but a value is not acceptable.
    #[error("{field}: {detail}")]
    Invalid { field: String, detail: String },
    /// The server's policy does not permit what was asked.
    #[error("{field}: {detail}")]
    Forbidden { field: String, detail: String },
    /// No credentials, or credentials that are not valid.
    #[error("{0}")]
    Unauthenticated(String),
    /// The caller may not do this (RBAC), or may not use an object the request names (`field`).
    #[error("{detail}")]
    Denied { field: Option<String>, detail: String },
    #[error("evaluation {0} not found")]
    NotFound(String),
    /// Something a request names inside an evaluation is not there (`field` names what).
    #[error("{detail}")]
    Missing { field: String, detail: String },
    /// A `Range` that the artifact's `0` bytes do not satisfy.
    #[error("the requested range is not within the artifact's {0} bytes")]
    RangeNotSatisfiable(u64),
    #[error("namespace {0} is not served here; the server serves the namespaces it is configured for")]
    NamespaceNotServed(String),
    #[error("no such route")]
    NoRoute,
    #[error("this route does not take that method")]
    MethodNotAllowed,
    #[error("{0}")]
    Conflict(String),
    #[error("request body exceeds the limit of {0} bytes")]
    PayloadTooLarge(usize),
    #[error("expected Content-Type application/json")]
    UnsupportedMediaType,
    #[error("the request did not arrive within {0} seconds")]
    RequestTimeout(u64),
    /// A limit on what one creator, or everyone, may have pending: retry later.
    #[error("{detail}")]
    TooManyRequests { detail: String, retry_after_seconds: u32 },
    #[error("{detail}")]
    Unavailable { detail: String, retry_after_seconds: u32 },
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    pub fn invalid(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::Invalid { field: field.into(), detail: detail.into() }
    }

    pub fn forbidden(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::Forbidden { field: field.into(), detail: detail.into() }
    }

    pub fn internal(err: impl std::fmt::Display) -> Self {
        Self::Internal(err.to_string())
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::Malformed { .. } => StatusCode::BAD_REQUEST,
            Self::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden { .. } | Self::Denied { .. } => StatusCode::FORBIDDEN,
            Self::NotFound(_) | Self::Missing { .. } | Self::NamespaceNotServed(_) | Self::NoRoute => {
                StatusCode::NOT_FOUND
            }
            Self::RangeNotSatisfiable(_) => StatusCode::RANGE_NOT_SATISFIABLE,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            Self::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn slug(&self) -> &'static str {
        match self {
            Self::Malformed { .. } => "malformed-request",
            Self::Invalid { .. } => "invalid-field",
            Self::Forbidden { .. } => "forbidden-by-policy",
            Self::Unauthenticated(_) => "unauthenticated",
            Self::Denied { .. } => "forbidden",
            Self::NotFound(_) | Self::NoRoute | Self::Missing { .. } => "not-found",
            Self::RangeNotSatisfiable(_) => "range-not-satisfiable",
            Self::NamespaceNotServed(_) => "namespace-not-served",
            Self::MethodNotAllowed => "method-not-allowed",
            Self::Conflict(_) => "conflict",
            Self::PayloadTooLarge(_) => "payload-too-large",
            Self::UnsupportedMediaType => "unsupported-media-type",
            Self::RequestTimeout(_) => "request-timeout",
            Self::TooManyRequests { .. } => "too-many-requests",
            Self::Unavailable { .. } => "unavailable",
            Self::Internal(_) => "internal",
        }
    }

    pub fn field(&self) -> Option<&str> {
        match self {
            Self::Malformed { field, .. } | Self::Denied { field, .. } => field.as_deref(),
            Self::Invalid { field, .. } | Self::Forbidden { field, .. } | Self::Missing { field, .. } => Some(field),
            _ => None,
        }
    }

    pub fn problem(&self) -> Problem {
        let status = self.status();
        let detail = match self {
            // The client sees a stable message; the cause is logged where it is handled.
            Self::Internal(_) => "internal error; see the service log".to_string(),
            other => other.to_string(),
        };
        Problem {
            r#type: format!("urn:lm-eval-aas:problem:{}", self.slug()),
            title: status.canonical_reason().unwrap_or("Error").to_string(),
            status: status.as_u16(),
            detail,
            field: self.field().map(str::to_string),
        }
    }
}

/// An RFC 9457 problem document.
#[derive(Debug, Clone, Serialize, serde::Deserialize, ToSchema)]
pub struct Problem {
    /// A URI naming the kind of problem.
    #[schema(example = "urn:lm-eval-aas:problem:invalid-field")]
    pub r#type: String,
    pub title: String,
    pub status: u16,
    /// What went wrong, naming the offending field.
    pub detail: String,
    /// The request field at fault (dotted path), when one is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// The problem document of a response the HTTP layer sends before any route sees the request: not valid
/// HTTP, a target or headers too large, headers that stalled.
pub fn http_layer_problem(status: StatusCode) -> Problem {
    let (slug, detail) = match status {
        StatusCode::REQUEST_TIMEOUT => ("request-timeout", "the request's headers did not arrive in time"),
        StatusCode::URI_TOO_LONG => ("uri-too-long", "the request target is longer than the server accepts"),
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => {
            ("header-fields-too-large", "the request's headers are larger than the server accepts")
        }
        StatusCode::SERVICE_UNAVAILABLE => {
            ("unavailable", "the server has as many connections as it serves; retry later")
        }
        _ => ("malformed-request", "the request is not valid HTTP/1.1"),
    };
    Problem {
        r#type: format!("urn:lm-eval-aas:problem:{slug}"),
        title: status.canonical_reason().unwrap_or("Error").to_string(),
        status: status.as_u16(),
        detail: detail.to_string(),
        field: None,
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let Self::Internal(cause) = &self {
            tracing::error!(error = %cause, "internal error");
        }
        let status = self.status();
        let body = serde_json::to_vec(&self.problem()).unwrap_or_default();
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if let Self::Unavailable { retry_after_seconds, .. } | Self::TooManyRequests { retry_after_seconds, .. } = self
        {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(retry_after_seconds));
        }
        if let Self::RangeNotSatisfiable(size) = self
            && let Ok(value) = HeaderValue::from_str(&format!("bytes */{size}"))
        {
            headers.insert(header::CONTENT_RANGE, value);
        }
        if let Self::Unauthenticated(_) = self {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"lm-eval-aas\""));
        }
        response
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
