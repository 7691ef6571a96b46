//! What the CLI prints for a pipeline: the metrics and the gates' verdicts as a text table, JSON, JUnit XML
//! (one test case per gate, for CI test reports) or Markdown (job summaries). Pure: strings out.

use serde_json::json;

use super::gate::Verdict;
use crate::model::MetricRow;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
    Junit,
    Markdown,
}

fn number(value: &serde_json::Value) -> String {
    value.as_f64().map_or_else(|| "-".to_string(), |v| format!("{v:.4}"))
}

pub fn render(format: Format, evaluation_id: &str, rows: &[MetricRow], verdicts: &[Verdict]) -> String {
    match format {
        Format::Table => table(rows, verdicts),
        Format::Json => {
            let document = json!({"evaluation": evaluation_id, "metrics": rows, "gates": verdicts,
                "passed": verdicts.iter().all(|v| v.passed)});
            serde_json::to_string_pretty(&document).unwrap_or_default() + "\n"
        }
        Format::Junit => junit(evaluation_id, verdicts),
        Format::Markdown => markdown(evaluation_id, rows, verdicts),
    }
}

fn table(rows: &[MetricRow], verdicts: &[Verdict]) -> String {
    let mut lines = vec![(
        "task".to_string(),
        "filter".to_string(),
        "metric".to_string(),
        "value".to_string(),
        "± stderr".to_string(),
    )];
    for row in rows {
        let stderr = row.stderr.map_or_else(|| "-".to_string(), |s| format!("{s:.4}"));
        lines.push((row.task.clone(), row.filter.clone(), row.metric.clone(), number(&row.value), stderr));
    }
    let width = |pick: fn(&(String, String, String, String, String)) -> &String| {
        lines.iter().map(|l| pick(l).chars().count()).max().unwrap_or(0)
    };
    let widths = [width(|l| &l.0), width(|l| &l.1), width(|l| &l.2), width(|l| &l.3), width(|l| &l.4)];
    let mut out = String::new();
    for (task, filter, metric, value, stderr) in &lines {
        out.push_str(&format!(
            "{task:<w0$}  {filter:<w1$}  {metric:<w2$}  {value:>w3$}  {stderr:>w4$}\n",
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2],
            w3 = widths[3],
            w4 = widths[4]
        ));
    }
    for verdict in verdicts {
        let mark = if verdict.passed { "PASS" } else { "FAIL" };
        out.push_str(&format!("{mark}  {}  ({})\n", verdict.requirement, verdict.explanation()));
    }
    out
}

/// XML text and attribute values: the five characters XML reserves, and no control characters but tab/newline.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' => out.push(c),
            c if c.is_control() => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

fn junit(evaluation_id: &str, verdicts: &[Verdict]) -> String {
    let failures = verdicts.iter().filter(|v| !v.passed).count();
    let suite = escape(&format!("lm-eval-aas {evaluation_id}"));
    let mut out = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites tests=\"{}\" failures=\"{failures}\">\n  <testsuite name=\"{suite}\" tests=\"{}\" failures=\"{failures}\">\n",
        verdicts.len(),
        verdicts.len()
    );
    for verdict in verdicts {
        let name = escape(&verdict.requirement.to_string());
        let class = escape(&verdict.requirement.task);
        if verdict.passed {
            out.push_str(&format!("    <testcase classname=\"{class}\" name=\"{name}\"/>\n"));
        } else {
            let message = escape(&verdict.explanation());
            out.push_str(&format!(
                "    <testcase classname=\"{class}\" name=\"{name}\">\n      <failure message=\"{message}\">{message}</failure>\n    </testcase>\n"
            ));
        }
    }
    out.push_str("  </testsuite>\n</testsuites>\n");
    out
}

/// Markdown table cells: a pipe would end the cell, a newline the row.
fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace(['\n', '\r'], " ")
}

fn markdown(evaluation_id: &str, rows: &[MetricRow], verdicts: &[Verdict]) -> String {
    let mut out = format!(
        "### Evaluation `{}`\n\n| task | filter | metric | value | ± stderr |\n|---|---|---|---:|---:|\n",
        cell(evaluation_id)
    );
    for row in rows {
        let stderr = row.stderr.map_or_else(|| "-".to_string(), |s| format!("{s:.4}"));
        out.push_str(&format!(
            "| {} | {} | {} | {} | {stderr} |\n",
            cell(&row.task),
            cell(&row.filter),
            cell(&row.metric),
            number(&row.value)
        ));
    }
    if !verdicts.is_empty() {
        out.push_str("\n| gate | result | |\n|---|---|---|\n");
        for verdict in verdicts {
            let mark = if verdict.passed { "✅ pass" } else { "❌ fail" };
            out.push_str(&format!(
                "| `{}` | {mark} | {} |\n",
                cell(&verdict.requirement.to_string()),
                cell(&verdict.explanation())
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::gate::{Requirement, judge};

    fn rows() -> Vec<MetricRow> {
        vec![MetricRow {
            task: "mc".into(),
            filter: "none".into(),
            metric: "acc".into(),
            value: json!(0.45),
            stderr: Some(0.1),
            n_shot: Some(0),
        }]
    }

    fn verdicts() -> Vec<Verdict> {
        let requirements: Vec<Requirement> =
            ["mc/acc>=0.2", "mc/acc>=0.99"].iter().map(|r| r.parse().expect("parse")).collect();
        judge(&requirements, &rows())
    }

    #[test]
    fn junit_has_one_case_per_gate_and_names_the_failing_one_with_value_and_threshold() {
        let xml = render(Format::Junit, "id-1", &rows(), &verdicts());
        assert!(xml.contains(r#"<testsuite name="lm-eval-aas id-1" tests="2" failures="1">"#), "{xml}");
        assert!(xml.contains(r#"<testcase classname="mc" name="mc/acc&gt;=0.2"/>"#), "{xml}");
        assert!(xml.contains(r#"<failure message="0.4500 is not &gt;= 0.9900">"#), "{xml}");
    }

    #[test]
    fn reports_escape_what_they_quote() {
        assert_eq!(escape("a<b>&\"'\u{7}"), "a&lt;b&gt;&amp;&quot;&apos;\u{fffd}");
        assert_eq!(cell("a|b\nc"), "a\\|b c");
        let markdown = render(Format::Markdown, "id-1", &rows(), &verdicts());
        assert!(markdown.contains("| mc | none | acc | 0.4500 | 0.1000 |"), "{markdown}");
        assert!(markdown.contains("| `mc/acc>=0.99` | ❌ fail | 0.4500 is not >= 0.9900 |"), "{markdown}");
        let json: serde_json::Value =
            serde_json::from_str(&render(Format::Json, "id-1", &rows(), &verdicts())).expect("json");
        assert_eq!((json["passed"].as_bool(), json["gates"][1]["passed"].as_bool()), (Some(false), Some(false)));
        let table = render(Format::Table, "id-1", &rows(), &verdicts());
        assert!(table.contains("FAIL  mc/acc>=0.99  (0.4500 is not >= 0.9900)"), "{table}");
    }
}
