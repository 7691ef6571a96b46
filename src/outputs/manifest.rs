//! The reproducibility manifest (`manifest.json`): what it takes to run an evaluation again and to know
//! it ran the same — lm-eval's version, the runner image, the exact argv, the request, hashes of every task
//! configuration lm-eval resolved and of the inline task files, seeds, lm-eval's git hash and the model's
//! identity, start and end. Pure: facts in, JSON out.

use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::model::ExitStatus;

pub struct RunFacts<'a> {
    pub argv: &'a [String],
    pub runner_image: Option<&'a str>,
    pub request: Option<Value>,
    /// lm-eval's results JSON, when it wrote one.
    pub results: Option<&'a Value>,
    /// `(file name, SHA-256)` of each inline task file.
    pub inline_tasks: Vec<(String, String)>,
    pub started_at: OffsetDateTime,
    pub finished_at: OffsetDateTime,
    pub exit: ExitStatus,
}

/// Lower-case hex SHA-256, the way the project writes digests (see `IdempotencyKey`).
pub fn sha256_hex(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

pub fn manifest(facts: &RunFacts<'_>) -> Value {
    let results = facts.results;
    let field = |name: &str| results.and_then(|r| r.get(name)).cloned().unwrap_or(Value::Null);
    let task_configs: Map<String, Value> = results
        .and_then(|r| r.get("configs"))
        .and_then(Value::as_object)
        .map(|configs| {
            configs
                .iter()
                .map(|(task, config)| {
                    (task.clone(), Value::String(sha256_hex(&serde_json::to_vec(config).unwrap_or_default())))
                })
                .collect()
        })
        .unwrap_or_default();
    let config = results.and_then(|r| r.get("config"));
    let seeds: Map<String, Value> = ["random_seed", "numpy_seed", "torch_seed", "fewshot_seed"]
        .into_iter()
        .map(|seed| (seed.to_string(), config.and_then(|c| c.get(seed)).cloned().unwrap_or(Value::Null)))
        .collect();
    let model = json!({
        "source": field("model_source"),
        "name": field("model_name"),
        "sha": config.and_then(|c| c.get("model_sha")).cloned().or_else(|| results.and_then(|r| r.get("model_sha")).cloned()),
        "revision": config.and_then(|c| c.get("model_revision")).cloned().or_else(|| results.and_then(|r| r.get("model_revision")).cloned()),
        "dtype": config.and_then(|c| c.get("model_dtype")).cloned().or_else(|| results.and_then(|r| r.get("model_dtype")).cloned()),
    });
    let inline: Map<String, Value> =
        facts.inline_tasks.iter().map(|(name, hash)| (name.clone(), Value::String(hash.clone()))).collect();
    json!({
        "manifest_version": 1,
        "lm_eval_version": field("lm_eval_version"),
        "lm_eval_git_hash": field("git_hash"),
        "transformers_version": field("transformers_version"),
        "driver": concat!("lm-eval-aas ", env!("CARGO_PKG_VERSION")),
        "runner_image": facts.runner_image,
        "argv": facts.argv,
        "request": facts.request,
        "task_config_sha256": task_configs,
        "task_hashes": field("task_hashes"),
        "inline_tasks_sha256": inline,
        "seeds": seeds,
        "model": model,
        "chat_template_sha": field("chat_template_sha"),
        "system_instruction_sha": field("system_instruction_sha"),
        "started_at": rfc3339(facts.started_at),
        "finished_at": rfc3339(facts.finished_at),
        "exit": facts.exit,
    })
}

fn rfc3339(at: OffsetDateTime) -> String {
    at.format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_manifest_holds_what_a_rerun_needs() {
        let results = json!({
            "lm_eval_version": "0.4.13", "git_hash": "abc123", "model_source": "hf", "model_name": "m",
            "config": {"random_seed": 0, "numpy_seed": 1234, "torch_seed": 1234, "fewshot_seed": 1234, "model_sha": "feed"},
            "configs": {"t": {"task": "t", "num_fewshot": 0}},
            "task_hashes": {"t": "9f"},
        });
        let argv = vec!["lm_eval".to_string(), "run".into(), "--tasks".into(), "t".into()];
        let at = time::macros::datetime!(2026-11-30 12:00 UTC);
        let manifest = manifest(&RunFacts {
            argv: &argv,
            runner_image: Some("runner:1"),
            request: Some(json!({"model": "hf", "tasks": ["t"]})),
            results: Some(&results),
            inline_tasks: vec![("t.yaml".into(), "aa".into())],
            started_at: at,
            finished_at: at + time::Duration::seconds(5),
            exit: ExitStatus::SUCCESS,
        });
        assert_eq!(manifest["lm_eval_version"], "0.4.13");
        assert_eq!(manifest["lm_eval_git_hash"], "abc123");
        assert_eq!(manifest["runner_image"], "runner:1");
        assert_eq!(manifest["argv"][2], "--tasks");
        assert_eq!(manifest["request"]["tasks"][0], "t");
        assert_eq!(manifest["task_config_sha256"]["t"], sha256_hex(br#"{"task":"t","num_fewshot":0}"#));
        assert_eq!(manifest["task_hashes"]["t"], "9f");
        assert_eq!(manifest["inline_tasks_sha256"]["t.yaml"], "aa");
        assert_eq!(manifest["seeds"]["numpy_seed"], 1234);
        assert_eq!(manifest["model"]["sha"], "feed");
        assert_eq!(manifest["finished_at"], "2026-11-30T12:00:05Z");
        assert_eq!(manifest["exit"]["code"], 0);
    }
}
