//! The output set's index (`artifacts.json`): which files an evaluation left, under which names, and where
//! each one's bytes are kept. Pure: names in, names out.

use std::path::Path;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::{ApiError, ApiResult};

/// The index of an output set; written last, so its presence means the set is complete.
pub const INDEX: &str = "artifacts.json";
/// The reproducibility manifest.
pub const MANIFEST: &str = "manifest.json";
/// The whole log.
pub const LOG: &str = "log.txt";
/// On an object store or claim: every file of lm-eval's output directory, one after another (see `Stored`).
pub const BUNDLE: &str = "outputs.bin";
/// The objects a run writes to a store, so the only names the service ever reads there.
pub const STORED_OBJECTS: [&str; 4] = [LOG, BUNDLE, MANIFEST, INDEX];
/// The results JSON's name in the output set.
pub const RESULTS: &str = "results.json";

/// One file of an evaluation's output set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Artifact {
    /// Its name in the output set: `results.json`, `samples/<task>.jsonl`, `log.txt`, `manifest.json`, or
    /// `output/<path>` for anything else lm-eval wrote.
    #[schema(example = "samples/lmeval_aas_mc.jsonl")]
    pub path: String,
    pub size: u64,
    /// Lower-case hex SHA-256 of its bytes.
    pub sha256: String,
    pub content_type: String,
    /// For a samples file: the task whose per-sample records it holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
}

/// An artifact and where its bytes are: `size` bytes from `offset` of the stored object `object`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stored {
    #[serde(flatten)]
    pub artifact: Artifact,
    pub object: String,
    #[serde(default)]
    pub offset: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Index {
    pub artifacts: Vec<Stored>,
}

/// The list `GET …/artifacts` answers with.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ArtifactList {
    pub items: Vec<Artifact>,
}

impl Index {
    pub fn find(&self, path: &str) -> Option<&Stored> {
        self.artifacts.iter().find(|stored| stored.artifact.path == path)
    }

    pub fn samples(&self, task: &str) -> Option<&Stored> {
        self.artifacts.iter().find(|stored| stored.artifact.task.as_deref() == Some(task))
    }

    pub fn tasks_with_samples(&self) -> Vec<&str> {
        self.artifacts.iter().filter_map(|stored| stored.artifact.task.as_deref()).collect()
    }

    /// An index read back from a store, which evaluation code could have written: every name must be one
    /// the API would accept, and every object one of `objects` (or, where objects are files kept in place,
    /// any checked relative path).
    pub fn parse(bytes: &[u8], objects: Option<&[&str]>) -> Result<Self, String> {
        let index: Self = serde_json::from_slice(bytes).map_err(|e| format!("the output index is not valid: {e}"))?;
        for stored in &index.artifacts {
            checked_path(&stored.artifact.path).map_err(|e| e.to_string())?;
            let object_ok = match objects {
                Some(objects) => objects.contains(&stored.object.as_str()),
                None => checked_path(&stored.object).is_ok(),
            };
            if !object_ok || stored.offset.checked_add(stored.artifact.size).is_none() {
                return Err(format!("the output index names an object it may not: {}", stored.object));
            }
        }
        Ok(index)
    }
}

/// A path inside an evaluation's output set: relative, `/`-separated, no empty, `.` or `..` segment, no
/// backslash, NUL or control character, at most 512 bytes.
pub fn checked_path(path: &str) -> ApiResult<&str> {
    let refuse = |why: &str| Err(ApiError::invalid("path", format!("path {:?} {why}", truncated(path))));
    if path.is_empty() || path.chars().count() > 512 {
        return refuse("must be 1 to 512 characters long");
    }
    if path.starts_with('/') {
        return refuse("must be relative to the evaluation's output set");
    }
    if path.chars().any(|c| c.is_control() || c == '\\') {
        return refuse("must not hold a backslash or a control character");
    }
    if path.split('/').any(|segment| segment.is_empty() || segment == "." || segment == "..") {
        return refuse("must not have an empty, '.' or '..' segment");
    }
    Ok(path)
}

fn truncated(text: &str) -> String {
    text.chars().take(80).collect()
}

/// The name a file of lm-eval's output directory gets in the output set (`relative` to that directory),
/// and the task, for a samples file: `<model>/results_<time>.json` → `results.json`,
/// `<model>/samples_<task>_<time>.jsonl` → `samples/<task>.jsonl`, anything else `output/<relative>`.
pub fn name_of_output(relative: &str) -> (String, Option<String>) {
    let file = relative.rsplit('/').next().unwrap_or(relative);
    if let Some(rest) = file.strip_prefix("results_").and_then(|r| r.strip_suffix(".json"))
        && looks_like_timestamp(rest)
    {
        return (RESULTS.to_string(), None);
    }
    if let Some(rest) = file.strip_prefix("samples_").and_then(|r| r.strip_suffix(".jsonl"))
        && let Some((task, time)) = rest.rsplit_once('_')
        && looks_like_timestamp(time)
        && !task.is_empty()
    {
        return (format!("samples/{task}.jsonl"), Some(task.to_string()));
    }
    (format!("output/{relative}"), None)
}

/// lm-eval's file timestamps: `2026-11-30T22-17-17.970557`.
fn looks_like_timestamp(text: &str) -> bool {
    text.len() >= 19
        && text.as_bytes()[4] == b'-'
        && text.as_bytes()[10] == b'T'
        && text.starts_with(|c: char| c.is_ascii_digit())
}

pub fn content_type_of(path: &str) -> &'static str {
    let extension = Path::new(path).extension().and_then(|e| e.to_str()).unwrap_or_default();
    match extension {
        "json" => "application/json",
        "jsonl" => "application/x-ndjson",
        "txt" | "log" => "text/plain; charset=utf-8",
        "yaml" | "yml" => "application/yaml",
        "csv" => "text/csv",
        _ => "application/octet-stream",
    }
}

/// Gives each name once: of several files of the same name (two results files), the newest — the last in
/// `entries`, sorted by path, as lm-eval's names end in their time — has it, as `results::find_results` picks the
/// newest; the others keep their `output/` names.
pub fn unique_names(entries: &mut [(String, Option<String>, String)]) {
    let mut seen = std::collections::BTreeSet::new();
    for (name, task, relative) in entries.iter_mut().rev() {
        if !seen.insert(name.clone()) {
            *name = format!("output/{relative}");
            *task = None;
            seen.insert(name.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lm_evals_files_get_stable_names() {
        assert_eq!(name_of_output("m/results_2026-11-30T22-17-17.970557.json"), ("results.json".into(), None));
        assert_eq!(
            name_of_output("m/samples_lmeval_aas_mc_2026-11-30T22-17-17.970557.jsonl"),
            ("samples/lmeval_aas_mc.jsonl".into(), Some("lmeval_aas_mc".into()))
        );
        assert_eq!(name_of_output("m/notes.txt"), ("output/m/notes.txt".into(), None));
        assert_eq!(name_of_output("m/samples_x.jsonl"), ("output/m/samples_x.jsonl".into(), None));
    }

    #[test]
    fn of_two_results_files_the_newest_is_results_json() {
        let older = "m/results_2026-11-30T10-00-00.000001.json";
        let newer = "m/results_2026-11-30T12-00-00.000001.json";
        let mut entries: Vec<(String, Option<String>, String)> =
            [older, newer].iter().map(|r| (name_of_output(r).0, None, r.to_string())).collect();
        unique_names(&mut entries);
        assert_eq!(entries[1].0, "results.json");
        assert_eq!(entries[0].0, format!("output/{older}"));
    }

    #[test]
    fn hostile_paths_are_refused_naming_the_field() {
        for path in ["", "/etc/passwd", "../x", "a/../b", "a//b", "a/./b", "a\\b", "a\0b", "a/\n", &"x".repeat(513)] {
            let error = checked_path(path).expect_err(path);
            assert_eq!((error.status().as_u16(), error.field()), (422, Some("path")), "{path:?}");
        }
        for path in ["log.txt", "samples/t.jsonl", "output/m/a b.json", "é/ü"] {
            assert_eq!(checked_path(path).ok(), Some(path));
        }
    }

    #[test]
    fn an_index_from_a_store_may_name_only_its_objects() {
        let index = |object: &str, path: &str| {
            format!(
                r#"{{"artifacts": [{{"path": "{path}", "size": 1, "sha256": "00", "content_type": "text/plain", "object": "{object}", "offset": 0}}]}}"#
            )
        };
        assert!(Index::parse(index("outputs.bin", "log.txt").as_bytes(), Some(&STORED_OBJECTS)).is_ok());
        assert!(Index::parse(index("../other/outputs.bin", "log.txt").as_bytes(), Some(&STORED_OBJECTS)).is_err());
        assert!(Index::parse(index("output/m/r.json", "results.json").as_bytes(), None).is_ok());
        assert!(Index::parse(index("../x", "results.json").as_bytes(), None).is_err());
        assert!(Index::parse(index("outputs.bin", "../../etc").as_bytes(), Some(&STORED_OBJECTS)).is_err());
    }
}
