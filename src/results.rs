//! lm-eval's results JSON (`results_<timestamp>.json`) → one metric row per task, filter and metric.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::model::MetricRow;

pub fn metric_rows(results: &Value) -> Vec<MetricRow> {
    let n_shot = results.get("n-shot");
    let Some(tasks) = results.get("results").and_then(Value::as_object) else {
        return Vec::new();
    };
    let mut rows = Vec::new();
    for (task, metrics) in tasks {
        let Some(metrics) = metrics.as_object() else { continue };
        for (key, value) in metrics {
            let Some((metric, filter)) = key.split_once(',') else { continue };
            if metric.ends_with("_stderr") || !(value.is_number() || value.is_null()) {
                continue;
            }
            let stderr = metrics.get(&format!("{metric}_stderr,{filter}")).and_then(Value::as_f64);
            rows.push(MetricRow {
                task: task.clone(),
                filter: filter.to_string(),
                metric: metric.to_string(),
                value: value.clone(),
                stderr,
                n_shot: n_shot.and_then(|n| n.get(task)).and_then(Value::as_i64),
            });
        }
    }
    rows
}

/// lm-eval writes `<output>/<model name>/results_<timestamp>.json`; the newest one wins.
pub fn find_results(output: &Path) -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(output)
        .ok()?
        .filter_map(Result::ok)
        .flat_map(|model_dir| std::fs::read_dir(model_dir.path()).into_iter().flatten().filter_map(Result::ok))
        .map(|e| e.path())
        .filter(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("results_") && n.ends_with(".json"))
        })
        .collect();
    found.sort();
    found.pop()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn one_row_per_metric_with_its_stderr() {
        let results = json!({
            "results": {"arc_easy": {"alias": "arc_easy", "acc,none": 0.5, "acc_stderr,none": 0.1, "acc_norm,none": 0.25, "acc_norm_stderr,none": "N/A"}},
            "n-shot": {"arc_easy": 0}
        });
        let rows = metric_rows(&results);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].metric, "acc");
        assert_eq!(rows[0].filter, "none");
        assert_eq!(rows[0].stderr, Some(0.1));
        assert_eq!(rows[0].n_shot, Some(0));
        assert_eq!(rows[1].metric, "acc_norm");
        assert_eq!(rows[1].stderr, None);
    }
}
