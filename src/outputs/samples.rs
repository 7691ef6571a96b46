//! Per-sample records (lm-eval's `samples_<task>_*.jsonl`): splitting a stream of bytes into records with
//! their offsets, and the correct/incorrect filter. Pure: bytes in, records and verdicts out.

use serde::Deserialize;
use utoipa::ToSchema;

/// The longest record read: a record is one document with its prompts and responses.
pub const MAX_RECORD_BYTES: usize = 64 * 1024 * 1024;

/// Whether a sample was scored right or wrong (`SampleOutcome` in the OpenAPI document).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
#[schema(as = SampleOutcome)]
pub enum Outcome {
    /// The sample's metric is 1 (right).
    Correct,
    /// The sample's metric is 0 (wrong).
    Incorrect,
}

/// Which records a page keeps.
#[derive(Debug, Clone, Default)]
pub struct SampleFilter {
    pub outcome: Option<Outcome>,
    /// The metric that decides; by default the first of the record's own `metrics` list.
    pub metric: Option<String>,
}

impl SampleFilter {
    pub fn keeps_everything(&self) -> bool {
        self.outcome.is_none()
    }

    /// Whether `record` is kept; an error when the filter means nothing for it (its metric is not 0 or 1).
    pub fn keeps(&self, record: &[u8]) -> Result<bool, String> {
        let Some(outcome) = self.outcome else { return Ok(true) };
        let record: serde_json::Value =
            serde_json::from_slice(record).map_err(|e| format!("a sample record is not JSON: {e}"))?;
        let metric = match &self.metric {
            Some(metric) => metric.as_str(),
            None => record
                .get("metrics")
                .and_then(|m| m.as_array())
                .and_then(|m| m.first())
                .and_then(|m| m.as_str())
                .ok_or("a sample record names no metric; pass metric=NAME")?,
        };
        let value = record.get(metric).and_then(serde_json::Value::as_f64);
        let right = match value {
            Some(1.0) => true,
            Some(0.0) => false,
            Some(v) => {
                return Err(format!(
                    "metric {metric} is {v} for a sample, not 0 or 1: right and wrong mean nothing for it"
                ));
            }
            None => return Err(format!("the task's samples have no metric {metric}")),
        };
        Ok(right == (outcome == Outcome::Correct))
    }
}

/// Splits chunks of a samples file into records (lines without their end), each with the offset where it
/// starts and where the next one does.
#[derive(Debug)]
pub struct Records {
    pending: Vec<u8>,
    /// The file offset of `pending`'s first byte.
    at: u64,
}

#[derive(Debug, PartialEq, Eq)]
pub struct Record {
    pub start: u64,
    pub end: u64,
    pub bytes: Vec<u8>,
}

impl Records {
    pub fn starting_at(offset: u64) -> Self {
        Self { pending: Vec::new(), at: offset }
    }

    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<Record>, String> {
        let mut records = Vec::new();
        let mut rest = chunk;
        while let Some(newline) = rest.iter().position(|&b| b == b'\n') {
            self.pending.extend_from_slice(&rest[..newline]);
            rest = &rest[newline + 1..];
            let bytes = std::mem::take(&mut self.pending);
            let start = self.at;
            self.at += bytes.len() as u64 + 1;
            if !bytes.is_empty() {
                records.push(Record { start, end: self.at, bytes });
            }
        }
        self.pending.extend_from_slice(rest);
        if self.pending.len() > MAX_RECORD_BYTES {
            return Err(format!("a sample record is longer than {MAX_RECORD_BYTES} bytes"));
        }
        Ok(records)
    }

    /// The last record, when the file does not end in a newline.
    pub fn finish(&mut self) -> Option<Record> {
        if self.pending.is_empty() {
            return None;
        }
        let bytes = std::mem::take(&mut self.pending);
        let start = self.at;
        self.at += bytes.len() as u64;
        Some(Record { start, end: self.at, bytes })
    }
}

/// Where a page starts, as a token a client hands back: the byte offset of its first record.
pub fn page_token(offset: u64) -> String {
    format!("o{offset}")
}

pub fn parse_page_token(token: &str) -> Option<u64> {
    token.strip_prefix('o')?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_keep_their_offsets_across_chunks() {
        let mut records = Records::starting_at(10);
        let first = records.push(b"{\"a\":1}\n{\"b\"").expect("push");
        assert_eq!(first, vec![Record { start: 10, end: 18, bytes: b"{\"a\":1}".to_vec() }]);
        let second = records.push(b":2}\n\n{\"c\":3}").expect("push");
        assert_eq!(second, vec![Record { start: 18, end: 26, bytes: b"{\"b\":2}".to_vec() }]);
        assert_eq!(records.finish(), Some(Record { start: 27, end: 34, bytes: b"{\"c\":3}".to_vec() }));
    }

    #[test]
    fn the_filter_follows_the_records_metric_and_refuses_a_graded_one() {
        let correct = SampleFilter { outcome: Some(Outcome::Correct), metric: None };
        let wrong = SampleFilter { outcome: Some(Outcome::Incorrect), metric: None };
        let right_answer = br#"{"doc_id": 0, "metrics": ["acc", "acc_norm"], "acc": 1.0, "acc_norm": 0.0}"#;
        assert_eq!(correct.keeps(right_answer), Ok(true));
        assert_eq!(wrong.keeps(right_answer), Ok(false));
        let by_norm = SampleFilter { outcome: Some(Outcome::Correct), metric: Some("acc_norm".into()) };
        assert_eq!(by_norm.keeps(right_answer), Ok(false));
        let graded = br#"{"metrics": ["bleu"], "bleu": 0.37}"#;
        assert!(correct.keeps(graded).expect_err("graded").contains("not 0 or 1"));
        assert!(SampleFilter::default().keeps(b"not even json").expect("no filter"));
        assert!(by_norm.keeps(br#"{"acc": 1}"#).is_err());
    }

    #[test]
    fn page_tokens_round_trip_and_refuse_garbage() {
        assert_eq!(parse_page_token(&page_token(12345)), Some(12345));
        for garbage in ["", "o", "12", "o-1", "ox"] {
            assert_eq!(parse_page_token(garbage), None, "{garbage}");
        }
    }
}
