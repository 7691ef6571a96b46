//! A request file for `submit`: JSON or YAML, with `--set key=value` and `--label k=v` applied, and the
//! Idempotency-Key a retried pipeline step reuses. Pure: text in, JSON out.

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// The variables CI systems name their run by (GitHub Actions, GitLab CI, Tekton via an env var, Jenkins, Buildkite).
pub const CI_RUN_IDS: [&str; 5] =
    ["GITHUB_RUN_ID", "CI_PIPELINE_ID", "LMEVAL_CI_RUN_ID", "BUILD_TAG", "BUILDKITE_BUILD_ID"];

/// The request in `text` (JSON is YAML too), which must be a mapping.
pub fn parse(text: &str) -> Result<Value, String> {
    let value: Value = yaml_serde::from_str(text).map_err(|e| format!("not JSON or YAML: {e}"))?;
    if value.is_object() { Ok(value) } else { Err("the request must be a mapping (a JSON object)".into()) }
}

/// `key=value` into `request`: `key` may be dotted (`model_args.base_url`), `value` is read as YAML (so `10` is a
/// number, `true` a boolean, `[a, b]` a list; quote it to keep a string).
pub fn set(request: &mut Value, assignment: &str) -> Result<(), String> {
    let (key, raw) = assignment.split_once('=').ok_or_else(|| format!("--set {assignment:?}: expected key=value"))?;
    let value: Value = yaml_serde::from_str(raw).unwrap_or_else(|_| Value::String(raw.to_string()));
    let value = if raw.is_empty() { Value::String(String::new()) } else { value };
    let parts: Vec<&str> = key.split('.').collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Err(format!("--set {assignment:?}: {key:?} is not a key"));
    }
    let mut at = request;
    for part in &parts[..parts.len() - 1] {
        let object =
            at.as_object_mut().ok_or_else(|| format!("--set {assignment:?}: {part:?} is inside a non-mapping"))?;
        at = object.entry(part.to_string()).or_insert_with(|| Value::Object(Map::new()));
    }
    let object = at.as_object_mut().ok_or_else(|| format!("--set {assignment:?}: {key:?} is inside a non-mapping"))?;
    object.insert(parts[parts.len() - 1].to_string(), value);
    Ok(())
}

/// `k=v` into the request's `labels`.
pub fn label(request: &mut Value, pair: &str) -> Result<(), String> {
    let (key, value) = pair.split_once('=').ok_or_else(|| format!("--label {pair:?}: expected key=value"))?;
    let object = request.as_object_mut().ok_or("the request must be a mapping")?;
    let labels = object.entry("labels").or_insert_with(|| Value::Object(Map::new()));
    let labels = labels.as_object_mut().ok_or("labels must be a mapping")?;
    labels.insert(key.to_string(), Value::String(value.to_string()));
    Ok(())
}

/// In a CI run (a variable of `CI_RUN_IDS` set): a key from the run id and the final request, so a retried
/// step gets the evaluation its first attempt made. Outside CI none: running the same file again is another
/// evaluation.
pub fn idempotency_key(request: &Value, env: impl Fn(&str) -> Option<String>) -> Option<String> {
    let (name, run) = CI_RUN_IDS.iter().find_map(|name| env(name).filter(|v| !v.is_empty()).map(|v| (*name, v)))?;
    let mut hasher = Sha256::new();
    hasher.update(name.as_bytes());
    hasher.update([0]);
    hasher.update(run.as_bytes());
    hasher.update([0]);
    hasher.update(serde_json::to_vec(request).unwrap_or_default());
    let digest: String = hasher.finalize().iter().take(16).map(|b| format!("{b:02x}")).collect();
    Some(format!("ci-{digest}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn yaml_and_json_requests_parse_and_sets_are_typed() {
        let mut request = parse("model: dummy\ntasks: [lmeval_aas_mc]\n").expect("yaml");
        assert_eq!(parse(r#"{"model": "dummy"}"#).expect("json")["model"], "dummy");
        assert!(parse("- a\n- b").is_err());
        set(&mut request, "limit=10").expect("set");
        set(&mut request, "model_args.base_url=http://llm:8000/v1").expect("set");
        set(&mut request, "log_samples=true").expect("set");
        set(&mut request, "system_instruction='10'").expect("set");
        label(&mut request, "team=nlp").expect("label");
        assert_eq!(
            request,
            json!({"model": "dummy", "tasks": ["lmeval_aas_mc"], "limit": 10, "model_args": {"base_url": "http://llm:8000/v1"},
                   "log_samples": true, "system_instruction": "10", "labels": {"team": "nlp"}})
        );
        assert!(set(&mut request, "limit").is_err());
        assert!(set(&mut request, "limit.x=1").is_err(), "limit is a number, not a mapping");
        assert!(set(&mut request, ".x=1").is_err());
    }

    #[test]
    fn a_ci_run_makes_a_key_that_a_retry_repeats_and_another_run_does_not() {
        let request = json!({"model": "dummy"});
        let run = |id: &'static str| move |name: &str| (name == "GITHUB_RUN_ID").then(|| id.to_string());
        let first = idempotency_key(&request, run("100")).expect("key in CI");
        assert_eq!(idempotency_key(&request, run("100")), Some(first.clone()), "a retried step");
        assert_ne!(idempotency_key(&request, run("101")), Some(first.clone()), "another run");
        assert_ne!(idempotency_key(&json!({"model": "other"}), run("100")), Some(first), "another request");
        assert_eq!(idempotency_key(&request, |_| None), None, "outside CI");
    }
}
