//! The HTTP surface: routes, middleware and the OpenAPI document they generate.

pub mod evaluations;
pub mod extract;
mod layers;
pub mod legacy;
pub mod namespaced;
pub mod ops;
pub mod outputs;
mod status_read;
pub mod ui;
pub mod webhook;

use std::sync::Arc;

use axum::Router;
use axum::response::IntoResponse;
use tokio::sync::watch;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{PropagateRequestIdLayer, SetRequestIdLayer};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use utoipa_swagger_ui::SwaggerUi;

use crate::backend::Backend;
use crate::error::{ApiError, ApiResult, Problem};
use crate::metrics::Metrics;
use crate::validate::Policy;
pub use extract::{BodyLimits, PeerAddr};

/// What every handler may use: one shared `App`, so handing it to a request is one reference count.
#[derive(Clone)]
pub struct AppState(Arc<App>);

impl std::ops::Deref for AppState {
    type Target = App;

    fn deref(&self) -> &App {
        &self.0
    }
}

impl AppState {
    /// The namespace the un-namespaced and the Flask routes mean.
    pub fn default_namespace(&self) -> &str {
        self.backend.namespaces().first().map_or("default", String::as_str)
    }

    /// `Ok` when `caller` may do `access`; `403` naming what is missing otherwise. A namespace the server does not
    /// serve is `404` before anyone is asked, so a made-up namespace in a route costs no SubjectAccessReview (the
    /// `Caller` extractor has authenticated the request before: no token is still `401`).
    pub async fn authorize(&self, caller: &crate::auth::Caller, access: crate::auth::Access) -> ApiResult<()> {
        if access.path.is_none() {
            crate::backend::ensure_served(self.backend.namespaces(), &access.namespace)?;
        }
        self.auth.authorize(caller, access).await
    }
}

impl From<App> for AppState {
    fn from(app: App) -> Self {
        Self(Arc::new(app))
    }
}

pub struct App {
    pub backend: Arc<dyn Backend>,
    pub policy: Policy,
    pub metrics: Arc<Metrics>,
    /// Flips to true when the server shuts down, so long-lived log streams end.
    pub shutdown: watch::Receiver<bool>,
    pub limits: Limits,
    pub auth: crate::auth::Auth,
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
        (name = "evaluations", description = "Evaluations in the server's default namespace: submit, list, follow, read, cancel, delete"),
        (name = "namespaced", description = "Evaluations in a namespace the server serves (on Kubernetes, Evaluation objects)"),
        (name = "legacy", description = "The Flask service's routes, kept for its clients"),
        (name = "operations", description = "Health, readiness and metrics"),
    ),
    components(schemas(Problem, crate::outputs::samples::Outcome))
)]
struct ApiDoc;

/// Routes whose last parameter may hold slashes (`{*path}` for axum), documented with a plain `{path}`.
#[derive(OpenApi)]
#[openapi(paths(outputs::get_evaluation_artifact, namespaced::get_namespaced_evaluation_artifact))]
struct WildcardRoutes;

fn wildcard_routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/evaluations/{id}/artifacts/{*path}", axum::routing::get(outputs::get_evaluation_artifact))
        .route(
            "/api/v1/namespaces/{namespace}/evaluations/{id}/artifacts/{*path}",
            axum::routing::get(namespaced::get_namespaced_evaluation_artifact),
        )
}

fn api_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(evaluations::create_evaluation, evaluations::list_evaluations))
        .routes(routes!(evaluations::get_evaluation, evaluations::delete_evaluation))
        .routes(routes!(evaluations::get_evaluation_logs))
        .routes(routes!(evaluations::get_evaluation_results))
        .routes(routes!(evaluations::cancel_evaluation))
        .routes(routes!(outputs::get_evaluation_samples))
        .routes(routes!(outputs::list_evaluation_artifacts))
        .routes(routes!(outputs::get_evaluation_archive))
        .routes(routes!(outputs::get_evaluation_manifest))
        .routes(routes!(namespaced::create_namespaced_evaluation, namespaced::list_namespaced_evaluations))
        .routes(routes!(namespaced::get_namespaced_evaluation, namespaced::delete_namespaced_evaluation))
        .routes(routes!(namespaced::get_namespaced_evaluation_logs))
        .routes(routes!(namespaced::get_namespaced_evaluation_results))
        .routes(routes!(namespaced::cancel_namespaced_evaluation))
        .routes(routes!(namespaced::get_namespaced_evaluation_samples))
        .routes(routes!(namespaced::list_namespaced_evaluation_artifacts))
        .routes(routes!(namespaced::get_namespaced_evaluation_archive))
        .routes(routes!(namespaced::get_namespaced_evaluation_manifest))
        .routes(routes!(legacy::submit_job))
        .routes(routes!(legacy::poll_job))
        .routes(routes!(legacy::job_results))
        .routes(routes!(legacy::list_jobs))
        .routes(routes!(legacy::cancel_job))
}

fn ops_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(ops::healthz)).routes(routes!(ops::readyz)).routes(routes!(ops::metrics))
}

/// The OpenAPI document, generated from the routes, as served and committed.
pub fn openapi() -> serde_json::Value {
    let (_, mut doc) = api_routes().split_for_parts();
    doc.merge(WildcardRoutes::openapi());
    doc.merge(ops_routes().split_for_parts().1);
    require_bearer_tokens(&mut doc);
    link_created_evaluations(&mut doc);
    let mut document = serde_json::to_value(doc).unwrap_or_default();
    spell_links_as_openapi_does(&mut document);
    document
}

/// utoipa 5 writes a Link's members in Rust's spelling (`operation_id`); OpenAPI's are camelCase.
fn spell_links_as_openapi_does(document: &mut serde_json::Value) {
    let Some(paths) = document.get_mut("paths").and_then(serde_json::Value::as_object_mut) else { return };
    let responses = paths
        .values_mut()
        .filter_map(serde_json::Value::as_object_mut)
        .flat_map(|item| item.values_mut())
        .filter_map(|operation| operation.get_mut("responses")?.as_object_mut())
        .flat_map(|responses| responses.values_mut());
    for response in responses {
        let Some(links) = response.get_mut("links").and_then(serde_json::Value::as_object_mut) else { continue };
        for link in links.values_mut().filter_map(serde_json::Value::as_object_mut) {
            for (rust, openapi) in
                [("operation_id", "operationId"), ("operation_ref", "operationRef"), ("request_body", "requestBody")]
            {
                if let Some(value) = link.remove(rust) {
                    link.insert(openapi.to_string(), value);
                }
            }
        }
    }
}

/// OpenAPI links from what creates an evaluation (and a list page) to what reads and ends it, so that
/// generated clients and stateful testers (schemathesis) can follow an id from the answer that made it.
fn link_created_evaluations(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::RefOr;
    use utoipa::openapi::link::LinkBuilder;
    const BY_ID: [&str; 10] = [
        "get_evaluation",
        "get_evaluation_logs",
        "get_evaluation_results",
        "get_evaluation_samples",
        "list_evaluation_artifacts",
        "get_evaluation_archive",
        "get_evaluation_manifest",
        "get_evaluation_artifact",
        "cancel_evaluation",
        "delete_evaluation",
    ];
    const BY_TASK_ID: [&str; 3] = ["legacy_poll_job", "legacy_job_results", "legacy_cancel_job"];
    // A link to each target, named after it, passing the given parameters.
    let to_each = |targets: &[&str], name: fn(&str) -> String, parameters: &[(&str, &str)]| {
        let link = |target: &str| {
            let link = parameters
                .iter()
                .fold(LinkBuilder::new().operation_id(target), |link, (name, value)| link.parameter(*name, *value));
            (target.to_string(), link.build())
        };
        targets.iter().map(|target| link(&name(target))).collect::<Vec<_>>()
    };
    let links = |operation: &str| match operation {
        "create_evaluation" => to_each(&BY_ID, str::to_string, &[("id", "$response.body#/id")]),
        "create_namespaced_evaluation" => to_each(
            &BY_ID,
            |target| target.replacen("_evaluation", "_namespaced_evaluation", 1),
            &[("namespace", "$response.body#/namespace"), ("id", "$response.body#/id")],
        ),
        "legacy_submit_job" => to_each(&BY_TASK_ID, str::to_string, &[("task_id", "$response.body#/task_id")]),
        "list_evaluations" | "list_namespaced_evaluations" => {
            let mut next = LinkBuilder::new()
                .operation_id(operation)
                .description("The next page")
                .parameter("page_token", "$response.body#/next_page_token");
            if operation == "list_namespaced_evaluations" {
                next = next.parameter("namespace", "$request.path.namespace");
            }
            vec![("next_page".to_string(), next.build())]
        }
        _ => Vec::new(),
    };
    for item in doc.paths.paths.values_mut() {
        for operation in [&mut item.get, &mut item.post, &mut item.delete].into_iter().flatten() {
            let id = operation.operation_id.as_deref().unwrap_or_default();
            let made = links(id);
            // A create answers 202 with the evaluation (200 is a dry run's, which has no id).
            let answer = if id.starts_with("create_") { "202" } else { "200" };
            for (status, response) in &mut operation.responses.responses {
                if let (true, RefOr::T(response)) = (status == answer, response) {
                    response.links.extend(made.iter().map(|(name, link)| (name.clone(), RefOr::T(link.clone()))));
                }
            }
        }
    }
}

/// Every operation but the probes takes a bearer token, and may answer 401 (none, or not valid) and 403 (not
/// allowed).
fn require_bearer_tokens(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityRequirement, SecurityScheme};
    use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
    let components = doc.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        "bearer",
        SecurityScheme::Http(
            Http::builder()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some(
                    "A Kubernetes token (TokenReview) or one listed in the server's token file; behind OpenShift's oauth-proxy, the forwarded access token",
                ))
                .build(),
        ),
    );
    let problem = |description: &str| {
        ResponseBuilder::new()
            .description(description)
            .content(
                crate::error::PROBLEM_JSON,
                ContentBuilder::new().schema(Some(Ref::from_schema_name("Problem"))).build(),
            )
            .build()
    };
    for (path, item) in &mut doc.paths.paths {
        if path == "/healthz" || path == "/readyz" {
            continue;
        }
        let operations = [&mut item.get, &mut item.post, &mut item.put, &mut item.patch, &mut item.delete];
        for operation in operations.into_iter().flatten() {
            operation.security = Some(vec![SecurityRequirement::new("bearer", Vec::<String>::new())]);
            let responses = &mut operation.responses.responses;
            responses
                .entry("401".into())
                .or_insert_with(|| problem("No bearer token, or one that is not valid").into());
            responses.entry("403".into()).or_insert_with(|| problem("The caller may not do this").into());
        }
    }
}

/// The HTTP service: the router, and in front of it the hot status read (see `status_read`).
#[derive(Clone)]
pub struct Service {
    router: Router,
    state: AppState,
}

impl<B> tower::Service<axum::http::Request<B>> for Service
where
    B: axum::body::HttpBody<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    type Response = axum::response::Response;
    type Error = std::convert::Infallible;
    type Future = futures::future::Either<
        std::future::Ready<Result<Self::Response, Self::Error>>,
        <Router as tower::Service<axum::http::Request<B>>>::Future,
    >;

    fn poll_ready(&mut self, _cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: axum::http::Request<B>) -> Self::Future {
        match status_read::answer(&self.state, &request) {
            Some(response) => futures::future::Either::Left(std::future::ready(Ok(response))),
            None => futures::future::Either::Right(tower::Service::call(&mut self.router, request)),
        }
    }
}

/// `/metrics` alone, unauthenticated, for `--metrics-listen`.
pub fn metrics_router(state: AppState) -> Router {
    Router::new().route("/metrics", axum::routing::get(ops::open_metrics)).with_state(state)
}

pub fn router(state: impl Into<AppState>) -> Service {
    let state = state.into();
    Service { router: routes(state.clone()), state }
}

/// Every layer of a Router is a boxed service cloned per request; so the API's own middleware is one layer,
/// and the request id and panic catching are another.
fn routes(state: AppState) -> Router {
    let (api, _) = api_routes().split_for_parts();
    let (ops, _) = ops_routes().split_for_parts();
    let api = api.merge(wildcard_routes()).layer(layers::ApiLayer::new(Arc::clone(&state.metrics)));
    Router::new()
        .merge(api)
        .merge(ops)
        .merge(SwaggerUi::new("/docs").external_url_unchecked("/openapi.json", openapi()))
        .route("/", axum::routing::get(ui::index))
        .route("/ui/{*path}", axum::routing::get(ui::asset))
        .fallback(|| async { ApiError::NoRoute })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .with_state(state)
        .layer(
            tower::ServiceBuilder::new()
                .layer(SetRequestIdLayer::x_request_id(layers::MakeRequestId))
                .layer(PropagateRequestIdLayer::x_request_id())
                .layer(CatchPanicLayer::custom(|_| ApiError::internal("handler panicked").into_response())),
        )
}
