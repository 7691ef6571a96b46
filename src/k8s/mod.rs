//! Kubernetes pieces that do no I/O: the Job an evaluation runs as, the record its driver keeps in a
//! ConfigMap, and the evaluation's status read back from those objects. They know nothing of who creates
//! the Job or where else results may go, so a controller can reuse them as they are.

pub mod admission;
pub mod crd;
pub mod job;
pub mod resource;
pub mod run_record;
pub mod status;

use uuid::Uuid;

pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "lm-eval-aas";
pub const EVALUATION_ID_LABEL: &str = "lm-eval-aas.io/evaluation-id";
/// On ConfigMaps: `run-record` (the driver's) or `input` (inline tasks and the generated config).
pub const KIND_LABEL: &str = "lm-eval-aas.io/kind";
pub const RUN_RECORD_KIND: &str = "run-record";
pub const INPUT_KIND: &str = "input";

/// The evaluation as accepted (request, command, labels, creation time), JSON.
pub const EVALUATION_ANNOTATION: &str = "lm-eval-aas.io/evaluation";
/// SHA-256 of the normalised request of an idempotent create.
pub const REQUEST_DIGEST_ANNOTATION: &str = "lm-eval-aas.io/request-digest";
/// Who submitted the evaluation (counted against the pending limits).
pub const CREATOR_ANNOTATION: &str = "lm-eval-aas.io/creator";
/// RFC 3339 time a cancellation was asked for; the Job is suspended at the same time.
pub const CANCELLED_AT_ANNOTATION: &str = "lm-eval-aas.io/cancelled-at";
/// JSON `{reason, message, at}`: a failure the service decided (a pod stuck waiting), the Job suspended with it.
pub const FAILED_ANNOTATION: &str = "lm-eval-aas.io/failed";

/// Secrets of the service itself (its output store's credentials, its webhook's key) and of each run (its upload
/// URLs) begin with one of these: no evaluation may name one, by any door (REST, the webhook, the admission
/// policy in `k8s/base/admission-evaluations.yaml`, which spells the same list).
pub const RESERVED_SECRET_PREFIXES: &[&str] = &["lm-eval-aas", "lmeval-"];

/// The Job, and the driver's ConfigMap, of evaluation `id`.
pub fn object_name(id: Uuid) -> String {
    format!("lmeval-{}", id.simple())
}

/// The ConfigMap with the request's inline tasks and generated config file.
pub fn input_name(id: Uuid) -> String {
    format!("lmeval-{}-input", id.simple())
}

/// The label selector of everything the service manages.
pub fn managed_selector() -> String {
    format!("{MANAGED_BY_LABEL}={MANAGED_BY}")
}
