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
    /// Requests this process sent to the Kubernetes API server, by (verb, resource).
    kube_requests: RwLock<HashMap<(&'static str, String), AtomicU64>>,
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

    /// Counts one request to the Kubernetes API server.
    pub fn kube_request(&self, method: &axum::http::Method, uri: &axum::http::Uri) {
        let key = kube_request_kind(method, uri.path(), uri.query().unwrap_or(""));
        {
            let counts = self.kube_requests.read().unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(count) = counts.get(&key) {
                count.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
        let mut counts = self.kube_requests.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        counts.entry(key).or_default().fetch_add(1, Ordering::Relaxed);
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
        out.push_str(
            "# HELP lmeval_kube_api_requests_total Requests sent to the Kubernetes API server, by verb and resource.\n",
        );
        out.push_str("# TYPE lmeval_kube_api_requests_total counter\n");
        let counts = self.kube_requests.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut rows: Vec<(&str, &str, u64)> =
            counts.iter().map(|((verb, resource), n)| (*verb, resource.as_str(), n.load(Ordering::Relaxed))).collect();
        rows.sort();
        for (verb, resource, count) in rows {
            let _ = writeln!(
                out,
                "lmeval_kube_api_requests_total{{verb=\"{verb}\",resource=\"{}\"}} {count}",
                escape(resource)
            );
        }
        drop(counts);
        out.push_str("# HELP lmeval_evaluations Evaluations on record, by state.\n");
        out.push_str("# TYPE lmeval_evaluations gauge\n");
        for (state, count) in by_state {
            let _ = writeln!(out, "lmeval_evaluations{{state=\"{}\"}} {count}", state.as_str());
        }
        out
    }
}

/// The verb (as RBAC names it) and resource (`pods`, `pods/log`) of a request to the Kubernetes API.
pub fn kube_request_kind(method: &axum::http::Method, path: &str, query: &str) -> (&'static str, String) {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    // /api/v1/… or /apis/GROUP/VERSION/…, then namespaces/NS/… when namespaced.
    let rest = match segments.first() {
        Some(&"api") => segments.get(2..),
        Some(&"apis") => segments.get(3..),
        _ => None,
    };
    let rest = match rest.unwrap_or_default() {
        ["namespaces", _, tail @ ..] if !tail.is_empty() => tail,
        other => other,
    };
    let verb = verb_of(method, rest.len() > 1, query);
    match rest {
        [] => (verb, "(non-resource)".into()),
        [resource] | [resource, _] => (verb, (*resource).into()),
        [resource, _, sub, ..] => (verb, format!("{resource}/{sub}")),
    }
}

fn verb_of(method: &axum::http::Method, named: bool, query: &str) -> &'static str {
    let watch = query.split('&').any(|pair| pair == "watch=true" || pair == "watch=1");
    match *method {
        axum::http::Method::GET if watch => "watch",
        axum::http::Method::GET if named => "get",
        axum::http::Method::GET => "list",
        axum::http::Method::POST => "create",
        axum::http::Method::PUT => "update",
        axum::http::Method::PATCH => "patch",
        axum::http::Method::DELETE if named => "delete",
        axum::http::Method::DELETE => "deletecollection",
        _ => "other",
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

#[cfg(test)]
mod tests {
    use axum::http::Method;

    use super::kube_request_kind;

    #[test]
    fn a_kubernetes_request_is_named_by_its_rbac_verb_and_resource() {
        let kind = |method: Method, path: &str, query: &str| {
            let (verb, resource) = kube_request_kind(&method, path, query);
            format!("{verb} {resource}")
        };
        let evaluations = "/apis/lm-eval-aas.io/v1alpha1/namespaces/a/evaluations";
        assert_eq!(kind(Method::GET, evaluations, "labelSelector=x"), "list evaluations");
        assert_eq!(kind(Method::GET, evaluations, "watch=true&resourceVersion=5"), "watch evaluations");
        assert_eq!(kind(Method::POST, evaluations, ""), "create evaluations");
        assert_eq!(kind(Method::GET, &format!("{evaluations}/lmeval-1"), ""), "get evaluations");
        assert_eq!(kind(Method::PATCH, &format!("{evaluations}/lmeval-1/status"), ""), "patch evaluations/status");
        assert_eq!(kind(Method::GET, "/api/v1/namespaces/a/pods/p/log", "follow=true"), "get pods/log");
        assert_eq!(kind(Method::PUT, "/apis/coordination.k8s.io/v1/namespaces/a/leases/l", ""), "update leases");
        assert_eq!(kind(Method::GET, "/api/v1/namespaces/a", ""), "get namespaces");
        assert_eq!(kind(Method::GET, "/api/v1/nodes", ""), "list nodes");
        assert_eq!(kind(Method::GET, "/version", ""), "list (non-resource)");
        assert_eq!(kind(Method::DELETE, "/apis/batch/v1/namespaces/a/jobs", ""), "deletecollection jobs");
    }
}
