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
    /// Status reads answered without the router (`api::status_read`): `GET` `STATUS_READ_ROUTE` `200`.
    status_reads: AtomicU64,
    evaluations_created: AtomicU64,
}

/// The route status reads are counted under, whichever way they were answered.
pub const STATUS_READ_ROUTE: &str = "/api/v1/evaluations/{id}";

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

    pub fn status_read(&self) {
        self.status_reads.fetch_add(1, Ordering::Relaxed);
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
        let fast = self.status_reads.load(Ordering::Relaxed);
        match rows
            .iter_mut()
            .find(|(route, method, status, _)| *route == STATUS_READ_ROUTE && method == "GET" && *status == 200)
        {
            Some(row) => row.3 += fast,
            None if fast > 0 => rows.push((STATUS_READ_ROUTE, "GET".into(), 200, fast)),
            None => {}
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

pin_project_lite::pin_project! {
    /// A request's future that counts its response by method, matched route and status when it is ready.
    pub struct Counted<F> {
        #[pin]
        inner: F,
        method: axum::http::Method,
        route: Option<axum::extract::MatchedPath>,
        metrics: std::sync::Arc<Metrics>,
    }
}

impl<F> Counted<F> {
    pub fn new(
        inner: F,
        method: axum::http::Method,
        route: Option<axum::extract::MatchedPath>,
        metrics: std::sync::Arc<Metrics>,
    ) -> Self {
        Self { inner, method, route, metrics }
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
