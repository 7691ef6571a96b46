//! Extractors whose rejections are our problem documents, not axum's plain text.

use std::borrow::Cow;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header::CONTENT_TYPE;
use axum::http::request::Parts;
use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer};
use uuid::Uuid;

use crate::error::ApiError;

/// A JSON body: `415` for another media type, `413` past the size limit, `400` naming the field
/// for malformed JSON, wrong types and unknown fields.
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
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
        let limit = req.extensions().get::<BodyLimit>().map_or(usize::MAX, |l| l.0);
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge(limit)
            } else {
                ApiError::Malformed { field: None, detail: rejection.body_text() }
            }
        })?;
        parse_json(&bytes).map(Self)
    }
}

/// The configured body limit, put into request extensions so rejections can name it.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimit(pub usize);

pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let deserializer = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(deserializer).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        let message = inner.to_string();
        // The path names the field (an unknown one included); a missing field is named only in the message.
        let field = (path != ".").then_some(path).or_else(|| {
            message
                .strip_prefix("missing field `")
                .and_then(|rest| rest.split_once('`'))
                .map(|(name, _)| name.to_string())
        });
        let detail = match &field {
            Some(field) if inner.is_data() => format!("{field}: {message}"),
            _ => format!("malformed JSON: {message}"),
        };
        ApiError::Malformed { field, detail }
    })
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

/// `?flag`, `?flag=`, `true` and `1` are true; `false` and `0` are false.
pub fn flag<'de, D: Deserializer<'de>>(deserializer: D) -> Result<bool, D::Error> {
    match &*Cow::<str>::deserialize(deserializer)? {
        "" | "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        other => Err(D::Error::custom(format!("{other:?} is not a boolean (true or false)"))),
    }
}

/// A non-negative whole number.
pub fn whole_number<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<usize>, D::Error> {
    let raw = Cow::<str>::deserialize(deserializer)?;
    raw.parse().map(Some).map_err(|_| D::Error::custom(format!("{raw:?} is not a whole number")))
}

/// An evaluation id from the path; anything that is not a UUID names no evaluation (404).
pub fn evaluation_id(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| ApiError::NotFound(raw.chars().take(64).collect()))
}
