//! The read clients repeat most — polling `GET /api/v1/evaluations/{id}` — answered straight from the
//! backend's memory: the bytes and headers the route gives, counted the same, without routing or per-route
//! middleware. Only a read that succeeds, by a caller whose token and permission are both remembered, is
//! answered here; anything else (that read's 404 included, a caller not yet reviewed, or any read while debug
//! logging is on) goes through the router.

use axum::body::Body;
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderValue, Method, Request, Response, StatusCode};
use uuid::Uuid;

use super::AppState;
use crate::auth::{Access, Verb};

const PREFIX: &str = "/api/v1/evaluations/";
const REQUEST_ID: &str = "x-request-id";

/// The response to `request` when it is a status read of an evaluation that exists.
pub fn answer<B>(state: &AppState, request: &Request<B>) -> Option<Response<Body>> {
    if request.method() != Method::GET || request.uri().query().is_some() || tracing::enabled!(tracing::Level::DEBUG) {
        return None;
    }
    let id: Uuid = request.uri().path().strip_prefix(PREFIX)?.parse().ok()?;
    let namespace = state.default_namespace();
    // Only a caller whose token and permission are both remembered; anyone else goes through the router.
    if state.auth.remembered_allows(request.headers(), Access::evaluations(Verb::Get, namespace)) != Some(true) {
        return None;
    }
    let json = state.backend.get_json(namespace, id).ok()?;
    let request_id = match request.headers().get(REQUEST_ID) {
        Some(given) => given.clone(),
        None => new_request_id()?,
    };
    state.metrics.status_read();
    let mut response = Response::new(Body::from(json));
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(REQUEST_ID, request_id);
    debug_assert_eq!(response.status(), StatusCode::OK);
    Some(response)
}

/// A random UUID as a header value, written without a string in between.
pub fn new_request_id() -> Option<HeaderValue> {
    let mut buffer = Uuid::encode_buffer();
    HeaderValue::from_str(Uuid::new_v4().hyphenated().encode_lower(&mut buffer)).ok()
}
