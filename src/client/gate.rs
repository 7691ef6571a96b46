//! Gating a CI pipeline on an evaluation's metrics: requirements (`TASK/METRIC[,FILTER]>=VALUE`), a baseline's
//! allowed drop, and the verdict of each. Pure: metric rows in, verdicts out.

use serde::Serialize;

use crate::model::MetricRow;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Comparison {
    #[serde(rename = ">=")]
    AtLeast,
    #[serde(rename = "<=")]
    AtMost,
}

/// One gate: a metric of a task (under a filter, `none` when not given) compared with a value.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Requirement {
    pub task: String,
    pub metric: String,
    pub filter: String,
    pub comparison: Comparison,
    pub value: f64,
}

impl std::str::FromStr for Requirement {
    type Err = String;

    /// `TASK/METRIC>=VALUE`, `TASK/METRIC,FILTER<=VALUE`.
    fn from_str(raw: &str) -> Result<Self, String> {
        let expected = || format!("{raw:?}: expected TASK/METRIC>=VALUE or TASK/METRIC,FILTER<=VALUE");
        let (name, comparison, value) = if let Some((name, value)) = raw.split_once(">=") {
            (name, Comparison::AtLeast, value)
        } else if let Some((name, value)) = raw.split_once("<=") {
            (name, Comparison::AtMost, value)
        } else {
            return Err(expected());
        };
        let (task, metric) = name.trim().rsplit_once('/').ok_or_else(expected)?;
        let (metric, filter) = metric.split_once(',').unwrap_or((metric, "none"));
        let value: f64 = value.trim().parse().map_err(|_| format!("{raw:?}: {:?} is not a number", value.trim()))?;
        if task.is_empty() || metric.is_empty() || filter.is_empty() || !value.is_finite() {
            return Err(expected());
        }
        Ok(Self { task: task.to_string(), metric: metric.to_string(), filter: filter.to_string(), comparison, value })
    }
}

impl std::fmt::Display for Requirement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let op = if self.comparison == Comparison::AtLeast { ">=" } else { "<=" };
        let filter = if self.filter == "none" { String::new() } else { format!(",{}", self.filter) };
        write!(f, "{}/{}{filter}{op}{}", self.task, self.metric, self.value)
    }
}

/// How one requirement fared: the value found (none: the evaluation has no such metric, which fails the gate).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verdict {
    pub requirement: Requirement,
    pub actual: Option<f64>,
    pub passed: bool,
}

impl Verdict {
    /// What a report says about it: "0.4500 >= 0.2000", or why it failed.
    pub fn explanation(&self) -> String {
        let op = if self.requirement.comparison == Comparison::AtLeast { ">=" } else { "<=" };
        match self.actual {
            None => format!(
                "no metric {} of task {} (filter {})",
                self.requirement.metric, self.requirement.task, self.requirement.filter
            ),
            Some(actual) if self.passed => format!("{actual:.4} {op} {:.4}", self.requirement.value),
            Some(actual) => format!("{actual:.4} is not {op} {:.4}", self.requirement.value),
        }
    }
}

fn value_of(rows: &[MetricRow], task: &str, metric: &str, filter: &str) -> Option<f64> {
    rows.iter()
        .find(|row| row.task == task && row.metric == metric && row.filter == filter)
        .and_then(|row| row.value.as_f64())
}

/// Each requirement against the evaluation's metric rows.
pub fn judge(requirements: &[Requirement], rows: &[MetricRow]) -> Vec<Verdict> {
    requirements
        .iter()
        .map(|requirement| {
            let actual = value_of(rows, &requirement.task, &requirement.metric, &requirement.filter);
            let passed = actual.is_some_and(|actual| match requirement.comparison {
                Comparison::AtLeast => actual >= requirement.value,
                Comparison::AtMost => actual <= requirement.value,
            });
            Verdict { requirement: requirement.clone(), actual, passed }
        })
        .collect()
}

/// Against a baseline: every metric the baseline has must be at least its value minus `max_drop` (a metric
/// the candidate lacks fails). Metrics whose lower value is better are not known here, so each is "higher is
/// better" — the common case (acc, exact_match, f1).
pub fn against_baseline(baseline: &[MetricRow], max_drop: f64) -> Vec<Requirement> {
    baseline
        .iter()
        .filter_map(|row| {
            let value = row.value.as_f64()?;
            Some(Requirement {
                task: row.task.clone(),
                metric: row.metric.clone(),
                filter: row.filter.clone(),
                comparison: Comparison::AtLeast,
                value: value - max_drop,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(task: &str, metric: &str, filter: &str, value: f64) -> MetricRow {
        MetricRow {
            task: task.into(),
            filter: filter.into(),
            metric: metric.into(),
            value: serde_json::json!(value),
            stderr: None,
            n_shot: Some(0),
        }
    }

    #[test]
    fn requirements_parse_with_and_without_a_filter_and_refuse_what_they_cannot_read() {
        let plain: Requirement = "lmeval_aas_mc/acc>=0.2".parse().expect("parse");
        assert_eq!(
            (plain.task.as_str(), plain.metric.as_str(), plain.filter.as_str()),
            ("lmeval_aas_mc", "acc", "none")
        );
        assert_eq!((plain.comparison, plain.value), (Comparison::AtLeast, 0.2));
        let filtered: Requirement = "gsm8k/exact_match,strict-match <= 0.9".parse().expect("parse");
        assert_eq!(
            (filtered.filter.as_str(), filtered.comparison, filtered.value),
            ("strict-match", Comparison::AtMost, 0.9)
        );
        assert_eq!(filtered.to_string(), "gsm8k/exact_match,strict-match<=0.9");
        assert_eq!("mmlu/stem/acc>=0.5".parse::<Requirement>().expect("parse").task, "mmlu/stem");
        for bad in ["acc>=0.2", "t/acc=0.2", "t/acc>=x", "/acc>=1", "t/>=1", "t/acc,>=1", "t/acc>=inf", ""] {
            assert!(bad.parse::<Requirement>().is_err(), "{bad}");
        }
    }

    #[test]
    fn a_gate_passes_on_its_bound_fails_below_it_and_fails_a_missing_metric() {
        let rows = [row("mc", "acc", "none", 0.45), row("gen", "exact_match", "strict", 0.1)];
        let requirements: Vec<Requirement> =
            ["mc/acc>=0.45", "mc/acc>=0.99", "gen/exact_match,strict<=0.1", "mc/acc_norm>=0.1"]
                .iter()
                .map(|r| r.parse().expect("parse"))
                .collect();
        let verdicts = judge(&requirements, &rows);
        let passed: Vec<bool> = verdicts.iter().map(|v| v.passed).collect();
        assert_eq!(passed, [true, false, true, false]);
        assert_eq!(verdicts[1].explanation(), "0.4500 is not >= 0.9900");
        assert_eq!(verdicts[3].explanation(), "no metric acc_norm of task mc (filter none)");
    }

    #[test]
    fn a_baseline_allows_its_drop_and_no_more() {
        let baseline = [row("mc", "acc", "none", 0.50)];
        let requirements = against_baseline(&baseline, 0.02);
        assert!(judge(&requirements, &[row("mc", "acc", "none", 0.481)])[0].passed);
        assert!(!judge(&requirements, &[row("mc", "acc", "none", 0.479)])[0].passed);
    }
}
