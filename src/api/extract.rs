//! Extractors whose rejections are our problem documents, not axum's plain text.

use std::borrow::Cow;

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{FromRef, FromRequest, FromRequestParts, Request};
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use axum::http::request::Parts;
use bytes::BytesMut;
use futures::StreamExt;
use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer};
use uuid::Uuid;

use crate::auth::Caller;
use crate::error::ApiError;
pub use crate::validate::json::parse_json;

/// A JSON body: `415` for another media type, `413` past the size limit, `400` naming the field
/// for malformed JSON, wrong types and unknown fields.
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T>
where
    super::AppState: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_json = req
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(|v| v.trim().to_ascii_lowercase())
            .is_some_and(|v| v == "application/json" || (v.starts_with("application/") && v.ends_with("+json")));
        if !is_json {
            return Err(ApiError::UnsupportedMediaType);
        }
        let limits = super::AppState::from_ref(state).limits.body;
        let declared = req.headers().get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|length| length > limits.max_bytes as u64) {
            return Err(ApiError::PayloadTooLarge(limits.max_bytes));
        }
        let read = read_body(req.into_body(), limits.max_bytes);
        let bytes = tokio::time::timeout(limits.read_timeout, read)
            .await
            .map_err(|_| ApiError::RequestTimeout(limits.read_timeout.as_secs()))??;
        parse_json(&bytes).map(Self)
    }
}

/// What a request body may be: how large, and how long it may take to arrive.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    pub max_bytes: usize,
    pub read_timeout: Duration,
}

/// The body in one buffer. Each chunk is copied out as it arrives: a chunk is a slice of the connection's
/// read buffer and would otherwise keep all of it alive, so a body sent a byte at a time would cost a buffer
/// per byte.
pub(crate) async fn read_body(body: Body, limit: usize) -> Result<Bytes, ApiError> {
    let mut chunks = body.into_data_stream();
    let mut buffer = BytesMut::new();
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.map_err(|e| ApiError::Malformed { field: None, detail: format!("reading the body: {e}") })?;
        if buffer.len() + chunk.len() > limit {
            return Err(ApiError::PayloadTooLarge(limit));
        }
        buffer.extend_from_slice(&chunk);
    }
    Ok(buffer.freeze())
}

/// Query parameters deserialised into `T`, which also documents them (`utoipa::IntoParams`): a repeated key
/// fills a list, and a parameter that does not parse is a `422` naming it.
pub struct Query<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let pairs = form_urlencoded::parse(parts.uri.query().unwrap_or("").as_bytes());
        serde_path_to_error::deserialize(serde_html_form::Deserializer::new(pairs)).map(Self).map_err(|err| {
            // The parameter's name, without the index of a repeated one.
            let field = match err.path().iter().next() {
                Some(serde_path_to_error::Segment::Map { key }) => key.clone(),
                _ => err.path().to_string(),
            };
            let message = err.into_inner().to_string();
            // serde_html_form's word for a single-valued parameter given twice.
            let detail = if message == "unsupported value" { "is given more than once".to_string() } else { message };
            ApiError::invalid(field, detail)
        })
    }
}

/// `?flag`, `?flag=`, `true` and `1` are true; `false` and `0` are false; in any case (`True`, as Python's
/// clients write a boolean).
pub fn flag<'de, D: Deserializer<'de>>(deserializer: D) -> Result<bool, D::Error> {
    let raw = Cow::<str>::deserialize(deserializer)?;
    match raw.to_ascii_lowercase().as_str() {
        "" | "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(D::Error::custom(format!("{raw:?} is not a boolean (true or false)"))),
    }
}

/// A non-negative whole number.
pub fn whole_number<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<usize>, D::Error> {
    let raw = Cow::<str>::deserialize(deserializer)?;
    raw.parse().map(Some).map_err(|_| D::Error::custom(format!("{raw:?} is not a whole number")))
}

/// The client's address, put into each request by the server (absent when a test calls the router directly).
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub std::net::SocketAddr);

/// Who submits: the caller's user name; for an anonymous caller (`--auth none`), the client's IP address.
pub fn creator(caller: &Caller, peer: Option<&PeerAddr>) -> String {
    if !caller.is_anonymous() {
        return caller.user.clone();
    }
    peer.map_or_else(|| "unknown".to_string(), |PeerAddr(addr)| addr.ip().to_string())
}

/// The caller, authenticated from the request's bearer token (`401` without a valid one).
impl FromRequestParts<super::AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &super::AppState) -> Result<Self, Self::Rejection> {
        state.auth.authenticate(&parts.headers).await
    }
}

/// An evaluation id from the path; anything that is not a UUID names no evaluation (404).
pub fn evaluation_id(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| ApiError::NotFound(raw.chars().take(64).collect()))
}
