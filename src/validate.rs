//! Turns a client's [`EvaluationRequest`] into a [`ValidRequest`]: checked, normalised, allowed by policy.
//! Past this boundary nothing re-validates.

use std::collections::BTreeSet;

use serde_json::{Number, Value};

use crate::error::ApiError;
use crate::model::EvaluationRequest;

/// Model types lm-eval 0.4.13 registers.
pub const MODEL_TYPES: &[&str] = &[
    "anthropic-chat",
    "anthropic-chat-completions",
    "anthropic-completions",
    "azure-openai-chat-completions",
    "dummy",
    "ggml",
    "gguf",
    "habana",
    "hf",
    "hf-audiolm-qwen",
    "hf-auto",
    "hf-mistral3",
    "hf-multimodal",
    "huggingface",
    "ipex",
    "litellm",
    "litellm-chat",
    "litellm-chat-completions",
    "local-chat-completions",
    "local-completions",
    "mamba_ssm",
    "megatron_lm",
    "nemo_lm",
    "neuronx",
    "onnxruntime",
    "onnxruntime-genai",
    "openai-chat-completions",
    "openai-completions",
    "openvino",
    "sglang",
    "sglang-generate",
    "steered",
    "textsynth",
    "trtllm",
    "vllm",
    "vllm-vlm",
    "watsonx_llm",
    "winml",
];

/// What the server lets requests ask for. Set by the operator, never by a request.
#[derive(Debug, Clone, Copy, Default)]
pub struct Policy {
    pub allow_online: bool,
    pub allow_code_execution: bool,
    pub allow_trust_remote_code: bool,
}

/// An lm-eval task or group name: letters, digits, `_`, `-`, `.`; never a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskName(String);

impl TaskName {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let ok_chars = raw.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
        let starts_ok = raw.chars().next().is_some_and(|c| c.is_ascii_alphanumeric());
        if raw.is_empty() || raw.len() > 200 || !ok_chars || !starts_ok || raw.contains("..") || raw.ends_with(".yaml")
        {
            return Err(format!(
                "{raw:?} is not an lm-eval task name (letters, digits, '_', '-', '.'; starting with a letter or digit; no paths)"
            ));
        }
        Ok(Self(raw.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A request that passed validation; the only input the command and Job builders accept.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidRequest {
    request: EvaluationRequest,
    tasks: Vec<TaskName>,
}

impl ValidRequest {
    pub fn parse(mut request: EvaluationRequest, policy: &Policy) -> Result<Self, ApiError> {
        check_model(&request)?;
        check_model_args(&request, policy)?;
        let tasks = check_tasks(&mut request)?;
        check_numbers(&mut request)?;
        check_generation(&mut request)?;
        check_seed(&mut request)?;
        check_maps(&request)?;
        check_inline_tasks(&request)?;
        check_paths(&mut request)?;
        check_env(&request)?;
        check_resources(&request)?;
        check_labels(&request)?;
        check_policy(&request, policy)?;
        Ok(Self { request, tasks })
    }

    pub fn request(&self) -> &EvaluationRequest {
        &self.request
    }

    pub fn tasks(&self) -> &[TaskName] {
        &self.tasks
    }

    pub fn into_request(self) -> EvaluationRequest {
        self.request
    }
}

fn check_model(request: &EvaluationRequest) -> Result<(), ApiError> {
    if MODEL_TYPES.contains(&request.model.as_str()) {
        Ok(())
    } else {
        Err(ApiError::invalid(
            "model",
            format!("{:?} is not an lm-eval model type; expected one of: {}", request.model, MODEL_TYPES.join(", ")),
        ))
    }
}

fn is_identifier(key: &str) -> bool {
    key.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && key.len() <= 128
}

/// Names that carry credentials (`HF_TOKEN`, `api_key`, `DB_PASSWORD`): their values must come from a Secret reference.
pub fn looks_secret(name: &str) -> bool {
    const WORDS: &[&str] = &["TOKEN", "KEY", "APIKEY", "SECRET", "PASSWORD", "PASSWD", "CREDENTIAL", "CREDENTIALS"];
    name.split(['_', '-', '.']).any(|word| WORDS.contains(&word.to_ascii_uppercase().as_str()))
}

fn check_model_args(request: &EvaluationRequest, policy: &Policy) -> Result<(), ApiError> {
    for (key, value) in &request.model_args {
        let field = format!("model_args.{key}");
        if !is_identifier(key) {
            return Err(ApiError::invalid(field, "keys must be identifiers (letters, digits, '_')"));
        }
        match value {
            Value::String(s) if s.contains('\0') => return Err(ApiError::invalid(field, "must not contain NUL")),
            Value::String(_) | Value::Number(_) | Value::Bool(_) => {}
            _ => return Err(ApiError::invalid(field, "must be a string, number or boolean")),
        }
        if looks_secret(key) {
            return Err(ApiError::invalid(
                field,
                "looks like a credential; pass it as an env entry with a secret reference instead",
            ));
        }
        if key == "trust_remote_code" && value != &Value::Bool(false) && !policy.allow_trust_remote_code {
            return Err(ApiError::forbidden(field, "trust_remote_code is not permitted by the server's policy"));
        }
    }
    Ok(())
}

fn check_tasks(request: &mut EvaluationRequest) -> Result<Vec<TaskName>, ApiError> {
    if request.tasks.is_empty() {
        return Err(ApiError::invalid("tasks", "must name at least one task"));
    }
    let mut seen = BTreeSet::new();
    let mut tasks = Vec::new();
    for (i, raw) in request.tasks.iter().enumerate() {
        let task = TaskName::parse(raw).map_err(|e| ApiError::invalid(format!("tasks[{i}]"), e))?;
        if seen.insert(raw.clone()) {
            tasks.push(task);
        }
    }
    request.tasks = tasks.iter().map(|t| t.as_str().to_string()).collect();
    Ok(tasks)
}

fn check_numbers(request: &mut EvaluationRequest) -> Result<(), ApiError> {
    if let Some(n) = request.num_fewshot
        && !(0..=10_000).contains(&n)
    {
        return Err(ApiError::invalid("num_fewshot", "must be between 0 and 10000"));
    }
    if let Some(limit) = &request.limit {
        request.limit = Some(normalise_limit(limit).ok_or_else(|| {
            ApiError::invalid("limit", "must be an integer count ≥ 1 or a fraction strictly between 0 and 1")
        })?);
    }
    if let Some(batch) = &request.batch_size {
        request.batch_size =
            Some(normalise_batch_size(batch).ok_or_else(|| {
                ApiError::invalid("batch_size", "must be a positive integer, \"auto\" or \"auto:N\"")
            })?);
    }
    if let Some(n) = request.max_batch_size
        && n < 1
    {
        return Err(ApiError::invalid("max_batch_size", "must be ≥ 1"));
    }
    if let Some(t) = request.timeout_seconds
        && !(1..=7 * 24 * 3600).contains(&t)
    {
        return Err(ApiError::invalid("timeout_seconds", "must be between 1 and 604800 (7 days)"));
    }
    Ok(())
}

fn normalise_limit(limit: &Number) -> Option<Number> {
    if let Some(n) = limit.as_u64() {
        return (n >= 1).then(|| Number::from(n));
    }
    let x = limit.as_f64()?;
    if x > 0.0 && x < 1.0 {
        return Some(limit.clone());
    }
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    (x >= 1.0 && x.fract() == 0.0 && x < 1e15).then(|| Number::from(x as u64))
}

fn normalise_batch_size(batch: &Value) -> Option<Value> {
    match batch {
        Value::Number(n) => n.as_u64().filter(|n| (1..=1_000_000).contains(n)).map(Value::from),
        Value::String(s) if s == "auto" => Some(batch.clone()),
        Value::String(s) => {
            if let Some(n) = s.strip_prefix("auto:") {
                let n: u32 = n.parse().ok().filter(|n| *n >= 1)?;
                Some(Value::String(format!("auto:{n}")))
            } else {
                s.parse::<u64>().ok().filter(|n| (1..=1_000_000).contains(n)).map(Value::from)
            }
        }
        _ => None,
    }
}

fn check_generation(request: &mut EvaluationRequest) -> Result<(), ApiError> {
    match &request.apply_chat_template {
        None | Some(Value::Bool(true)) => {}
        Some(Value::Bool(false)) => request.apply_chat_template = None,
        Some(Value::String(name)) => {
            let ok = name.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
                && name.len() <= 200
                && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/'))
                && !name.contains("..");
            if !ok {
                return Err(ApiError::invalid("apply_chat_template", "must be a boolean or a chat template name"));
            }
        }
        Some(_) => return Err(ApiError::invalid("apply_chat_template", "must be a boolean or a chat template name")),
    }
    if request.fewshot_as_multiturn == Some(true) && request.apply_chat_template.is_none() {
        return Err(ApiError::invalid("fewshot_as_multiturn", "requires apply_chat_template"));
    }
    if let Some(text) = &request.system_instruction {
        if text.contains('\0') || text.len() > 64 * 1024 {
            return Err(ApiError::invalid("system_instruction", "must be text of at most 64 KiB without NUL"));
        }
        if text.is_empty() {
            request.system_instruction = None;
        }
    }
    Ok(())
}

fn check_seed(request: &mut EvaluationRequest) -> Result<(), ApiError> {
    let Some(seed) = &request.seed else { return Ok(()) };
    let invalid = || {
        ApiError::invalid("seed", "must be an integer or a list of 4 integers or nulls [python, numpy, torch, fewshot]")
    };
    match seed {
        Value::Number(n) if n.is_i64() || n.is_u64() => Ok(()),
        Value::Array(items) if items.len() == 4 => {
            if items.iter().all(|v| v.is_null() || v.is_i64() || v.is_u64()) {
                Ok(())
            } else {
                Err(invalid())
            }
        }
        _ => Err(invalid()),
    }
}

fn check_maps(request: &EvaluationRequest) -> Result<(), ApiError> {
    for (name, map) in [("gen_kwargs", &request.gen_kwargs), ("metadata", &request.metadata)] {
        for (key, value) in map {
            if !is_identifier(key) {
                return Err(ApiError::invalid(
                    format!("{name}.{key}"),
                    "keys must be identifiers (letters, digits, '_')",
                ));
            }
            if value.to_string().contains("\\u0000") {
                return Err(ApiError::invalid(format!("{name}.{key}"), "must not contain NUL"));
            }
        }
    }
    Ok(())
}

const MAX_INLINE_TASK_BYTES: usize = 512 * 1024;

fn check_inline_tasks(request: &EvaluationRequest) -> Result<(), ApiError> {
    let mut total = 0;
    for (name, text) in &request.inline_tasks {
        let field = format!("inline_tasks.{name}");
        let stem_ok = name.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
            && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
            && !name.contains("..");
        if !stem_ok || !(name.ends_with(".yaml") || name.ends_with(".yml")) || name.len() > 200 {
            return Err(ApiError::invalid(field, "file names must be plain names ending in .yaml or .yml"));
        }
        if text.trim().is_empty() || text.contains('\0') {
            return Err(ApiError::invalid(field, "must be non-empty YAML text"));
        }
        total += text.len();
    }
    if total > MAX_INLINE_TASK_BYTES {
        return Err(ApiError::invalid("inline_tasks", format!("must total at most {MAX_INLINE_TASK_BYTES} bytes")));
    }
    Ok(())
}

/// An absolute path with no `.`/`..` components, normalised without trailing slashes.
fn normalise_absolute_path(raw: &str) -> Option<String> {
    if !raw.starts_with('/') || raw.contains('\0') || raw.len() > 1024 {
        return None;
    }
    let parts: Vec<&str> = raw.split('/').filter(|p| !p.is_empty()).collect();
    if parts.iter().any(|p| *p == "." || *p == "..") {
        return None;
    }
    Some(format!("/{}", parts.join("/")))
}

fn check_paths(request: &mut EvaluationRequest) -> Result<(), ApiError> {
    if let Some(path) = &request.include_path {
        let normal = normalise_absolute_path(path).ok_or_else(|| {
            ApiError::invalid("include_path", "must be an absolute path without '.' or '..' components")
        })?;
        request.include_path = Some(normal);
    }
    let mut mount_paths = BTreeSet::new();
    for (i, volume) in request.volumes.iter_mut().enumerate() {
        if !is_dns_label(&volume.pvc) {
            return Err(ApiError::invalid(
                format!("volumes[{i}].pvc"),
                "must be a PersistentVolumeClaim name (DNS-1123 label)",
            ));
        }
        let mount = normalise_absolute_path(&volume.mount_path).filter(|p| p != "/").ok_or_else(|| {
            ApiError::invalid(
                format!("volumes[{i}].mount_path"),
                "must be an absolute path other than / without '.' or '..'",
            )
        })?;
        if !mount_paths.insert(mount.clone()) {
            return Err(ApiError::invalid(format!("volumes[{i}].mount_path"), "is mounted twice"));
        }
        volume.mount_path = mount;
        if let Some(sub) = &volume.sub_path {
            let ok = !sub.is_empty()
                && !sub.starts_with('/')
                && !sub.split('/').any(|p| p == ".." || p == ".")
                && !sub.contains('\0');
            if !ok {
                return Err(ApiError::invalid(
                    format!("volumes[{i}].sub_path"),
                    "must be a relative path without '.' or '..'",
                ));
            }
        }
    }
    Ok(())
}

/// Environment variables the service sets itself, or that would change how code is loaded.
fn reserved_env(name: &str) -> bool {
    const EXACT: &[&str] = &[
        "PATH",
        "HOME",
        "HF_DATASETS_OFFLINE",
        "HF_HUB_OFFLINE",
        "TRANSFORMERS_OFFLINE",
        "HF_DATASETS_TRUST_REMOTE_CODE",
        "HF_ALLOW_CODE_EVAL",
        "PYTHONPATH",
        "PYTHONHOME",
        "PYTHONSTARTUP",
    ];
    EXACT.contains(&name) || name.starts_with("LD_") || name.starts_with("LMEVAL_") || name.starts_with("KUBERNETES_")
}

fn check_env(request: &EvaluationRequest) -> Result<(), ApiError> {
    let mut names = BTreeSet::new();
    for (i, var) in request.env.iter().enumerate() {
        if !is_identifier(&var.name) {
            return Err(ApiError::invalid(format!("env[{i}].name"), "must be a valid environment variable name"));
        }
        if reserved_env(&var.name) {
            return Err(ApiError::invalid(
                format!("env[{i}].name"),
                format!("{} is set by the service and cannot be overridden", var.name),
            ));
        }
        if !names.insert(&var.name) {
            return Err(ApiError::invalid(format!("env[{i}].name"), format!("{} is given twice", var.name)));
        }
        match (&var.value, &var.secret) {
            (Some(_), Some(_)) | (None, None) => {
                return Err(ApiError::invalid(format!("env[{i}]"), "needs exactly one of value or secret"));
            }
            (Some(value), None) => {
                if looks_secret(&var.name) {
                    return Err(ApiError::invalid(
                        format!("env[{i}].value"),
                        format!("{} holds a credential: pass it by reference, as secret: {{name, key}}", var.name),
                    ));
                }
                if value.contains('\0') {
                    return Err(ApiError::invalid(format!("env[{i}].value"), "must not contain NUL"));
                }
            }
            (None, Some(secret)) => {
                if !is_dns_subdomain(&secret.name) {
                    return Err(ApiError::invalid(
                        format!("env[{i}].secret.name"),
                        "must be a Secret name (DNS-1123 subdomain)",
                    ));
                }
                let key_ok = !secret.key.is_empty()
                    && secret.key.len() <= 253
                    && secret.key.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
                if !key_ok {
                    return Err(ApiError::invalid(
                        format!("env[{i}].secret.key"),
                        "must be a Secret key (letters, digits, '-', '_', '.')",
                    ));
                }
            }
        }
    }
    Ok(())
}

fn check_resources(request: &EvaluationRequest) -> Result<(), ApiError> {
    let Some(resources) = &request.resources else { return Ok(()) };
    if let Some(cpu) = &resources.cpu
        && !is_quantity(cpu, &["", "m"])
    {
        return Err(ApiError::invalid("resources.cpu", "must be a CPU quantity such as 500m or 2"));
    }
    if let Some(memory) = &resources.memory
        && !is_quantity(memory, &["", "Ki", "Mi", "Gi", "Ti", "k", "M", "G", "T"])
    {
        return Err(ApiError::invalid("resources.memory", "must be a memory quantity such as 512Mi or 4Gi"));
    }
    if let Some(gpu) = resources.gpu
        && gpu > 64
    {
        return Err(ApiError::invalid("resources.gpu", "must be at most 64"));
    }
    Ok(())
}

fn is_quantity(raw: &str, suffixes: &[&str]) -> bool {
    let digits_end = raw.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(raw.len());
    let (number, suffix) = raw.split_at(digits_end);
    let number_ok = !number.is_empty()
        && number.matches('.').count() <= 1
        && !number.starts_with('.')
        && !number.ends_with('.')
        && number.parse::<f64>().is_ok_and(|n| n > 0.0);
    number_ok && suffixes.contains(&suffix) && raw.len() <= 32
}

pub fn is_dns_label(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

fn is_dns_subdomain(name: &str) -> bool {
    name.len() <= 253 && name.split('.').all(is_dns_label)
}

fn is_label_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && name.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && name.chars().last().is_some_and(|c| c.is_ascii_alphanumeric())
}

const RESERVED_LABEL_PREFIXES: &[&str] = &["lm-eval-aas.io/", "app.kubernetes.io/", "kubernetes.io/", "k8s.io/"];

fn check_labels(request: &EvaluationRequest) -> Result<(), ApiError> {
    if request.labels.len() > 32 {
        return Err(ApiError::invalid("labels", "at most 32 labels"));
    }
    for (key, value) in &request.labels {
        let field = format!("labels.{key}");
        let (prefix, name) = match key.split_once('/') {
            Some((prefix, name)) => (Some(prefix), name),
            None => (None, key.as_str()),
        };
        let key_ok = is_label_name(name) && prefix.is_none_or(is_dns_subdomain);
        if !key_ok {
            return Err(ApiError::invalid(
                field,
                "must be a Kubernetes label key ([prefix/]name, name ≤ 63 characters)",
            ));
        }
        if RESERVED_LABEL_PREFIXES.iter().any(|p| key.starts_with(p)) {
            return Err(ApiError::invalid(field, "uses a prefix reserved for the service"));
        }
        if !(value.is_empty() || is_label_name(value)) {
            return Err(ApiError::invalid(
                field,
                "value must be a Kubernetes label value (≤ 63 letters, digits, '-', '_', '.')",
            ));
        }
    }
    Ok(())
}

fn check_policy(request: &EvaluationRequest, policy: &Policy) -> Result<(), ApiError> {
    if request.allow_online && !policy.allow_online {
        return Err(ApiError::forbidden(
            "allow_online",
            "network access for evaluations is not permitted by the server's policy",
        ));
    }
    if request.allow_code_execution && !policy.allow_code_execution {
        return Err(ApiError::forbidden(
            "allow_code_execution",
            "code execution is not permitted by the server's policy",
        ));
    }
    Ok(())
}

/// Parses a `key=value` label selector as the list endpoint takes it.
pub fn parse_label_selector(raw: &str) -> Result<(String, String), ApiError> {
    let (key, value) = raw.split_once('=').ok_or_else(|| ApiError::invalid("label", "must be key=value"))?;
    Ok((key.to_string(), value.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn request(extra: Value) -> EvaluationRequest {
        let mut base = json!({"model": "dummy", "tasks": ["arc_easy"]});
        if let (Some(base), Some(extra)) = (base.as_object_mut(), extra.as_object()) {
            base.extend(extra.clone());
        }
        serde_json::from_value(base).expect("test request deserialises")
    }

    fn field_of(extra: Value) -> Option<String> {
        ValidRequest::parse(request(extra), &Policy::default()).err().and_then(|e| e.field().map(str::to_string))
    }

    #[test]
    fn accepts_a_plain_request_and_deduplicates_tasks() {
        let valid = ValidRequest::parse(request(json!({"tasks": ["a", "b", "a"]})), &Policy::default()).expect("valid");
        assert_eq!(valid.request().tasks, vec!["a", "b"]);
    }

    #[test]
    fn names_the_offending_field() {
        let cases = [
            (json!({"model": "gpt-7"}), "model"),
            (json!({"tasks": []}), "tasks"),
            (json!({"tasks": ["ok", "../etc"]}), "tasks[1]"),
            (json!({"tasks": ["a;rm -rf /"]}), "tasks[0]"),
            (json!({"limit": 0}), "limit"),
            (json!({"limit": 2.5}), "limit"),
            (json!({"num_fewshot": -1}), "num_fewshot"),
            (json!({"batch_size": "auto:0"}), "batch_size"),
            (json!({"model_args": {"api_key": "sk-123"}}), "model_args.api_key"),
            (json!({"model_args": {"nested": {"a": 1}}}), "model_args.nested"),
            (json!({"env": [{"name": "OPENAI_API_KEY", "value": "sk-123"}]}), "env[0].value"),
            (json!({"env": [{"name": "LD_PRELOAD", "value": "x"}]}), "env[0].name"),
            (json!({"volumes": [{"pvc": "data", "mount_path": "/data/../etc"}]}), "volumes[0].mount_path"),
            (json!({"resources": {"memory": "lots"}}), "resources.memory"),
            (json!({"labels": {"team": "a b"}}), "labels.team"),
            (json!({"inline_tasks": {"../x.yaml": "task: x"}}), "inline_tasks.../x.yaml"),
            (json!({"allow_online": true}), "allow_online"),
            (json!({"model_args": {"trust_remote_code": true}}), "model_args.trust_remote_code"),
            (json!({"fewshot_as_multiturn": true}), "fewshot_as_multiturn"),
            (json!({"seed": [1, 2]}), "seed"),
        ];
        for (extra, field) in cases {
            assert_eq!(field_of(extra.clone()).as_deref(), Some(field), "case {extra}");
        }
    }

    #[test]
    fn credentials_are_told_by_whole_words() {
        assert!(
            looks_secret("HF_TOKEN")
                && looks_secret("api_key")
                && looks_secret("OPENAI_API_KEY")
                && looks_secret("apikey")
        );
        assert!(!looks_secret("tokenized_requests") && !looks_secret("tokenizer") && !looks_secret("keyword"));
    }

    #[test]
    fn policy_can_permit_what_is_refused_by_default() {
        let policy = Policy { allow_online: true, allow_code_execution: true, allow_trust_remote_code: true };
        let req = request(
            json!({"allow_online": true, "allow_code_execution": true, "model_args": {"trust_remote_code": true}}),
        );
        assert!(ValidRequest::parse(req, &policy).is_ok());
    }

    #[test]
    fn normalises_limits_and_batch_sizes() {
        let valid =
            ValidRequest::parse(request(json!({"limit": 5.0, "batch_size": "8"})), &Policy::default()).expect("valid");
        assert_eq!(valid.request().limit, Some(Number::from(5)));
        assert_eq!(valid.request().batch_size, Some(json!(8)));
        let valid = ValidRequest::parse(request(json!({"limit": 0.25})), &Policy::default()).expect("valid");
        assert_eq!(valid.request().limit.as_ref().and_then(Number::as_f64), Some(0.25));
    }
}
