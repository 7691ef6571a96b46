//! Prometheus text exposition of the service's own counters.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};

use crate::model::State;

/// Request counts per route, then per (method, status): recording one allocates nothing once a route has been seen.
type RouteCounts = Mutex<HashMap<(axum::http::Method, u16), u64>>;

#[derive(Debug, Default)]
pub struct Metrics {
    requests: RwLock<HashMap<String, RouteCounts>>,
    evaluations_created: AtomicU64,
}

impl Metrics {
    pub fn request(&self, method: &axum::http::Method, route: &str, status: u16) {
        let count = |counts: &RouteCounts| {
            let mut counts = counts.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            *counts.entry((method.clone(), status)).or_default() += 1;
        };
        if let Some(counts) = self.requests.read().unwrap_or_else(std::sync::PoisonError::into_inner).get(route) {
            count(counts);
            return;
        }
        let mut requests = self.requests.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        count(requests.entry(route.to_string()).or_default());
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
            let counts = counts.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            rows.extend(
                counts.iter().map(|((method, status), count)| (route.as_str(), method.to_string(), *status, *count)),
            );
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
