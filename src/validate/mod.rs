//! Turns a client's [`EvaluationRequest`] into a [`ValidRequest`]: checked, normalised, allowed by policy,
//! its loosely typed JSON parsed into the types of [`values`]. Past this boundary nothing re-validates.

pub mod names;
pub mod values;

mod checks;
pub mod environment;
pub mod json;
pub mod secrets;

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::error::ApiError;
use crate::model::{EnvVar, EvaluationRequest, Resources, VolumeMount};
use checks::{
    check_env, check_inline_tasks, check_labels, check_maps, check_model_args, check_policy, check_resources,
    check_volumes, normalise_absolute_path, parse_tasks,
};
pub use values::{BatchSize, ChatTemplate, Limit, MODEL_TYPES, ModelType, Seed, TaskName};

/// What the server lets requests ask for. Set by the operator, never by a request.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    pub allow_online: bool,
    pub allow_code_execution: bool,
    pub allow_trust_remote_code: bool,
    /// Environment variable names a request may set although they change how code is loaded or where
    /// traffic goes (see [`environment::changes_behaviour`]).
    pub allowed_env: Vec<String>,
}

/// A request that passed validation; the only input the command and Job builders accept. It can only be
/// made by [`ValidRequest::parse`].
#[derive(Debug, Clone, PartialEq)]
pub struct ValidRequest {
    pub model: ModelType,
    pub model_args: Map<String, Value>,
    /// Without duplicates, in the order given.
    pub tasks: Vec<TaskName>,
    pub num_fewshot: Option<u32>,
    pub limit: Option<Limit>,
    pub batch_size: Option<BatchSize>,
    pub max_batch_size: Option<u64>,
    pub gen_kwargs: Map<String, Value>,
    pub log_samples: bool,
    pub chat_template: Option<ChatTemplate>,
    pub fewshot_as_multiturn: Option<bool>,
    /// Never empty.
    pub system_instruction: Option<String>,
    pub seed: Option<Seed>,
    pub predict_only: bool,
    pub metadata: Map<String, Value>,
    pub inline_tasks: BTreeMap<String, String>,
    /// Absolute, without `.` or `..` components or trailing slashes.
    pub include_path: Option<String>,
    pub env: Vec<EnvVar>,
    /// Mount paths normalised like `include_path`.
    pub volumes: Vec<VolumeMount>,
    pub resources: Option<Resources>,
    pub timeout_seconds: Option<u64>,
    pub labels: BTreeMap<String, String>,
    pub allow_online: bool,
    pub allow_code_execution: bool,
    sealed: Sealed,
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Sealed;

const LIMIT_EXPECTED: &str = "must be an integer count ≥ 1 or a fraction strictly between 0 and 1";
const BATCH_EXPECTED: &str = "must be a positive integer, \"auto\" or \"auto:N\"";
const SEED_EXPECTED: &str = "must be an integer or a list of 4 integers or nulls [python, numpy, torch, fewshot]";

/// `raw` parsed by `parse` when present; a value it refuses is invalid with `expected` as the detail.
fn parse_optional<R, T>(
    raw: Option<&R>,
    parse: impl Fn(&R) -> Option<T>,
    field: &str,
    expected: &str,
) -> Result<Option<T>, ApiError> {
    raw.map(|raw| parse(raw).ok_or_else(|| ApiError::invalid(field, expected))).transpose()
}

impl ValidRequest {
    pub fn parse(mut request: EvaluationRequest, policy: &Policy) -> Result<Self, ApiError> {
        let model = ModelType::parse(&request.model).ok_or_else(|| {
            ApiError::invalid(
                "model",
                format!(
                    "{:?} is not an lm-eval model type; expected one of: {}",
                    request.model,
                    MODEL_TYPES.join(", ")
                ),
            )
        })?;
        check_model_args(&request.model_args, policy)?;
        let tasks = parse_tasks(&request.tasks)?;
        let num_fewshot = request
            .num_fewshot
            .map(|n| u32::try_from(n).ok().filter(|n| *n <= 10_000))
            .map(|n| n.ok_or_else(|| ApiError::invalid("num_fewshot", "must be between 0 and 10000")))
            .transpose()?;
        let limit = parse_optional(request.limit.as_ref(), Limit::parse, "limit", LIMIT_EXPECTED)?;
        let batch_size = parse_optional(request.batch_size.as_ref(), BatchSize::parse, "batch_size", BATCH_EXPECTED)?;
        let max_batch_size = request
            .max_batch_size
            .map(|n| {
                u64::try_from(n)
                    .ok()
                    .filter(|n| *n >= 1)
                    .ok_or_else(|| ApiError::invalid("max_batch_size", "must be ≥ 1"))
            })
            .transpose()?;
        if let Some(t) = request.timeout_seconds
            && !(1..=7 * 24 * 3600).contains(&t)
        {
            return Err(ApiError::invalid("timeout_seconds", "must be between 1 and 604800 (7 days)"));
        }
        let chat_template = match &request.apply_chat_template {
            Some(raw) => ChatTemplate::parse(raw).map_err(|e| ApiError::invalid("apply_chat_template", e))?,
            None => None,
        };
        if request.fewshot_as_multiturn == Some(true) && chat_template.is_none() {
            return Err(ApiError::invalid("fewshot_as_multiturn", "requires apply_chat_template"));
        }
        if let Some(text) = &request.system_instruction
            && (text.contains('\0') || text.len() > 64 * 1024)
        {
            return Err(ApiError::invalid("system_instruction", "must be text of at most 64 KiB without NUL"));
        }
        let seed = parse_optional(request.seed.as_ref(), Seed::parse, "seed", SEED_EXPECTED)?;
        check_maps(&request.gen_kwargs, &request.metadata)?;
        check_inline_tasks(&request.inline_tasks)?;
        let include_path = request
            .include_path
            .as_deref()
            .map(|path| {
                normalise_absolute_path(path).ok_or_else(|| {
                    ApiError::invalid("include_path", "must be an absolute path without '.' or '..' components")
                })
            })
            .transpose()?;
        check_volumes(&mut request.volumes)?;
        check_env(&request.env, policy)?;
        check_resources(request.resources.as_ref())?;
        check_labels(&request.labels)?;
        check_policy(request.allow_online, request.allow_code_execution, policy)?;
        Ok(Self {
            model,
            tasks,
            num_fewshot,
            limit,
            batch_size,
            max_batch_size,
            chat_template,
            seed,
            include_path,
            system_instruction: request.system_instruction.filter(|text| !text.is_empty()),
            model_args: request.model_args,
            gen_kwargs: request.gen_kwargs,
            log_samples: request.log_samples,
            fewshot_as_multiturn: request.fewshot_as_multiturn,
            predict_only: request.predict_only,
            metadata: request.metadata,
            inline_tasks: request.inline_tasks,
            env: request.env,
            volumes: request.volumes,
            resources: request.resources,
            timeout_seconds: request.timeout_seconds,
            labels: request.labels,
            allow_online: request.allow_online,
            allow_code_execution: request.allow_code_execution,
            sealed: Sealed,
        })
    }

    /// The request in its normal form: what the API shows as accepted, and what parses back to `self`.
    pub fn to_request(&self) -> EvaluationRequest {
        EvaluationRequest {
            model: self.model.as_str().to_string(),
            model_args: self.model_args.clone(),
            tasks: self.tasks.iter().map(|t| t.as_str().to_string()).collect(),
            num_fewshot: self.num_fewshot.map(i64::from),
            limit: self.limit.map(Limit::to_number),
            batch_size: self.batch_size.map(BatchSize::to_value),
            max_batch_size: self.max_batch_size.map(|n| i64::try_from(n).unwrap_or(i64::MAX)),
            gen_kwargs: self.gen_kwargs.clone(),
            log_samples: self.log_samples,
            apply_chat_template: self.chat_template.as_ref().map(ChatTemplate::to_value),
            fewshot_as_multiturn: self.fewshot_as_multiturn,
            system_instruction: self.system_instruction.clone(),
            seed: self.seed.map(Seed::to_value),
            predict_only: self.predict_only,
            metadata: self.metadata.clone(),
            inline_tasks: self.inline_tasks.clone(),
            include_path: self.include_path.clone(),
            env: self.env.clone(),
            volumes: self.volumes.clone(),
            resources: self.resources.clone(),
            timeout_seconds: self.timeout_seconds,
            labels: self.labels.clone(),
            allow_online: self.allow_online,
            allow_code_execution: self.allow_code_execution,
        }
    }
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
        assert_eq!(valid.to_request().tasks, vec!["a", "b"]);
    }

    #[test]
    fn the_normal_form_parses_back_to_the_same_request() {
        let raw = request(json!({"tasks": ["a", "a"], "limit": 5.0, "batch_size": "auto:4", "seed": [1, null, 2, 3],
            "apply_chat_template": "chatml", "fewshot_as_multiturn": true, "system_instruction": "", "include_path": "/a//b/",
            "volumes": [{"pvc": "data", "mount_path": "/data/"}], "num_fewshot": 3, "max_batch_size": 8}));
        let valid = ValidRequest::parse(raw, &Policy::default()).expect("valid");
        let normal = valid.to_request();
        assert_eq!((normal.include_path.as_deref(), normal.volumes[0].mount_path.as_str()), (Some("/a/b"), "/data"));
        assert_eq!(normal.system_instruction, None);
        assert_eq!(ValidRequest::parse(normal, &Policy::default()).expect("still valid"), valid);
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
            secrets::is_credential_name("HF_TOKEN")
                && secrets::is_credential_name("api_key")
                && secrets::is_credential_name("OPENAI_API_KEY")
                && secrets::is_credential_name("apikey")
        );
        assert!(!secrets::is_credential_name("tokenized_requests") && !secrets::is_credential_name("tokenizer"));
    }

    #[test]
    fn policy_can_permit_what_is_refused_by_default() {
        let policy = Policy {
            allow_online: true,
            allow_code_execution: true,
            allow_trust_remote_code: true,
            allowed_env: vec![],
        };
        let req = request(
            json!({"allow_online": true, "allow_code_execution": true, "model_args": {"trust_remote_code": true}}),
        );
        assert!(ValidRequest::parse(req, &policy).is_ok());
    }

    #[test]
    fn normalises_limits_and_batch_sizes() {
        let valid =
            ValidRequest::parse(request(json!({"limit": 5.0, "batch_size": "8"})), &Policy::default()).expect("valid");
        assert_eq!((valid.limit, valid.batch_size), (Some(Limit::Count(5)), Some(BatchSize::Fixed(8))));
        assert_eq!(valid.to_request().limit, Some(serde_json::Number::from(5)));
        assert_eq!(valid.to_request().batch_size, Some(json!(8)));
        let valid = ValidRequest::parse(request(json!({"limit": 0.25})), &Policy::default()).expect("valid");
        assert_eq!(valid.limit, Some(Limit::Fraction(0.25)));
    }
}
