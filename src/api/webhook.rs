//! The validating admission webhook for Evaluations (`POST /validate-evaluations`), served on its own HTTPS
//! listener: the API server asks it before storing an Evaluation, and it answers as the REST API would.

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::routing::post;
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview};

use super::AppState;
use crate::error::ApiError;
use crate::k8s::admission::judge;

pub const PATH: &str = "/validate-evaluations";

/// An AdmissionReview holds the object and, on update, its old self: each up to etcd's 1.5 MiB.
const MAX_REVIEW_BYTES: usize = 4 * 1024 * 1024;

pub fn router(state: AppState) -> Router {
    Router::new()
        .route(PATH, post(validate))
        .fallback(|| async { ApiError::NoRoute })
        .layer(DefaultBodyLimit::max(MAX_REVIEW_BYTES))
        .with_state(state)
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
