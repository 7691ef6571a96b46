//! The service's own middleware, each a plain tower layer whose future is not boxed: the read path is the
//! hot path, and a boxed future or a wrapped body per layer is most of what a read costs.

use std::future::Ready;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::{MatchedPath, Request};
use axum::http::Method;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use futures::future::Either;
use tracing::Instrument;
use tracing::instrument::Instrumented;

use crate::error::ApiError;
use crate::metrics::{Counted, Metrics};

/// The API routes' middleware in one layer: refuses cross-site form bodies on changes (415), gives each
/// request a span, and counts its response by method, route and status.
#[derive(Clone)]
pub struct ApiLayer {
    metrics: Arc<Metrics>,
}

impl ApiLayer {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self { metrics }
    }
}

impl<S> tower::Layer<S> for ApiLayer {
    type Service = Api<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Api { inner, metrics: Arc::clone(&self.metrics) }
    }
}

#[derive(Clone)]
pub struct Api<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

type Spanned<F> = Either<F, Instrumented<F>>;

impl<S> tower::Service<Request> for Api<S>
where
    S: tower::Service<Request, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Either<Ready<Result<Response, S::Error>>, Counted<Spanned<S::Future>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let read = matches!(*request.method(), Method::GET | Method::HEAD);
        if !read && is_cross_site_form(&request) {
            // The Flask routes refuse it as the Flask service refused any body it could not read.
            let refusal = if super::legacy::is_flask_route(request.uri().path()) {
                super::legacy::legacy_error(ApiError::UnsupportedMediaType)
            } else {
                ApiError::UnsupportedMediaType.into_response()
            };
            return Either::Left(std::future::ready(Ok(refusal)));
        }
        let method = request.method().clone();
        let route = request.extensions().get::<MatchedPath>().cloned();
        let future = match span_for(&request, read) {
            Some(span) => Either::Right(self.inner.call(request).instrument(span)),
            None => Either::Left(self.inner.call(request)),
        };
        Either::Right(Counted::new(future, method, route, Arc::clone(&self.metrics)))
    }
}

/// The media types a browser sends across sites without asking first (CORS "simple" requests): a change of
/// state never takes them, so a page elsewhere cannot make a visitor's browser cancel or submit.
const CROSS_SITE_FORM_TYPES: &[&str] = &["application/x-www-form-urlencoded", "multipart/form-data", "text/plain"];

fn is_cross_site_form(request: &Request) -> bool {
    request
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or_default().trim().to_ascii_lowercase())
        .is_some_and(|t| CROSS_SITE_FORM_TYPES.contains(&t.as_str()))
}

/// `info` for changes (they are logged), `debug` for reads; none for a read with debug off.
fn span_for(request: &Request, read: bool) -> Option<tracing::Span> {
    if read && !tracing::enabled!(tracing::Level::DEBUG) {
        return None;
    }
    let route = request.extensions().get::<MatchedPath>().map_or("", MatchedPath::as_str);
    let request_id = request.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or("");
    Some(if read {
        tracing::debug_span!("request", http.method = %request.method(), http.route = route, request.id = request_id)
    } else {
        tracing::info_span!("request", http.method = %request.method(), http.route = route, request.id = request_id)
    })
}

/// Request ids are random UUIDs, written straight into the header (no string in between).
#[derive(Clone, Copy)]
pub struct MakeRequestId;

impl tower_http::request_id::MakeRequestId for MakeRequestId {
    fn make_request_id<B>(&mut self, _request: &axum::http::Request<B>) -> Option<tower_http::request_id::RequestId> {
        super::status_read::new_request_id().map(tower_http::request_id::RequestId::new)
    }
}
