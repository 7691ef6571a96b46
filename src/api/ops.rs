//! Health, readiness and metrics for the platform around the service.

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;
use crate::auth::{Access, Caller};
use crate::error::{ApiError, ApiResult, Problem};

#[derive(Serialize, ToSchema)]
pub struct Health {
    pub status: &'static str,
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", operation_id = "get_health", tag = "operations",
    responses((status = 200, description = "Alive", body = Health)))]
pub async fn healthz() -> axum::Json<Health> {
    axum::Json(Health { status: "ok" })
}

/// Readiness: the backend's state is loaded and its store reachable.
#[utoipa::path(get, path = "/readyz", operation_id = "get_readiness", tag = "operations",
    responses(
        (status = 200, description = "Ready", body = Health),
        (status = 503, description = "Not ready", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn readyz(State(state): State<AppState>) -> ApiResult<axum::Json<Health>> {
    if *state.shutdown.borrow() {
        return Err(ApiError::Unavailable { detail: "shutting down".into(), retry_after_seconds: 1 });
    }
    state.backend.ready().await?;
    Ok(axum::Json(Health { status: "ready" }))
}

/// Prometheus metrics.
#[utoipa::path(get, path = "/metrics", operation_id = "get_metrics", tag = "operations",
    responses(
        (status = 200, description = "Prometheus text format", body = String, content_type = "text/plain; version=0.0.4"),
        (status = 401, description = "No valid bearer token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not allowed to get the non-resource URL /metrics", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn metrics(caller: Caller, State(state): State<AppState>) -> ApiResult<impl IntoResponse> {
    state.auth.authorize(&caller, Access::non_resource("/metrics")).await?;
    Ok(open_metrics(State(state)).await)
}

/// `/metrics` on `--metrics-listen`, an address only the platform reaches: no token asked.
pub async fn open_metrics(State(state): State<AppState>) -> impl IntoResponse {
    let by_state = state.backend.count_by_state().await;
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], state.metrics.render(&by_state))
}
