//! Prometheus text exposition of the service's own counters.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::model::State;

/// Request counts per route, then per (method, status). Once a combination has been seen, counting
/// it takes a shared read lock and an atomic add: no allocation, no waiting on another request.
type RouteCounts = HashMap<(axum::http::Method, u16), AtomicU64>;

#[derive(Debug, Default)]
pub struct Metrics {
    requests: RwLock<HashMap<String, RouteCounts>>,
    evaluations_created: AtomicU64,
}

impl Metrics {
    pub fn request(&self, method: &axum::http::Method, route: &str, status: u16) {
        let key = (method.clone(), status);
        {
            let requests = self.requests.read().unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(count) = requests.get(route).and_then(|counts| counts.get(&key)) {
                count.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
        let mut requests = self.requests.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        requests.entry(route.to_string()).or_default().entry(key).or_default().fetch_add(1, Ordering::Relaxed);
    }

    pub fn evaluation_created(&self) {
        self.evaluations_created.fetch_add(1, Ordering::Relaxed);
    }

    pub fn render(&self, by_state: &BTreeMap<State, u64>) -> String {
        let mut out = String::new();
        out.push_str("# HELP lmeval_http_requests_total HTTP requests answered, by method, route and status.\n");
        out.push_str("# TYPE lmeval_http_requests_total counter\n");
        let requests = self.requests.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut rows: Vec<(&str, String, u16, u64)> = Vec::new();
        for (route, counts) in requests.iter() {
            rows.extend(counts.iter().map(|((method, status), count)| {
                (route.as_str(), method.to_string(), *status, count.load(Ordering::Relaxed))
            }));
        }
        rows.sort();
        for (route, method, status, count) in rows {
            let _ = writeln!(
                out,
                "lmeval_http_requests_total{{method=\"{method}\",route=\"{}\",status=\"{status}\"}} {count}",
                escape(route)
            );
        }
        drop(requests);
        out.push_str("# HELP lmeval_evaluations_created_total Evaluations accepted since the process started.\n");
        out.push_str("# TYPE lmeval_evaluations_created_total counter\n");
        let _ = writeln!(out, "lmeval_evaluations_created_total {}", self.evaluations_created.load(Ordering::Relaxed));
        out.push_str("# HELP lmeval_evaluations Evaluations on record, by state.\n");
        out.push_str("# TYPE lmeval_evaluations gauge\n");
        for (state, count) in by_state {
            let _ = writeln!(out, "lmeval_evaluations{{state=\"{}\"}} {count}", state.as_str());
        }
        out
    }
}

fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Counts every response by method, matched route and status, without boxing the request's future.
#[derive(Clone)]
pub struct MetricsLayer(pub std::sync::Arc<Metrics>);

impl<S> tower::Layer<S> for MetricsLayer {
    type Service = MetricsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        MetricsService { inner, metrics: std::sync::Arc::clone(&self.0) }
    }
}

#[derive(Clone)]
pub struct MetricsService<S> {
    inner: S,
    metrics: std::sync::Arc<Metrics>,
}

impl<S, B> tower::Service<axum::http::Request<B>> for MetricsService<S>
where
    S: tower::Service<axum::http::Request<B>, Response = axum::response::Response>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Counted<S::Future>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: axum::http::Request<B>) -> Self::Future {
        let method = request.method().clone();
        let route = request.extensions().get::<axum::extract::MatchedPath>().cloned();
        Counted { inner: self.inner.call(request), method, route, metrics: std::sync::Arc::clone(&self.metrics) }
    }
}

pin_project_lite::pin_project! {
    pub struct Counted<F> {
        #[pin]
        inner: F,
        method: axum::http::Method,
        route: Option<axum::extract::MatchedPath>,
        metrics: std::sync::Arc<Metrics>,
    }
}

impl<F, E> std::future::Future for Counted<F>
where
    F: std::future::Future<Output = Result<axum::response::Response, E>>,
{
    type Output = F::Output;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Self::Output> {
        let this = self.project();
        let output = std::task::ready!(this.inner.poll(cx));
        if let Ok(response) = &output {
            let status = response.status();
            this.metrics.request(
                this.method,
                this.route.as_ref().map_or("", axum::extract::MatchedPath::as_str),
                status.as_u16(),
            );
            if status.is_server_error() {
                tracing::warn!(http.status = status.as_u16(), "server error");
            }
        }
        std::task::Poll::Ready(output)
    }
}
