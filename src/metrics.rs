//! Prometheus text exposition of the service's own counters.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::model::State;

#[derive(Debug, Default)]
pub struct Metrics {
    requests: Mutex<HashMap<(String, String, u16), u64>>,
    evaluations_created: AtomicU64,
}

impl Metrics {
    pub fn request(&self, method: &str, route: &str, status: u16) {
        let mut requests = self.requests.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        *requests.entry((method.to_string(), route.to_string(), status)).or_default() += 1;
    }

    pub fn evaluation_created(&self) {
        self.evaluations_created.fetch_add(1, Ordering::Relaxed);
    }

    pub fn render(&self, by_state: &BTreeMap<State, u64>) -> String {
        let mut out = String::new();
        out.push_str("# HELP lmeval_http_requests_total HTTP requests answered, by method, route and status.\n");
        out.push_str("# TYPE lmeval_http_requests_total counter\n");
        let requests = self.requests.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut rows: Vec<_> = requests.iter().collect();
        rows.sort();
        for ((method, route, status), count) in rows {
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
