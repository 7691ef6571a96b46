//! The run record: what the in-pod driver keeps in its ConfigMap (progress, exit status, results, the
//! log's tail) and reads back. Pure: ConfigMap data in, ConfigMap data out.

use std::collections::BTreeMap;
use std::io::{Read, Write};

use bytes::Bytes;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::model::{ExitStatus, Progress, Reason};

const PROGRESS: &str = "progress";
const EXIT: &str = "exit";
const FAILURE: &str = "failure";
const LOG: &str = "log";
const RESULTS: &str = "results.json";
const RESULTS_GZ: &str = "results.json.gz";
/// Present when the output set went to the output store: then `results.json` holds only the sections
/// metrics are read from, and the whole results are in the store.
const OUTPUTS: &str = "outputs";
const STORED: &str = "stored";

/// The most log kept once the pod is gone.
pub const LOG_TAIL_BYTES: usize = 256 * 1024;
/// A ConfigMap holds at most 1 MiB; the rest is room for keys and metadata.
pub const RECORD_BUDGET_BYTES: usize = 1_000_000;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunRecord {
    pub progress: Option<Progress>,
    pub exit: Option<ExitStatus>,
    /// A failure the driver itself detected: `(reason, message)`.
    pub failure: Option<(Reason, String)>,
    pub log_tail: Option<String>,
    /// The results JSON exactly as lm-eval wrote it (its summary when `stored_outputs`).
    pub results: Option<Bytes>,
    /// The output set is in the output store.
    pub stored_outputs: bool,
}

impl RunRecord {
    pub fn from_config_map(config_map: &ConfigMap) -> Self {
        let data = config_map.data.as_ref();
        let text = |key: &str| data.and_then(|d| d.get(key));
        let results = match text(RESULTS) {
            Some(json) => Some(Bytes::from(json.clone())),
            None => config_map.binary_data.as_ref().and_then(|b| b.get(RESULTS_GZ)).and_then(|gz| gunzip(&gz.0)),
        };
        Self {
            progress: text(PROGRESS).and_then(|p| serde_json::from_str(p).ok()),
            exit: text(EXIT).and_then(|e| serde_json::from_str(e).ok()),
            failure: failure_in(config_map),
            log_tail: text(LOG).cloned(),
            results,
            stored_outputs: text(OUTPUTS).is_some_and(|o| o == STORED),
        }
    }

    /// What an evaluation's status is computed from, small enough to keep thousands of: the log's last lines
    /// and, of the results, only the sections its metrics are read from.
    pub fn summary(&self) -> Self {
        let results = self.results.as_deref().and_then(results_summary);
        Self {
            progress: self.progress,
            exit: self.exit,
            failure: self.failure.clone(),
            log_tail: self
                .log_tail
                .as_deref()
                .map(|tail| crate::lifecycle::last_lines(tail, crate::lifecycle::LAST_LOG_LINES)),
            results,
            stored_outputs: self.stored_outputs,
        }
    }

    /// The ConfigMap's `data` and `binaryData`: results raw when they fit next to the log tail, else
    /// gzipped, else a `ResultsTooLarge` failure in their place.
    pub fn to_data(&self) -> (BTreeMap<String, String>, BTreeMap<String, ByteString>) {
        let mut data = BTreeMap::new();
        let mut binary = BTreeMap::new();
        if let Some(progress) = &self.progress {
            data.insert(PROGRESS.into(), serde_json::to_string(progress).unwrap_or_default());
        }
        if let Some(exit) = &self.exit {
            data.insert(EXIT.into(), serde_json::to_string(exit).unwrap_or_default());
        }
        let log = self.log_tail.as_deref().unwrap_or_default();
        let mut failure = self.failure.clone();
        if let Some(results) = &self.results {
            let room = RECORD_BUDGET_BYTES.saturating_sub(log.len() + 1024);
            if results.len() <= room && std::str::from_utf8(results).is_ok() {
                data.insert(RESULTS.into(), String::from_utf8_lossy(results).into_owned());
            } else {
                let gz = gzip(results);
                if gz.len() <= room {
                    binary.insert(RESULTS_GZ.into(), ByteString(gz));
                } else if !self.stored_outputs {
                    // With the output set in a store, the whole results are there; only the metrics shown in
                    // the status are missing.
                    failure = Some((
                        Reason::ResultsTooLarge,
                        format!(
                            "the results JSON is {} bytes ({} gzipped); a ConfigMap holds at most {} next to the log",
                            results.len(),
                            gz.len(),
                            room
                        ),
                    ));
                }
            }
        }
        if self.stored_outputs {
            data.insert(OUTPUTS.into(), STORED.into());
        }
        if let Some(failure) = &failure {
            data.insert(FAILURE.into(), serde_json::to_string(failure).unwrap_or_default());
        }
        if self.log_tail.is_some() {
            data.insert(LOG.into(), log.to_string());
        }
        (data, binary)
    }

    /// The ConfigMap holding this record, under `metadata`.
    pub fn to_config_map(&self, metadata: ObjectMeta) -> ConfigMap {
        let (data, binary) = self.to_data();
        ConfigMap {
            metadata,
            data: Some(data),
            binary_data: (!binary.is_empty()).then_some(binary),
            ..ConfigMap::default()
        }
    }
}

/// Of lm-eval's results, only the sections an evaluation's metrics are read from.
pub fn results_summary(results: &[u8]) -> Option<Bytes> {
    let all = serde_json::from_slice::<serde_json::Value>(results).ok()?;
    let kept = serde_json::json!({"results": all.get("results"), "n-shot": all.get("n-shot")});
    Some(Bytes::from(kept.to_string()))
}

/// The failure a run record ConfigMap holds, if any (without decoding its results).
pub fn failure_in(config_map: &ConfigMap) -> Option<(Reason, String)> {
    config_map.data.as_ref()?.get(FAILURE).and_then(|f| serde_json::from_str(f).ok())
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let _ = encoder.write_all(bytes);
    encoder.finish().unwrap_or_default()
}

fn gunzip(bytes: &[u8]) -> Option<Bytes> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes).read_to_end(&mut out).ok()?;
    Some(Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(record: &RunRecord) -> RunRecord {
        RunRecord::from_config_map(&record.to_config_map(ObjectMeta::default()))
    }

    #[test]
    fn small_results_stay_readable_and_round_trip() {
        let record = RunRecord {
            progress: Some(Progress { percent: 50.0, completed: 1, total: 2 }),
            exit: Some(ExitStatus::SUCCESS),
            failure: None,
            log_tail: Some("a\nb\n".into()),
            results: Some(Bytes::from_static(br#"{"results": {}}"#)),
            stored_outputs: true,
        };
        assert!(record.to_data().0.contains_key(RESULTS));
        assert_eq!(round_trip(&record), record);
    }

    #[test]
    fn large_results_are_gzipped_and_huge_ones_fail_clearly() {
        let repetitive = format!("[{}]", vec!["0.5"; 400_000].join(","));
        let record = RunRecord { results: Some(Bytes::from(repetitive.clone())), ..RunRecord::default() };
        let (data, binary) = record.to_data();
        assert!(!data.contains_key(RESULTS) && binary.contains_key(RESULTS_GZ));
        assert_eq!(round_trip(&record).results.as_deref(), Some(repetitive.as_bytes()));

        // Incompressible: every byte pseudo-random hex.
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let noise: String = (0..3_000_000)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                char::from(b"0123456789abcdef"[(state % 16) as usize])
            })
            .collect();
        let record = RunRecord { results: Some(Bytes::from(noise)), ..RunRecord::default() };
        let back = round_trip(&record);
        assert_eq!(back.results, None);
        assert_eq!(back.failure.map(|f| f.0), Some(Reason::ResultsTooLarge));
        let stored = round_trip(&RunRecord { stored_outputs: true, ..record });
        assert_eq!(
            (stored.results, stored.failure, stored.stored_outputs),
            (None, None, true),
            "in the store, not too large"
        );
    }
}
