//! Per-sample records (lm-eval's `samples_<task>_*.jsonl`): splitting a stream of bytes into records with
//! their offsets, and the correct/incorrect filter. Pure: bytes in, records' places and verdicts out.
//!
//! A record is never held: the scanner reads it byte by byte as it streams past and keeps only what the filter
//! needs of its top level (the first name of its `metrics` list and the numbers next to it, each at most
//! `MAX_NAME_BYTES`), so a record of any length costs the same small memory. Nested values are only counted in
//! and out of; the record is checked to be one JSON object, not fully validated (lm-eval wrote it with `json`).

use serde::Deserialize;
use utoipa::ToSchema;

/// The longest top-level key, first metric name or number the filter keeps of a record (longer ones are never
/// the metric asked for).
pub const MAX_NAME_BYTES: usize = 1024;
/// How many top-level numbers the filter keeps of a record before it has read its `metrics` list (lm-eval
/// writes the list first, and a handful of numbers).
const MAX_NUMBERS: usize = 64;

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

    /// Whether `record` (one whole record) is kept; an error when the filter means nothing for it (its metric
    /// is not 0 or 1).
    pub fn keeps(&self, record: &[u8]) -> Result<bool, String> {
        let mut records = Records::starting_at(0, self.clone());
        let mut found = records.push(record);
        found.extend(records.finish());
        match found.as_slice() {
            [one] => one.kept.clone(),
            _ => Err("a sample record is not JSON: not one line".into()),
        }
    }

    /// The verdict on a record whose top level held `facts`.
    fn judge(&self, facts: &Facts) -> Result<bool, String> {
        let Some(outcome) = self.outcome else { return Ok(true) };
        let metric = match (&self.metric, &facts.first_metric) {
            (Some(metric), _) | (None, Some(metric)) => metric.as_str(),
            (None, None) => return Err("a sample record names no metric; pass metric=NAME".into()),
        };
        let value = facts
            .numbers
            .iter()
            .rev()
            .find(|(key, _)| key == metric)
            .and_then(|(_, raw)| serde_json::from_slice::<serde_json::Value>(raw).ok())
            .and_then(|value| value.as_f64());
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

/// Where a record is and the filter's verdict on it.
#[derive(Debug, PartialEq, Eq)]
pub struct Record {
    pub start: u64,
    /// Where the next record starts (past the newline).
    pub end: u64,
    /// Its bytes, without the newline: `start..start + length`.
    pub length: u64,
    pub kept: Result<bool, String>,
}

/// What a record's top level told the filter.
#[derive(Debug, Default)]
struct Facts {
    first_metric: Option<String>,
    /// Top-level keys (decoded) with the raw text of their scalar values, only those the filter may need.
    numbers: Vec<(String, Vec<u8>)>,
}

/// Up to `MAX_NAME_BYTES` of a token; longer ones are marked, never used.
#[derive(Debug, Default)]
struct Capture {
    bytes: Vec<u8>,
    too_long: bool,
}

impl Capture {
    fn push(&mut self, byte: u8) {
        if self.bytes.len() < MAX_NAME_BYTES {
            self.bytes.push(byte);
        } else {
            self.too_long = true;
        }
    }

    /// The captured text, taken; as a JSON string's contents, decoded.
    fn take_string(&mut self) -> Option<String> {
        let bytes = std::mem::take(&mut self.bytes);
        if std::mem::take(&mut self.too_long) {
            return None;
        }
        let quoted = [&b"\""[..], &bytes, b"\""].concat();
        serde_json::from_slice(&quoted).ok()
    }

    fn take_raw(&mut self) -> Option<Vec<u8>> {
        let bytes = std::mem::take(&mut self.bytes);
        (!std::mem::take(&mut self.too_long)).then_some(bytes)
    }
}

/// Where the scan of a record is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum At {
    /// Before the record's `{`.
    Before,
    /// In the top-level object, where a key (or its end) comes.
    KeyNext,
    /// In a top-level key; `escaped` after a backslash.
    Key { escaped: bool },
    /// After a top-level key, before its `:`.
    Colon,
    /// After a `:`, before the value.
    ValueNext,
    /// In a top-level string value.
    Text { escaped: bool },
    /// In a top-level scalar (number, `true`, `false`, `null`).
    Scalar,
    /// After a top-level value, before `,` or `}`.
    ValueDone,
    /// In a nested array or object, `depth` deep (1: directly in the top-level value).
    Nested { depth: u64, string: bool, escaped: bool },
    /// After the record's closing `}`.
    After,
    /// Not a JSON object.
    Broken(&'static str),
}

/// The scan of the record being read.
#[derive(Debug)]
struct Scan {
    /// The metric the filter was asked for, if any.
    metric: Option<String>,
    at: At,
    key: Capture,
    scalar: Capture,
    /// The current top-level key decoded, once it has ended.
    current_key: Option<String>,
    /// In the `metrics` array, its first element: not yet seen, being read, or done with.
    first: First,
    name: Capture,
    facts: Facts,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum First {
    Idle,
    Waiting,
    Reading { escaped: bool },
}

impl Scan {
    fn new(metric: Option<String>) -> Self {
        Self {
            metric,
            at: At::Before,
            key: Capture::default(),
            scalar: Capture::default(),
            current_key: None,
            first: First::Idle,
            name: Capture::default(),
            facts: Facts::default(),
        }
    }

    fn is_space(byte: u8) -> bool {
        matches!(byte, b' ' | b'\t' | b'\r')
    }

    /// Reads `bytes`, all within one record (no newline).
    fn read(&mut self, bytes: &[u8]) {
        let mut i = 0;
        while i < bytes.len() {
            if let At::Broken(_) = self.at {
                return;
            }
            if let At::Nested { string: true, escaped: false, .. } = self.at
                && !matches!(self.first, First::Reading { .. })
            {
                i += skip_text(&bytes[i..]);
                if i == bytes.len() {
                    return;
                }
            }
            let byte = bytes[i];
            i += 1;
            self.at = match self.at {
                At::Before if Self::is_space(byte) => At::Before,
                At::Before if byte == b'{' => At::KeyNext,
                At::Before => At::Broken("it is not a JSON object"),
                At::KeyNext if Self::is_space(byte) => At::KeyNext,
                At::KeyNext if byte == b'"' => At::Key { escaped: false },
                At::KeyNext if byte == b'}' => At::After,
                At::Key { escaped: true } => {
                    self.key.push(byte);
                    At::Key { escaped: false }
                }
                At::Key { escaped: false } if byte == b'"' => {
                    self.current_key = self.key.take_string();
                    At::Colon
                }
                At::Key { escaped: false } => {
                    self.key.push(byte);
                    At::Key { escaped: byte == b'\\' }
                }
                At::Colon if Self::is_space(byte) => At::Colon,
                At::Colon if byte == b':' => At::ValueNext,
                At::ValueNext if Self::is_space(byte) => At::ValueNext,
                At::ValueNext if byte == b'"' => At::Text { escaped: false },
                At::ValueNext if byte == b'{' || byte == b'[' => {
                    let first_metric_list = byte == b'[' && self.current_key.as_deref() == Some("metrics");
                    if first_metric_list && self.facts.first_metric.is_none() {
                        self.first = First::Waiting;
                    }
                    At::Nested { depth: 1, string: false, escaped: false }
                }
                At::ValueNext if matches!(byte, b',' | b'}' | b']' | b':') => At::Broken("a key has no value"),
                At::ValueNext => {
                    self.scalar.push(byte);
                    At::Scalar
                }
                At::Text { escaped: true } => At::Text { escaped: false },
                At::Text { escaped: false } if byte == b'"' => At::ValueDone,
                At::Text { escaped: false } if byte == b'\\' => At::Text { escaped: true },
                At::Text { escaped: false } => {
                    // The bulk of a record is in strings: skip to the next quote or backslash.
                    i += skip_text(&bytes[i..]);
                    At::Text { escaped: false }
                }
                At::Scalar if byte == b',' || byte == b'}' || Self::is_space(byte) => {
                    self.end_scalar();
                    match byte {
                        b',' => At::KeyNext,
                        b'}' => At::After,
                        _ => At::ValueDone,
                    }
                }
                At::Scalar => {
                    self.scalar.push(byte);
                    At::Scalar
                }
                At::ValueDone if Self::is_space(byte) => At::ValueDone,
                At::ValueDone if byte == b',' => At::KeyNext,
                At::ValueDone if byte == b'}' => At::After,
                At::Nested { depth, string, escaped } => self.nested(depth, string, escaped, byte),
                At::After if Self::is_space(byte) => At::After,
                At::After => At::Broken("more follows its object"),
                _ => At::Broken("its top level is not key: value, …"),
            };
        }
    }

    /// One byte inside a nested value; only the `metrics` list's first element is kept.
    fn nested(&mut self, depth: u64, string: bool, escaped: bool, byte: u8) -> At {
        if let First::Reading { escaped: in_escape } = self.first {
            if !in_escape && byte == b'"' {
                self.facts.first_metric = self.name.take_string();
                self.first = First::Idle;
            } else {
                self.name.push(byte);
                self.first = First::Reading { escaped: !in_escape && byte == b'\\' };
            }
        } else if self.first == First::Waiting && !Self::is_space(byte) {
            self.first = if byte == b'"' && depth == 1 { First::Reading { escaped: false } } else { First::Idle };
        }
        if string {
            return match (escaped, byte) {
                (true, _) => At::Nested { depth, string, escaped: false },
                (false, b'"') => At::Nested { depth, string: false, escaped: false },
                (false, b) => At::Nested { depth, string, escaped: b == b'\\' },
            };
        }
        match byte {
            b'"' => At::Nested { depth, string: true, escaped: false },
            b'{' | b'[' => At::Nested { depth: depth + 1, string, escaped },
            b'}' | b']' if depth == 1 => {
                self.first = First::Idle;
                At::ValueDone
            }
            b'}' | b']' => At::Nested { depth: depth - 1, string, escaped },
            _ => At::Nested { depth, string, escaped },
        }
    }

    fn end_scalar(&mut self) {
        let raw = self.scalar.take_raw();
        if let (Some(key), Some(raw)) = (self.current_key.take(), raw)
            && self.may_need(&key)
        {
            self.facts.numbers.push((key, raw));
        }
    }

    /// Whether the value of top-level `key` may be the one that decides.
    fn may_need(&self, key: &str) -> bool {
        match (&self.metric, &self.facts.first_metric) {
            (Some(metric), _) | (None, Some(metric)) => key == metric,
            (None, None) => self.facts.numbers.len() < MAX_NUMBERS,
        }
    }

    /// The facts, once the record has ended; an error if it was not one whole JSON object.
    fn end(self) -> Result<Facts, String> {
        match self.at {
            At::After => Ok(self.facts),
            At::Broken(why) => Err(format!("a sample record is not JSON: {why}")),
            _ => Err("a sample record is not JSON: it ends before its object does".into()),
        }
    }
}

/// How many bytes of a string's inside come before its next quote or backslash.
fn skip_text(bytes: &[u8]) -> usize {
    bytes.iter().position(|&b| b == b'"' || b == b'\\').unwrap_or(bytes.len())
}

/// Splits chunks of a samples file into records (lines without their end), each with the offset where it
/// starts, where the next one does, and the filter's verdict; holds none of them.
#[derive(Debug)]
pub struct Records {
    filter: SampleFilter,
    /// The file offset of the next byte pushed.
    at: u64,
    /// Where the record being read starts, and how much of it has been read.
    start: u64,
    length: u64,
    scan: Scan,
}

impl Records {
    pub fn starting_at(offset: u64, filter: SampleFilter) -> Self {
        let scan = Scan::new(filter.metric.clone());
        Self { filter, at: offset, start: offset, length: 0, scan }
    }

    /// The records `chunk` ends.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<Record> {
        let mut records = Vec::new();
        let mut rest = chunk;
        while let Some(newline) = rest.iter().position(|&b| b == b'\n') {
            self.read(&rest[..newline]);
            self.at += 1;
            records.extend(self.end_record());
            rest = &rest[newline + 1..];
        }
        self.read(rest);
        records
    }

    /// The last record, when the file does not end in a newline.
    pub fn finish(&mut self) -> Option<Record> {
        self.end_record()
    }

    fn read(&mut self, bytes: &[u8]) {
        if !self.filter.keeps_everything() {
            self.scan.read(bytes);
        }
        self.length += bytes.len() as u64;
        self.at += bytes.len() as u64;
    }

    fn end_record(&mut self) -> Option<Record> {
        let scan = std::mem::replace(&mut self.scan, Scan::new(self.filter.metric.clone()));
        let (start, length) = (self.start, std::mem::take(&mut self.length));
        self.start = self.at;
        if length == 0 {
            return None;
        }
        let kept =
            if self.filter.keeps_everything() { Ok(true) } else { scan.end().and_then(|f| self.filter.judge(&f)) };
        Some(Record { start, end: self.at, length, kept })
    }
}

/// The kept records of a page cut out of its bytes as they stream past: the bytes of each span (sorted, not
/// overlapping), each followed by a newline.
#[derive(Debug)]
pub struct KeptBytes {
    spans: std::collections::VecDeque<std::ops::Range<u64>>,
    /// The file offset of the next byte pushed.
    at: u64,
}

impl KeptBytes {
    pub fn new(start: u64, spans: Vec<std::ops::Range<u64>>) -> Self {
        Self { spans: spans.into(), at: start }
    }

    pub fn push(&mut self, chunk: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let (chunk_start, chunk_end) = (self.at, self.at + chunk.len() as u64);
        while let Some(span) = self.spans.front() {
            if span.start >= chunk_end {
                break;
            }
            let (from, to) = (span.start.max(chunk_start), span.end.min(chunk_end));
            if from < to {
                #[allow(clippy::cast_possible_truncation)] // within the chunk
                out.extend_from_slice(&chunk[(from - chunk_start) as usize..(to - chunk_start) as usize]);
            }
            if span.end > chunk_end {
                break;
            }
            out.push(b'\n');
            self.spans.pop_front();
        }
        self.at = chunk_end;
        out
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

    fn correct() -> SampleFilter {
        SampleFilter { outcome: Some(Outcome::Correct), metric: None }
    }

    #[test]
    fn records_keep_their_offsets_across_chunks() {
        let mut records = Records::starting_at(10, SampleFilter::default());
        let first = records.push(b"{\"a\":1}\n{\"b\"");
        assert_eq!(first, vec![Record { start: 10, end: 18, length: 7, kept: Ok(true) }]);
        let second = records.push(b":2}\n\n{\"c\":3}");
        assert_eq!(second, vec![Record { start: 18, end: 26, length: 7, kept: Ok(true) }]);
        assert_eq!(records.finish(), Some(Record { start: 27, end: 34, length: 7, kept: Ok(true) }));
        assert_eq!(records.finish(), None);
    }

    #[test]
    fn the_filter_follows_the_records_metric_and_refuses_a_graded_one() {
        let wrong = SampleFilter { outcome: Some(Outcome::Incorrect), metric: None };
        let right_answer = br#"{"doc_id": 0, "metrics": ["acc", "acc_norm"], "acc": 1.0, "acc_norm": 0.0}"#;
        assert_eq!(correct().keeps(right_answer), Ok(true));
        assert_eq!(wrong.keeps(right_answer), Ok(false));
        let by_norm = SampleFilter { outcome: Some(Outcome::Correct), metric: Some("acc_norm".into()) };
        assert_eq!(by_norm.keeps(right_answer), Ok(false));
        let graded = br#"{"metrics": ["bleu"], "bleu": 0.37}"#;
        assert!(correct().keeps(graded).expect_err("graded").contains("not 0 or 1"));
        assert!(SampleFilter::default().keeps(b"not even json").expect("no filter"));
        assert!(by_norm.keeps(br#"{"acc": 1}"#).is_err());
    }

    #[test]
    fn the_scanner_reads_what_lm_eval_writes_wherever_the_metric_is() {
        // lm-eval's own shape: nested documents, strings with quotes, escapes and brackets, the metric last.
        let record = br#"{"doc_id": 3, "doc": {"q": "a \"[quoted]\" {brace}\\", "choices": [["x"], {"y": [1, 2]}]}, "target": "}", "arguments": {"gen_args_0": {"arg_0": "Q: \u00e9?", "arg_1": " yes"}}, "resps": [[[-1.5, false]]], "filtered_resps": [[-1.5, false]], "filter": "none", "metrics": ["acc"], "doc_hash": "ab", "acc" : 0.0 }"#;
        assert_eq!(correct().keeps(record), Ok(false));
        // The value before its list, an escaped key, another metric named, a duplicate key (the last counts).
        assert_eq!(correct().keeps(br#"{"acc": 1, "metrics": ["acc"]}"#), Ok(true));
        assert_eq!(correct().keeps(br#"{"metrics": ["ex\u0061ct"], "exact": true, "exact": 1}"#), Ok(true));
        assert_eq!(correct().keeps(br#"{"metrics":["m"],"m":1,"m":0}"#), Ok(false));
        let named = SampleFilter { outcome: Some(Outcome::Correct), metric: Some("f1".into()) };
        assert_eq!(named.keeps(br#"{"metrics": ["acc"], "acc": 0, "f1": 1.0}"#), Ok(true));
        // Only a string first in `metrics` names the metric, and only the top-level list counts.
        assert!(
            correct().keeps(br#"{"metrics": [["acc"]], "acc": 1}"#).expect_err("nested").contains("names no metric")
        );
        assert!(correct().keeps(br#"{"doc": {"metrics": ["acc"]}, "acc": 1}"#).is_err());
        assert!(
            correct().keeps(br#"{"metrics": ["acc"], "acc": "1"}"#).expect_err("a string").contains("no metric acc")
        );
    }

    #[test]
    fn a_record_that_is_not_one_object_is_an_error() {
        for broken in [
            &br#"[1, 2]"#[..],
            br#"{"metrics": ["acc"], "acc": 1"#,
            br#"{"metrics": ["acc"], "acc": 1} {}"#,
            br#"{"metrics": ["acc"], "acc": }"#,
            br#"{"metrics" ["acc"], "acc": 1}"#,
            br#"{"metrics": ["acc"], "doc": "unended}"#,
            br#"{"metrics": ["acc"], "doc": [1, 2}"#,
            b"   ",
        ] {
            let error = correct().keeps(broken).expect_err(&String::from_utf8_lossy(broken));
            assert!(error.starts_with("a sample record is not JSON"), "{error}");
        }
    }

    #[test]
    fn a_huge_record_is_judged_chunk_by_chunk_without_being_held() {
        // 64 MiB of numbers (about 1 GiB as a serde_json::Value tree), pushed 64 KiB at a time.
        let mut records = Records::starting_at(0, correct());
        assert!(records.push(br#"{"doc_id": 0, "metrics": ["acc"], "resps": ["#).is_empty());
        let numbers = b"0,".repeat(32 * 1024);
        for _ in 0..1024 {
            assert!(records.push(&numbers).is_empty());
            assert!(records.scan.facts.numbers.len() <= 1 && records.scan.key.bytes.len() <= MAX_NAME_BYTES);
        }
        let found = records.push(b"0], \"acc\": 1.0}\n{\"metrics\": [\"acc\"], \"acc\": 0}\n");
        assert_eq!(found.iter().map(|r| r.kept.clone()).collect::<Vec<_>>(), [Ok(true), Ok(false)]);
        assert_eq!(found[0].length, found[0].end - 1);
        // Keys and names longer than the capture are never the metric, and are not held either.
        let long = format!(r#"{{"metrics": ["{0}"], "{0}": 1}}"#, "k".repeat(MAX_NAME_BYTES + 1));
        assert!(correct().keeps(long.as_bytes()).expect_err("long").contains("names no metric"));
    }

    #[test]
    fn kept_bytes_are_cut_out_of_chunks_with_their_newlines() {
        let file = b"aaa\nbbb\nccc\nddd";
        let mut kept = KeptBytes::new(4, vec![4..7, 12..15]);
        let mut out = Vec::new();
        for chunk in file[4..].chunks(3) {
            out.extend(kept.push(chunk));
        }
        assert_eq!(out, b"bbb\nddd\n");
        let mut whole = KeptBytes::new(0, vec![0..3, 8..11]);
        assert_eq!(whole.push(file), b"aaa\nccc\n");
    }

    #[test]
    fn page_tokens_round_trip_and_refuse_garbage() {
        assert_eq!(parse_page_token(&page_token(12345)), Some(12345));
        for garbage in ["", "o", "12", "o-1", "ox"] {
            assert_eq!(parse_page_token(garbage), None, "{garbage}");
        }
    }
}
