//! `/api/v1/namespaces/{namespace}/evaluations`: the evaluation API in a namespace the server serves (the
//! un-namespaced routes mean its default namespace). Each route does the work of its un-namespaced twin.

use axum::Extension;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;

use super::AppState;
use super::evaluations::{
    CreateParams, DryRun, ListParams, LogParams, cancel_in, create_in, delete_in, get_in, list_in, logs_in, results_in,
};
use super::extract::{JsonBody, PeerAddr, Query};
use super::outputs::{SamplesParams, archive_in, artifact_in, artifacts_in, manifest_in, samples_in};
use crate::auth::Caller;
use crate::error::{ApiResult, Problem};
use crate::model::{Evaluation, EvaluationList, EvaluationRequest};
use crate::outputs::index::ArtifactList;
use axum::extract::OriginalUri;

/// Submit an evaluation in a namespace.
///
/// As `POST /api/v1/evaluations`, in `namespace`. On Kubernetes it is an `Evaluation` object there.
#[utoipa::path(
    post,
    path = "/api/v1/namespaces/{namespace}/evaluations",
    operation_id = "create_namespaced_evaluation",
    tag = "namespaced",
    params(
        ("namespace" = String, Path, description = "A namespace the server serves"),
        CreateParams,
        ("Idempotency-Key" = Option<String>, Header, nullable = false, description = "Retries with the same key and body return the original evaluation"),
    ),
    request_body = EvaluationRequest,
    responses(
        (status = 202, description = "Accepted; the evaluation will run", body = Evaluation, headers(("Location" = String, description = "The evaluation's URL"), ("Idempotent-Replayed" = String, description = "`true` when an earlier request with the same Idempotency-Key made it"))),
        (status = 200, description = "Dry run: what would run", body = DryRun),
        (status = 400, description = "Malformed JSON, wrong type or unknown field", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Refused by the server's policy, or the caller may not create evaluations here or read a Secret or claim the request names (the field says which)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "A namespace the server does not serve", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Idempotency-Key reused with another body", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"),
        (status = 408, description = "The body did not arrive in time", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid value", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many pending evaluations (in all, or of this creator); see Retry-After", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Backend unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn create_namespaced_evaluation(
    caller: Caller,
    State(state): State<AppState>,
    Path(namespace): Path<String>,
    query: Query<CreateParams>,
    peer: Option<Extension<PeerAddr>>,
    headers: HeaderMap,
    body: JsonBody<EvaluationRequest>,
) -> ApiResult<Response> {
    create_in(&caller, &state, &namespace, query, peer, headers, body).await
}

/// List the evaluations of a namespace, newest first.
#[utoipa::path(
    get,
    path = "/api/v1/namespaces/{namespace}/evaluations",
    operation_id = "list_namespaced_evaluations",
    tag = "namespaced",
    params(("namespace" = String, Path, description = "A namespace the server serves"), ListParams),
    responses(
        (status = 200, description = "A page of evaluations", body = EvaluationList),
        (status = 404, description = "A namespace the server does not serve", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid query parameter", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list_namespaced_evaluations(
    caller: Caller,
    State(state): State<AppState>,
    Path(namespace): Path<String>,
    query: Query<ListParams>,
) -> ApiResult<axum::Json<EvaluationList>> {
    list_in(&caller, &state, &namespace, query).await
}

/// Get one evaluation of a namespace.
#[utoipa::path(
    get,
    path = "/api/v1/namespaces/{namespace}/evaluations/{id}",
    operation_id = "get_namespaced_evaluation",
    tag = "namespaced",
    params(("namespace" = String, Path, description = "A namespace the server serves"), ("id" = uuid::Uuid, Path, description = "Evaluation id")),
    responses(
        (status = 200, description = "The evaluation", body = Evaluation),
        (status = 404, description = "No such evaluation, or a namespace the server does not serve", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get_namespaced_evaluation(
    caller: Caller,
    State(state): State<AppState>,
    Path((namespace, id)): Path<(String, String)>,
) -> ApiResult<Response> {
    get_in(&caller, &state, &namespace, &id).await
}

/// The log of an evaluation of a namespace.
#[utoipa::path(
    get,
    path = "/api/v1/namespaces/{namespace}/evaluations/{id}/logs",
    operation_id = "get_namespaced_evaluation_logs",
    tag = "namespaced",
    params(("namespace" = String, Path, description = "A namespace the server serves"), ("id" = uuid::Uuid, Path, description = "Evaluation id"), LogParams),
    responses(
        (status = 200, description = "Log lines", content((String = "text/plain"), (String = "text/event-stream"))),
        (status = 404, description = "No such evaluation, or a namespace the server does not serve", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid query parameter", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Too many log streams follow evaluations; see Retry-After", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get_namespaced_evaluation_logs(
    caller: Caller,
    State(state): State<AppState>,
    Path((namespace, id)): Path<(String, String)>,
    query: Query<LogParams>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    logs_in(&caller, &state, &namespace, &id, query, headers).await
}

/// The results JSON of an evaluation of a namespace.
#[utoipa::path(
    get,
    path = "/api/v1/namespaces/{namespace}/evaluations/{id}/results",
    operation_id = "get_namespaced_evaluation_results",
    tag = "namespaced",
    params(("namespace" = String, Path, description = "A namespace the server serves"), ("id" = uuid::Uuid, Path, description = "Evaluation id")),
    responses(
        (status = 200, description = "lm-eval's results file", body = crate::model::Document),
        (status = 404, description = "No such evaluation, or a namespace the server does not serve", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Not succeeded (yet)", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get_namespaced_evaluation_results(
    caller: Caller,
    State(state): State<AppState>,
    Path((namespace, id)): Path<(String, String)>,
) -> ApiResult<Response> {
    results_in(&caller, &state, &namespace, &id).await
}

/// Cancel an evaluation of a namespace.
#[utoipa::path(
    post,
    path = "/api/v1/namespaces/{namespace}/evaluations/{id}/cancel",
    operation_id = "cancel_namespaced_evaluation",
    tag = "namespaced",
    params(("namespace" = String, Path, description = "A namespace the server serves"), ("id" = uuid::Uuid, Path, description = "Evaluation id")),
    responses(
        (status = 202, description = "Cancellation under way (or done)", body = Evaluation),
        (status = 404, description = "No such evaluation, or a namespace the server does not serve", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Already finished", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn cancel_namespaced_evaluation(
    caller: Caller,
    State(state): State<AppState>,
    Path((namespace, id)): Path<(String, String)>,
) -> ApiResult<Response> {
    cancel_in(&caller, &state, &namespace, &id).await
}

/// Delete an evaluation of a namespace.
#[utoipa::path(
    delete,
    path = "/api/v1/namespaces/{namespace}/evaluations/{id}",
    operation_id = "delete_namespaced_evaluation",
    tag = "namespaced",
    params(("namespace" = String, Path, description = "A namespace the server serves"), ("id" = uuid::Uuid, Path, description = "Evaluation id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such evaluation, or a namespace the server does not serve", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn delete_namespaced_evaluation(
    caller: Caller,
    State(state): State<AppState>,
    Path((namespace, id)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    delete_in(&caller, &state, &namespace, &id).await
}

/// The per-sample records of one task of an evaluation of a namespace (see `get_evaluation_samples`).
#[utoipa::path(
    get,
    path = "/api/v1/namespaces/{namespace}/evaluations/{id}/samples",
    operation_id = "get_namespaced_evaluation_samples",
    tag = "namespaced",
    params(("namespace" = String, Path, description = "A namespace the server serves"), ("id" = uuid::Uuid, Path, description = "Evaluation id"), SamplesParams),
    responses(
        (status = 200, description = "One page of records, one JSON object per line", body = String, content_type = "application/x-ndjson", headers(("Link" = String, description = "`<URL>; rel=\"next\"` while more pages follow"))),
        (status = 404, description = "No such evaluation, or no samples of that task", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The evaluation did not set log_samples, has not ended, or the service keeps no output sets", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A parameter is not valid", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get_namespaced_evaluation_samples(
    caller: Caller,
    State(state): State<AppState>,
    Path((namespace, id)): Path<(String, String)>,
    OriginalUri(uri): OriginalUri,
    Query(params): Query<SamplesParams>,
) -> ApiResult<Response> {
    samples_in(&caller, &state, &namespace, &id, uri.path(), params).await
}

/// The files of the output set of an evaluation of a namespace.
#[utoipa::path(
    get,
    path = "/api/v1/namespaces/{namespace}/evaluations/{id}/artifacts",
    operation_id = "list_namespaced_evaluation_artifacts",
    tag = "namespaced",
    params(("namespace" = String, Path, description = "A namespace the server serves"), ("id" = uuid::Uuid, Path, description = "Evaluation id")),
    responses(
        (status = 200, description = "The output set's files", body = ArtifactList),
        (status = 404, description = "No such evaluation", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Not ended yet, or the service keeps no output sets", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list_namespaced_evaluation_artifacts(
    caller: Caller,
    State(state): State<AppState>,
    Path((namespace, id)): Path<(String, String)>,
) -> ApiResult<Response> {
    artifacts_in(&caller, &state, &namespace, &id).await
}

/// One file of the output set of an evaluation of a namespace (see `get_evaluation_artifact`).
#[utoipa::path(
    get,
    path = "/api/v1/namespaces/{namespace}/evaluations/{id}/artifacts/{path}",
    operation_id = "get_namespaced_evaluation_artifact",
    tag = "namespaced",
    params(
        ("namespace" = String, Path, description = "A namespace the server serves"),
        ("id" = uuid::Uuid, Path, description = "Evaluation id"),
        ("path" = String, Path, description = "The artifact's path, as listed", pattern = r"^(?!/)(?!.*/$)(?!.*//)(?!(.*/)?\.\.?(/|$))[^\\\x00-\x1f\x7f-\x9f]{1,512}$"),
        ("Range" = Option<String>, Header, description = "`bytes=START-END`, `bytes=START-` or `bytes=-LAST`"),
    ),
    responses(
        (status = 200, description = "The file, typed by its name", content((crate::model::Binary = "application/octet-stream"), (serde_json::Value = "application/json"), (String = "application/x-ndjson"), (String = "text/plain; charset=utf-8"), (String = "application/yaml"), (String = "text/csv"))),
        (status = 206, description = "The requested range, typed by its name", content((crate::model::Binary = "application/octet-stream"), (serde_json::Value = "application/json"), (String = "application/x-ndjson"), (String = "text/plain; charset=utf-8"), (String = "application/yaml"), (String = "text/csv"))),
        (status = 404, description = "No such evaluation or artifact", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Not ended yet, or the service keeps no output sets", body = Problem, content_type = "application/problem+json"),
        (status = 416, description = "The range is not within the file", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Not a path of an output set", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get_namespaced_evaluation_artifact(
    caller: Caller,
    State(state): State<AppState>,
    Path((namespace, id, path)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    artifact_in(&caller, &state, &namespace, &id, &path, &headers).await
}

/// Every file of the output set of an evaluation of a namespace, in one tar.gz.
#[utoipa::path(
    get,
    path = "/api/v1/namespaces/{namespace}/evaluations/{id}/artifacts.tar.gz",
    operation_id = "get_namespaced_evaluation_archive",
    tag = "namespaced",
    params(("namespace" = String, Path, description = "A namespace the server serves"), ("id" = uuid::Uuid, Path, description = "Evaluation id")),
    responses(
        (status = 200, description = "A tar.gz of every artifact", body = crate::model::Binary, content_type = "application/gzip"),
        (status = 404, description = "No such evaluation", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Not ended yet, or the service keeps no output sets", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get_namespaced_evaluation_archive(
    caller: Caller,
    State(state): State<AppState>,
    Path((namespace, id)): Path<(String, String)>,
) -> ApiResult<Response> {
    archive_in(&caller, &state, &namespace, &id).await
}

/// The reproducibility manifest of an evaluation of a namespace.
#[utoipa::path(
    get,
    path = "/api/v1/namespaces/{namespace}/evaluations/{id}/manifest",
    operation_id = "get_namespaced_evaluation_manifest",
    tag = "namespaced",
    params(("namespace" = String, Path, description = "A namespace the server serves"), ("id" = uuid::Uuid, Path, description = "Evaluation id")),
    responses(
        (status = 200, description = "The manifest", body = crate::model::Manifest),
        (status = 404, description = "No such evaluation", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Not ended yet, or the service keeps no output sets", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get_namespaced_evaluation_manifest(
    caller: Caller,
    State(state): State<AppState>,
    Path((namespace, id)): Path<(String, String)>,
) -> ApiResult<Response> {
    manifest_in(&caller, &state, &namespace, &id).await
}
