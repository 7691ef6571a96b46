//! The vocabulary of causes: one value per cause, whichever backend saw it.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A machine-readable cause for an evaluation's state: the same value on every backend for the same cause.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Reason {
    Cancelled,
    InvalidRequest,
    Timeout,
    LmEvalError,
    Killed,
    NoResults,
    ResultsTooLarge,
    OutputUploadFailed,
    StartError,
    Interrupted,
    #[serde(rename = "OOMKilled")]
    OomKilled,
    Evicted,
    Unschedulable,
    ImagePullBackOff,
    ErrImagePull,
    InvalidImageName,
    CreateContainerConfigError,
    CreateContainerError,
}

impl Reason {
    pub const ALL: [Reason; 18] = [
        Self::Cancelled,
        Self::InvalidRequest,
        Self::Timeout,
        Self::LmEvalError,
        Self::Killed,
        Self::NoResults,
        Self::ResultsTooLarge,
        Self::OutputUploadFailed,
        Self::StartError,
        Self::Interrupted,
        Self::OomKilled,
        Self::Evicted,
        Self::Unschedulable,
        Self::ImagePullBackOff,
        Self::ErrImagePull,
        Self::InvalidImageName,
        Self::CreateContainerConfigError,
        Self::CreateContainerError,
    ];

    /// The value on the wire; where Kubernetes has a name for the cause, it is Kubernetes' name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Cancelled => "Cancelled",
            Self::InvalidRequest => "InvalidRequest",
            Self::Timeout => "Timeout",
            Self::LmEvalError => "LmEvalError",
            Self::Killed => "Killed",
            Self::NoResults => "NoResults",
            Self::ResultsTooLarge => "ResultsTooLarge",
            Self::OutputUploadFailed => "OutputUploadFailed",
            Self::StartError => "StartError",
            Self::Interrupted => "Interrupted",
            Self::OomKilled => "OOMKilled",
            Self::Evicted => "Evicted",
            Self::Unschedulable => "Unschedulable",
            Self::ImagePullBackOff => "ImagePullBackOff",
            Self::ErrImagePull => "ErrImagePull",
            Self::InvalidImageName => "InvalidImageName",
            Self::CreateContainerConfigError => "CreateContainerConfigError",
            Self::CreateContainerError => "CreateContainerError",
        }
    }

    /// What the value means, for the OpenAPI document.
    pub fn description(self) -> &'static str {
        match self {
            Self::Cancelled => "cancelled by request",
            Self::InvalidRequest => {
                "the Evaluation's spec is not a request the service accepts (created past its admission webhook), or it was made past the REST API while its creator or namespace had as many evaluations pending as the pending limits allow; the message has the problem"
            }
            Self::Timeout => "ran longer than the request's timeout_seconds",
            Self::LmEvalError => "lm_eval exited with a non-zero code; the message has the code and the last log lines",
            Self::Killed => "lm_eval was ended by a signal; the message has the signal and the last log lines",
            Self::NoResults => "lm_eval exited 0 but wrote no results file",
            Self::ResultsTooLarge => "the results JSON does not fit where the backend keeps it",
            Self::OutputUploadFailed => {
                "the output set could not be written to the output store, after retrying; what was written before stays"
            }
            Self::StartError => "the evaluation's process could not be started",
            Self::Interrupted => "the evaluation's process ended without recording an exit status",
            Self::OomKilled => "the runner container exceeded its memory limit (kubernetes)",
            Self::Evicted => "the node evicted the runner pod (kubernetes)",
            Self::Unschedulable => "no node can run the pod: resources, node selector or taints (kubernetes)",
            Self::ImagePullBackOff => "the runner image cannot be pulled; retrying with back-off (kubernetes)",
            Self::ErrImagePull => "the runner image could not be pulled (kubernetes)",
            Self::InvalidImageName => "the runner image name is invalid (kubernetes)",
            Self::CreateContainerConfigError => {
                "the container cannot be configured, e.g. a referenced Secret or key is missing (kubernetes)"
            }
            Self::CreateContainerError => "the container runtime could not create the container (kubernetes)",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|reason| reason.as_str() == s)
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string enum whose description lists what each value means (and `x-enum-descriptions` for generators).
impl utoipa::PartialSchema for Reason {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::extensions::ExtensionsBuilder;
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        let listed: Vec<String> =
            Self::ALL.iter().map(|r| format!("- `{}`: {}", r.as_str(), r.description())).collect();
        ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some(format!(
                "Why the evaluation is in its state; the same value on every backend for the same cause. `pending` \
                 evaluations carry one while their pod waits for something, `failed` and `cancelled` ones always do.\n\n{}",
                listed.join("\n")
            )))
            .enum_values(Some(Self::ALL.iter().map(|r| r.as_str())))
            .extensions(Some(
                ExtensionsBuilder::new()
                    .add("x-enum-descriptions", Self::ALL.iter().map(|r| r.description()).collect::<Vec<_>>())
                    .build(),
            ))
            .into()
    }
}

impl ToSchema for Reason {}

impl schemars::JsonSchema for Reason {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Reason".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let values: Vec<&str> = Self::ALL.iter().map(|r| r.as_str()).collect();
        schemars::json_schema!({"type": "string", "enum": values})
    }
}
