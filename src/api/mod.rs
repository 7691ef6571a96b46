//! The HTTP surface: routes, middleware and the OpenAPI document they generate.

pub mod evaluations;
pub mod extract;
pub mod legacy;
pub mod ops;
pub mod ui;

use std::sync::Arc;

use axum::Router;
use axum::extract::{MatchedPath, Request};
use axum::http::Method;
use axum::response::IntoResponse;
use tokio::sync::watch;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::Level;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use utoipa_swagger_ui::SwaggerUi;

use crate::backend::Backend;
use crate::error::{ApiError, Problem};
use crate::metrics::{Metrics, MetricsLayer};
use crate::validate::Policy;
pub use extract::{BodyLimits, PeerAddr};

#[derive(Clone)]
pub struct AppState {
    pub backend: Arc<dyn Backend>,
    pub policy: Policy,
    pub metrics: Arc<Metrics>,
    /// Flips to true when the server shuts down, so long-lived log streams end.
    pub shutdown: watch::Receiver<bool>,
    pub limits: Limits,
}

/// What one request may cost: the size and arrival time of its body, and how many log streams may follow
/// evaluations at once.
#[derive(Clone, Debug)]
pub struct Limits {
    pub body: BodyLimits,
    pub log_followers: Arc<tokio::sync::Semaphore>,
}

impl Limits {
    pub fn new(body: BodyLimits, max_log_followers: usize) -> Self {
        Self { body, log_followers: Arc::new(tokio::sync::Semaphore::new(max_log_followers)) }
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "lm-eval-aas",
        description = "lm-evaluation-harness as a service: submit evaluations, follow them, read their results.",
        license(name = "Apache-2.0", identifier = "Apache-2.0")
    ),
    tags(
        (name = "evaluations", description = "Evaluations: submit, list, follow, read, cancel, delete"),
        (name = "legacy", description = "The Flask service's routes, kept for its clients"),
        (name = "operations", description = "Health, readiness and metrics"),
    ),
    components(schemas(Problem))
)]
struct ApiDoc;

fn api_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(evaluations::create_evaluation, evaluations::list_evaluations))
        .routes(routes!(evaluations::get_evaluation, evaluations::delete_evaluation))
        .routes(routes!(evaluations::get_evaluation_logs))
        .routes(routes!(evaluations::get_evaluation_results))
        .routes(routes!(evaluations::cancel_evaluation))
        .routes(routes!(legacy::submit_job))
        .routes(routes!(legacy::poll_job))
        .routes(routes!(legacy::job_results))
        .routes(routes!(legacy::list_jobs))
        .routes(routes!(legacy::cancel_job))
}

fn ops_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(ops::healthz)).routes(routes!(ops::readyz)).routes(routes!(ops::metrics))
}

/// The OpenAPI document, generated from the routes.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let (_, mut doc) = api_routes().split_for_parts();
    doc.merge(ops_routes().split_for_parts().1);
    doc
}

pub fn router(state: AppState) -> Router {
    let (api, _) = api_routes().split_for_parts();
    let (ops, _) = ops_routes().split_for_parts();
    let body_limits = state.limits.body;
    let api = api
        .layer(MetricsLayer(Arc::clone(&state.metrics)))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|req: &Request| {
                    let route = req.extensions().get::<MatchedPath>().map_or("", MatchedPath::as_str);
                    let request_id = req.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or("");
                    // Reads log nothing at info, and formatting a span's fields costs a fifth of a read's
                    // time; so read spans exist from debug on, the spans of changes always.
                    if req.method() == Method::GET || req.method() == Method::HEAD {
                        tracing::debug_span!("request", http.method = %req.method(), http.route = route, request.id = request_id)
                    } else {
                        tracing::info_span!("request", http.method = %req.method(), http.route = route, request.id = request_id)
                    }
                })
                .on_request(())
                .on_response(DefaultOnResponse::new().level(Level::DEBUG)),
        )
        .layer(axum::middleware::from_fn(extract::refuse_form_bodies))
        .layer(axum::Extension(body_limits));
    Router::new()
        .merge(api)
        .merge(ops)
        .merge(SwaggerUi::new("/docs").url("/openapi.json", openapi()))
        .route("/", axum::routing::get(ui::index))
        .route("/ui/{*path}", axum::routing::get(ui::asset))
        .fallback(|| async { ApiError::NoRoute })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .with_state(state)
        .layer(CatchPanicLayer::custom(|_| ApiError::internal("handler panicked").into_response()))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
}
