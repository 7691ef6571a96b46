//! The public API's resources: what clients send and what they get back.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

mod reason;
pub mod schema;
pub use reason::Reason;

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

/// An lm-eval task or group name as the validator takes it: letters, digits, `_`, `-`, `.`, starting with a
/// letter or digit, at most 200 characters, never `..` and never a `.yaml` file name.
pub const TASK_NAME_PATTERN: &str = r"^(?!.*\.\.)(?!.*\.yaml$)[A-Za-z0-9][A-Za-z0-9_.-]{0,199}$";

/// What to evaluate and how. Unknown fields are rejected.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EvaluationRequest {
    /// An lm-eval model type, e.g. `hf`, `vllm`, `local-completions`, `dummy`.
    #[schema(value_type = ModelTypes, example = "dummy")]
    pub model: String,
    /// Arguments for the model constructor; values are strings, numbers or booleans.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    #[schema(schema_with = schema::free_form, example = json!({"pretrained": "EleutherAI/pythia-70m"}))]
    #[schemars(schema_with = "schema::free_form_object")]
    pub model_args: Map<String, Value>,
    /// lm-eval task or group names.
    #[schema(example = json!(["lmeval_aas_mc"]), schema_with = schema::task_names)]
    pub tasks: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "schema::optional_integer")]
    #[schema(minimum = 0, maximum = 10000)]
    pub num_fewshot: Option<i64>,
    /// A document count (integer ≥ 1) or a fraction in (0, 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = schema::limit, example = 10)]
    pub limit: Option<serde_json::Number>,
    /// An integer, `auto` or `auto:N`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = schema::batch_size, example = "auto")]
    #[schemars(schema_with = "schema::int_or_string")]
    pub batch_size: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "schema::optional_integer")]
    #[schema(minimum = 1)]
    pub max_batch_size: Option<i64>,
    /// Generation arguments, e.g. `{"temperature": 0, "until": ["\n"]}`.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    #[schema(schema_with = schema::free_form)]
    #[schemars(schema_with = "schema::free_form_object")]
    pub gen_kwargs: Map<String, Value>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub log_samples: bool,
    /// `true`, or the name of a chat template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = schema::chat_template)]
    #[schemars(schema_with = "schema::any_value")]
    pub apply_chat_template: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fewshot_as_multiturn: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_instruction: Option<String>,
    /// One integer for all four generators, or `[python, numpy, torch, fewshot]` (integers or null).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = schema::seed)]
    #[schemars(schema_with = "schema::any_value")]
    pub seed: Option<Value>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub predict_only: bool,
    /// Task metadata (merged by lm-eval with `model_args`).
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    #[schema(schema_with = schema::free_form)]
    #[schemars(schema_with = "schema::free_form_object")]
    pub metadata: Map<String, Value>,
    /// Custom tasks without a volume: file name → task YAML text.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub inline_tasks: BTreeMap<String, String>,
    /// An extra directory of task YAML files (inside a volume's `mount_path`, or a directory the server allows).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_path: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<VolumeMount>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
    /// Seconds the evaluation may run (at most 7 days).
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "schema::optional_integer")]
    #[schema(minimum = 1, maximum = 604_800)]
    pub timeout_seconds: Option<u64>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Let lm-eval reach the network (model hubs, datasets); refused unless the server's policy permits it.
    #[serde(default, skip_serializing_if = "is_false")]
    pub allow_online: bool,
    /// Let tasks execute generated code (`--confirm_run_unsafe_code`); refused unless policy permits it.
    #[serde(default, skip_serializing_if = "is_false")]
    pub allow_code_execution: bool,
}

#[allow(clippy::trivially_copy_pass_by_ref)]
fn is_false(b: &bool) -> bool {
    !*b
}

/// An environment variable: a literal `value`, or a `secret` reference (never a secret value).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EnvVar {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<SecretRef>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SecretRef {
    /// The Secret's name.
    pub name: String,
    /// The key inside the Secret.
    pub key: String,
}

/// A PersistentVolumeClaim mounted into the evaluation (datasets, task directories).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VolumeMount {
    pub pvc: String,
    pub mount_path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_path: Option<String>,
    /// Defaults to true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_only: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    /// A Kubernetes quantity, e.g. `500m` or `2`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<String>,
    /// A Kubernetes quantity, e.g. `4Gi`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "schema::optional_integer")]
    #[schema(minimum = 0, maximum = 64)]
    pub gpu: Option<u32>,
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Pending,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl State {
    pub const ALL: [State; 5] = [Self::Pending, Self::Running, Self::Succeeded, Self::Failed, Self::Cancelled];

    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|state| state.as_str() == s)
    }
}

/// How a process ended: its exit code, or the signal that ended it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitStatus {
    pub code: Option<i32>,
    pub signal: Option<i32>,
}

impl ExitStatus {
    pub const SUCCESS: Self = Self { code: Some(0), signal: None };

    pub fn code(code: i32) -> Self {
        Self { code: Some(code), signal: None }
    }

    /// The exit code a shell would report: the code, or 128 + the signal.
    pub fn process_exit_code(self) -> i32 {
        self.code.unwrap_or_else(|| 128 + self.signal.unwrap_or(0))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema, schemars::JsonSchema)]
pub struct Progress {
    pub percent: f64,
    pub completed: u64,
    pub total: u64,
}

/// One metric of one task under one filter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema, schemars::JsonSchema)]
pub struct MetricRow {
    pub task: String,
    pub filter: String,
    pub metric: String,
    #[schema(value_type = Option<f64>)]
    #[schemars(schema_with = "schema::nullable_number")]
    pub value: Value,
    pub stderr: Option<f64>,
    pub n_shot: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema, schemars::JsonSchema)]
pub struct Links {
    #[serde(rename = "self")]
    pub self_: String,
    pub logs: String,
    pub results: String,
}

impl Links {
    /// Links of an evaluation in the server's default namespace: its un-namespaced routes.
    pub fn for_id(id: Uuid) -> Self {
        Self::under(format!("/api/v1/evaluations/{id}"))
    }

    /// Links of an evaluation in another namespace: the namespaced routes.
    pub fn in_namespace(namespace: &str, id: Uuid) -> Self {
        Self::under(format!("/api/v1/namespaces/{namespace}/evaluations/{id}"))
    }

    fn under(base: String) -> Self {
        Self { logs: format!("{base}/logs"), results: format!("{base}/results"), self_: base }
    }
}

/// An evaluation: the accepted request, the exact command, and where it stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Evaluation {
    pub id: Uuid,
    /// The namespace it belongs to (on the local backend, the one it serves).
    #[serde(default)]
    #[schema(required = true)]
    pub namespace: String,
    pub state: State,
    #[schema(required = true)]
    pub reason: Option<Reason>,
    #[schema(required = true)]
    pub message: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime, required = true)]
    pub started_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime, required = true)]
    pub finished_at: Option<OffsetDateTime>,
    pub request: EvaluationRequest,
    /// The exact argv that runs (or would run).
    pub command: Vec<String>,
    #[schema(required = true)]
    pub progress: Option<Progress>,
    #[schema(required = true)]
    pub metrics: Option<Vec<MetricRow>>,
    pub labels: BTreeMap<String, String>,
    /// Who submitted it: the caller's user name (with `--auth none`, the client's address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    pub links: Links,
}

impl Evaluation {
    /// A just-accepted evaluation: pending, with the request's labels and the exact command.
    pub fn pending(id: Uuid, request: EvaluationRequest, command: Vec<String>, created_at: OffsetDateTime) -> Self {
        Self {
            id,
            namespace: String::new(),
            state: State::Pending,
            reason: None,
            message: None,
            created_at,
            started_at: None,
            finished_at: None,
            labels: request.labels.clone(),
            request,
            command,
            progress: None,
            metrics: None,
            created_by: None,
            links: Links::for_id(id),
        }
    }

    /// Places it in `namespace`; `default` says whether that is the server's default namespace (whose
    /// evaluations the un-namespaced routes serve).
    pub fn in_namespace(mut self, namespace: &str, default: bool) -> Self {
        self.namespace = namespace.to_string();
        self.links = if default { Links::for_id(self.id) } else { Links::in_namespace(namespace, self.id) };
        self
    }
}

/// A JSON document lm-eval wrote (its results: `results`, `groups`, `configs`, `versions`, `n-shot`, …), as written;
/// named in the OpenAPI document so that clients get one type for it.
pub struct Document;

/// How an evaluation can be reproduced: lm-eval's version, the runner image, the exact argv, the request, hashes of
/// every task configuration and task file, the seeds, the model's source and revision, start, end and exit.
pub struct Manifest;

/// The model types lm-eval registers, named `ModelType` in the OpenAPI document (one enum for clients).
pub struct ModelTypes;

impl utoipa::PartialSchema for ModelTypes {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        schema::model_type()
    }
}

impl utoipa::ToSchema for ModelTypes {
    fn name() -> std::borrow::Cow<'static, str> {
        std::borrow::Cow::Borrowed("ModelType")
    }
}

/// Bytes as stored (an artifact, an archive): `format: binary`, which generated clients read as a file.
pub struct Binary;

impl utoipa::PartialSchema for Binary {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, SchemaFormat, Type};
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Binary)))
            .into()
    }
}

impl utoipa::ToSchema for Binary {}

impl utoipa::PartialSchema for Document {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        schema::free_form()
    }
}

impl utoipa::ToSchema for Document {}

impl utoipa::PartialSchema for Manifest {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        schema::free_form()
    }
}

impl utoipa::ToSchema for Manifest {}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EvaluationList {
    pub items: Vec<Evaluation>,
    /// Pass as `page_token` to get the next page; null on the last page.
    pub next_page_token: Option<String>,
}

/// UTC now, truncated to whole microseconds so it survives RFC 3339 round trips.
pub fn now() -> OffsetDateTime {
    let now = OffsetDateTime::now_utc();
    now.replace_nanosecond(now.nanosecond() / 1000 * 1000).unwrap_or(now)
}
