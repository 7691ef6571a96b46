//! The validating admission webhook for Evaluations (`POST /validate-evaluations`), served on its own HTTPS
//! listener: the API server asks it before storing an Evaluation, and it answers as the REST API would.

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview};

use super::AppState;
use crate::error::ApiError;
use crate::k8s::admission::judge;

pub const PATH: &str = "/validate-evaluations";

/// An AdmissionReview holds the object and, on update, its old self: each up to etcd's 1.5 MiB.
const MAX_REVIEW_BYTES: usize = 4 * 1024 * 1024;

/// How long a review's body may take to arrive once its head has (the listener bounds the head): at most this, or
/// `--request-read-timeout-seconds` when that is shorter. The API server sends a review at once and waits for the
/// answer no longer than the registration's `timeoutSeconds` (at most 30 s), so a body still arriving after this
/// is a client holding one of the listener's few connections, not the API server.
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);

pub fn router(state: AppState) -> Router {
    Router::new()
        .route(PATH, post(validate))
        .fallback(|| async { ApiError::NoRoute })
        .layer(middleware::from_fn_with_state(state.clone(), body_in_time))
        .layer(DefaultBodyLimit::max(MAX_REVIEW_BYTES))
        .with_state(state)
}

/// Reads the whole body within the deadline (and the size limit) before any handler runs; a body that stalls is
/// answered `408` and its connection closed.
async fn body_in_time(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let deadline = state.limits.body.read_timeout.min(BODY_READ_TIMEOUT);
    let (parts, body) = request.into_parts();
    match tokio::time::timeout(deadline, super::extract::read_body(body, MAX_REVIEW_BYTES)).await {
        Ok(Ok(bytes)) => next.run(Request::from_parts(parts, Body::from(bytes))).await,
        Ok(Err(error)) => closing(error),
        Err(_) => closing(ApiError::RequestTimeout(deadline.as_secs().max(1))),
    }
}

/// The problem, on a connection that ends with it: the rest of a body that was not read is never waited for.
fn closing(error: ApiError) -> Response {
    let mut response = error.into_response();
    response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

async fn validate(
    State(state): State<AppState>,
    axum::Json(review): axum::Json<AdmissionReview<DynamicObject>>,
) -> axum::Json<AdmissionReview<DynamicObject>> {
    let request: AdmissionRequest<DynamicObject> = match review.try_into() {
        Ok(request) => request,
        Err(e) => return axum::Json(AdmissionResponse::invalid(e).into_review()),
    };
    let response = judge(&request, |namespace| state.backend.site(namespace), &state.policy);
    if !response.allowed {
        tracing::info!(namespace = ?request.namespace, name = %request.name, user = ?request.user_info.username, reason = %response.result.message, "admission denied");
    }
    axum::Json(response.into_review())
}
