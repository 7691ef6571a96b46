//! The routes of the Flask service we replace, with its JSON shapes, on the same evaluations.

use std::collections::BTreeMap;

use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

use super::AppState;
use super::evaluations::{admit, outcome};
use super::extract::{JsonBody, PeerAddr, Query, creator};
use crate::auth::{Access, Caller, Verb, audit};
use crate::backend::{Created, ListQuery};
use crate::error::{ApiError, Problem};
use crate::lifecycle::admission::Submission;
use crate::model::{EvaluationRequest, State as EvalState};

/// The Flask service's submission: lm-eval's CLI strings rather than JSON structures.
#[derive(Debug, Deserialize, ToSchema)]
pub struct LegacySubmission {
    pub model: String,
    /// `k=v,k2=v2`, as lm-eval's `--model_args`.
    #[serde(default)]
    pub model_args: Option<String>,
    /// Comma-separated task names (a JSON list is accepted too).
    #[schema(value_type = String)]
    pub tasks: Value,
    #[serde(default, deserialize_with = "crate::model::schema::optional_integer")]
    pub num_fewshot: Option<i64>,
    /// `k=v,k2=v2`, as lm-eval's `--gen_kwargs`.
    #[serde(default)]
    pub gen_kwargs: Option<String>,
    #[serde(default)]
    pub log_samples: Option<bool>,
    #[serde(default)]
    #[schema(schema_with = crate::model::schema::limit)]
    pub limit: Option<serde_json::Number>,
    #[serde(default)]
    pub include_path: Option<String>,
    #[serde(default)]
    #[schema(schema_with = crate::model::schema::batch_size)]
    pub batch_size: Option<Value>,
    #[serde(default, deserialize_with = "crate::model::schema::optional_integer")]
    pub max_batch_size: Option<i64>,
    #[serde(default)]
    pub system_instruction: Option<String>,
    #[serde(default)]
    #[schema(schema_with = crate::model::schema::chat_template)]
    pub apply_chat_template: Option<Value>,
    #[serde(default)]
    pub fewshot_as_multiturn: Option<bool>,
    #[serde(default)]
    pub predict_only: Option<bool>,
    #[serde(default)]
    #[schema(schema_with = crate::model::schema::seed)]
    pub seed: Option<Value>,
}

#[derive(Serialize, ToSchema)]
pub struct LegacyTicket {
    pub task_id: String,
}

#[derive(Serialize, ToSchema)]
pub struct LegacyStatus {
    /// `running`, `complete`, `error`, `cancelled` or `not found`.
    pub status: String,
}

#[derive(Serialize, ToSchema)]
pub struct LegacyJob {
    pub task_id: String,
    pub status: String,
}

#[derive(Serialize, ToSchema)]
pub struct LegacyError {
    pub error: String,
}

/// An error as the Flask service answered it (`{"error": …}`), with the problem document's members beside it.
#[derive(Serialize, ToSchema)]
pub struct LegacyProblem {
    /// What went wrong (the problem's `detail`).
    pub error: String,
    #[serde(flatten)]
    pub problem: Problem,
}

/// The Flask service's answer for a `task_id` it does not know.
#[derive(Serialize, ToSchema)]
pub struct LegacyNotFound {
    /// Always `not found`.
    pub status: String,
    pub error: String,
}

fn legacy_status(state: EvalState) -> &'static str {
    match state {
        EvalState::Pending | EvalState::Running => "running",
        EvalState::Succeeded => "complete",
        EvalState::Failed => "error",
        EvalState::Cancelled => "cancelled",
    }
}

/// The Flask service's status code for an error: its clients branch on 400 for any submission it could not
/// take (malformed, wrong media type, too large, an invalid value) and on 404 for any `task_id` it could not
/// find; the rest (authentication, authorization, back-pressure) are ours and keep their codes.
fn legacy_status_code(err: &ApiError) -> StatusCode {
    match err.status() {
        StatusCode::UNPROCESSABLE_ENTITY | StatusCode::UNSUPPORTED_MEDIA_TYPE | StatusCode::PAYLOAD_TOO_LARGE => {
            StatusCode::BAD_REQUEST
        }
        status => status,
    }
}

/// Whether `path` is one of the Flask service's routes.
pub(super) fn is_flask_route(path: &str) -> bool {
    matches!(path, "/submit_job" | "/poll_job" | "/job_results" | "/list_jobs" | "/cancel_job")
}

/// Errors are JSON with the Flask service's `error` member and keep the problem document's members beside it.
pub(super) fn legacy_error(err: ApiError) -> Response {
    let status = legacy_status_code(&err);
    let problem = err.problem();
    let body = LegacyProblem { error: problem.detail.clone(), problem: Problem { status: status.as_u16(), ..problem } };
    // The problem response's headers (Retry-After, WWW-Authenticate); the Flask service's codes are plain JSON.
    let (mut parts, _) = err.into_response().into_parts();
    parts.status = status;
    if status == StatusCode::BAD_REQUEST {
        parts
            .headers
            .insert(axum::http::header::CONTENT_TYPE, axum::http::HeaderValue::from_static("application/json"));
    }
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    Response::from_parts(parts, axum::body::Body::from(serde_json::to_vec(&body).unwrap_or_default()))
}

fn not_found(detail: impl Into<String>) -> Response {
    (StatusCode::NOT_FOUND, axum::Json(LegacyNotFound { status: "not found".into(), error: detail.into() }))
        .into_response()
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TaskIdParams {
    /// The id from /submit_job
    #[serde(default)]
    #[param(required = true)]
    task_id: String,
}

/// The evaluation id `task_id` names; a missing or malformed one is a task the Flask service would not find.
fn task_id(query: Result<Query<TaskIdParams>, ApiError>) -> Result<uuid::Uuid, Box<Response>> {
    let Query(TaskIdParams { task_id }) = query.map_err(|err| Box::new(not_found(err.to_string())))?;
    if task_id.is_empty() {
        return Err(Box::new(not_found("task_id is required")));
    }
    uuid::Uuid::parse_str(&task_id).map_err(|_| Box::new(not_found(format!("no task {task_id:?}"))))
}

/// The evaluation `task_id` names, or the Flask service's answer when there is none.
async fn lookup(
    caller: &Caller,
    state: &AppState,
    access: Access,
    query: Result<Query<TaskIdParams>, ApiError>,
) -> Result<crate::model::Evaluation, Box<Response>> {
    state.authorize(caller, access).await.map_err(|err| Box::new(legacy_error(err)))?;
    let id = task_id(query)?;
    state.backend.get(state.default_namespace(), id).map_err(|err| match err {
        ApiError::NotFound(_) => Box::new(not_found(format!("no task {id}"))),
        err => Box::new(legacy_error(err)),
    })
}

/// lm-eval's reading of one `k=v` value (`lm_eval._cli.utils.handle_cli_value_string`).
fn cli_value(raw: &str) -> Value {
    if raw.eq_ignore_ascii_case("true") {
        return Value::Bool(true);
    }
    if raw.eq_ignore_ascii_case("false") {
        return Value::Bool(false);
    }
    if !raw.is_empty()
        && raw.chars().all(|c| c.is_ascii_digit())
        && let Ok(n) = raw.parse::<u64>()
    {
        return Value::from(n);
    }
    if let Ok(x) = raw.parse::<f64>()
        && x.is_finite()
        && let Some(n) = serde_json::Number::from_f64(x)
    {
        return Value::Number(n);
    }
    // Python literals that are also JSON (lists, quoted strings) keep their structure.
    serde_json::from_str::<Value>(&raw.replace('\'', "\"")).unwrap_or_else(|_| Value::String(raw.to_string()))
}

/// lm-eval's `k=v,k2=v2` syntax, commas inside brackets and quotes kept.
fn parse_key_values(field: &str, raw: &str) -> Result<Map<String, Value>, ApiError> {
    let mut parts = Vec::new();
    let (mut depth, mut quote, mut current) = (0usize, None::<char>, String::new());
    for c in raw.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'') => quote = Some(c),
            (None, '[' | '(' | '{') => depth += 1,
            (None, ']' | ')' | '}') => depth = depth.saturating_sub(1),
            (None, ',') if depth == 0 => {
                parts.push(std::mem::take(&mut current));
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    parts.push(current);
    let mut map = Map::new();
    for part in parts.iter().filter(|p| !p.trim().is_empty()) {
        let (key, value) = part
            .split_once('=')
            .ok_or_else(|| ApiError::invalid(field, format!("expected key=value, got {part:?}")))?;
        map.insert(key.trim().to_string(), cli_value(value));
    }
    Ok(map)
}

fn to_request(submission: LegacySubmission) -> Result<EvaluationRequest, ApiError> {
    let tasks = match &submission.tasks {
        Value::String(s) => s.split(',').map(str::trim).filter(|t| !t.is_empty()).map(str::to_string).collect(),
        Value::Array(items) => items.iter().filter_map(Value::as_str).map(str::to_string).collect(),
        _ => return Err(ApiError::invalid("tasks", "must be a comma-separated string of task names")),
    };
    let model_args =
        submission.model_args.as_deref().map(|s| parse_key_values("model_args", s)).transpose()?.unwrap_or_default();
    let gen_kwargs =
        submission.gen_kwargs.as_deref().map(|s| parse_key_values("gen_kwargs", s)).transpose()?.unwrap_or_default();
    Ok(EvaluationRequest {
        model: submission.model,
        model_args,
        tasks,
        num_fewshot: submission.num_fewshot,
        limit: submission.limit,
        batch_size: submission.batch_size,
        max_batch_size: submission.max_batch_size,
        gen_kwargs,
        log_samples: submission.log_samples.unwrap_or(false),
        apply_chat_template: submission.apply_chat_template,
        fewshot_as_multiturn: submission.fewshot_as_multiturn,
        system_instruction: submission.system_instruction,
        seed: submission.seed,
        predict_only: submission.predict_only.unwrap_or(false),
        metadata: Map::new(),
        inline_tasks: BTreeMap::new(),
        include_path: submission.include_path,
        env: Vec::new(),
        volumes: Vec::new(),
        resources: None,
        timeout_seconds: None,
        labels: BTreeMap::new(),
        allow_online: false,
        allow_code_execution: false,
    })
}

/// Submit an evaluation (Flask API).
#[utoipa::path(
    post,
    path = "/submit_job",
    operation_id = "legacy_submit_job",
    tag = "legacy",
    request_body = LegacySubmission,
    responses(
        (status = 200, description = "Accepted", body = LegacyTicket),
        (status = 400, description = "Not a submission it can take: malformed, not JSON, too large, or a value not acceptable (`field` names it)", body = LegacyProblem),
        (status = 429, description = "Too many pending evaluations; see Retry-After", body = LegacyProblem, content_type = "application/problem+json"),
        (status = 503, description = "The server cannot take submissions now; see Retry-After", body = LegacyProblem, content_type = "application/problem+json"),
    )
)]
pub async fn submit_job(
    caller: Caller,
    State(state): State<AppState>,
    peer: Option<Extension<PeerAddr>>,
    body: Result<JsonBody<LegacySubmission>, ApiError>,
) -> Response {
    let result = async {
        let namespace = state.default_namespace();
        state.authorize(&caller, Access::evaluations(Verb::Create, namespace)).await?;
        let JsonBody(submission) = body?;
        let submission =
            Submission { creator: creator(&caller, peer.as_deref()), ..Submission::anonymous(to_request(submission)?) };
        let new = admit(&state, namespace, submission)?;
        let id = new.evaluation.id.to_string();
        let created = state.backend.create(new).await;
        audit(&caller, "create", namespace, Some(&id), outcome(&created));
        match created? {
            Created::New(evaluation) | Created::Existing(evaluation) => {
                state.metrics.evaluation_created();
                Ok::<_, ApiError>(evaluation)
            }
        }
    }
    .await;
    match result {
        Ok(evaluation) => axum::Json(LegacyTicket { task_id: evaluation.id.to_string() }).into_response(),
        Err(err) => legacy_error(err),
    }
}

/// Poll an evaluation's status (Flask API).
#[utoipa::path(
    get,
    path = "/poll_job",
    operation_id = "legacy_poll_job",
    tag = "legacy",
    params(TaskIdParams),
    responses(
        (status = 200, description = "Status", body = LegacyStatus),
        (status = 404, description = "No such task id (or none given)", body = LegacyNotFound),
    )
)]
pub async fn poll_job(
    caller: Caller,
    State(state): State<AppState>,
    query: Result<Query<TaskIdParams>, ApiError>,
) -> Response {
    let access = Access::evaluations(Verb::Get, state.default_namespace());
    match lookup(&caller, &state, access, query).await {
        Ok(evaluation) => axum::Json(LegacyStatus { status: legacy_status(evaluation.state).into() }).into_response(),
        Err(response) => *response,
    }
}

/// The results JSON of a complete evaluation, else its status or error (Flask API).
#[utoipa::path(
    get,
    path = "/job_results",
    operation_id = "legacy_job_results",
    tag = "legacy",
    params(TaskIdParams),
    responses(
        (status = 200, description = "lm-eval's results JSON when complete; otherwise {\"status\"} or {\"error\"}", body = crate::model::Document),
        (status = 404, description = "No such task id (or none given)", body = LegacyNotFound),
    )
)]
pub async fn job_results(
    caller: Caller,
    State(state): State<AppState>,
    query: Result<Query<TaskIdParams>, ApiError>,
) -> Response {
    let access = Access::evaluation_part("results", state.default_namespace());
    let evaluation = match lookup(&caller, &state, access, query).await {
        Ok(evaluation) => evaluation,
        Err(response) => return *response,
    };
    match evaluation.state {
        EvalState::Succeeded => {
            let namespace = state.default_namespace();
            match super::outputs::stored_results(&state, namespace, evaluation.id).await {
                Ok(Some(response)) => return response,
                Ok(None) => {}
                Err(err) => return legacy_error(err),
            }
            match state.backend.results(namespace, evaluation.id).await {
                Ok(bytes) => ([(axum::http::header::CONTENT_TYPE, "application/json")], bytes).into_response(),
                Err(err) => legacy_error(err),
            }
        }
        EvalState::Failed => {
            let error = evaluation
                .message
                .or(evaluation.reason.map(|r| r.to_string()))
                .unwrap_or_else(|| "evaluation failed".into());
            axum::Json(LegacyError { error }).into_response()
        }
        other => axum::Json(LegacyStatus { status: legacy_status(other).into() }).into_response(),
    }
}

/// All evaluations with their status (Flask API).
#[utoipa::path(
    get,
    path = "/list_jobs",
    operation_id = "legacy_list_jobs",
    tag = "legacy",
    responses((status = 200, description = "Every evaluation", body = Vec<LegacyJob>))
)]
pub async fn list_jobs(caller: Caller, State(state): State<AppState>) -> Response {
    if let Err(err) = state.authorize(&caller, Access::evaluations(Verb::List, state.default_namespace())).await {
        return legacy_error(err);
    }
    let mut jobs = Vec::new();
    let mut query = ListQuery { page_size: super::evaluations::MAX_PAGE_SIZE, ..ListQuery::default() };
    loop {
        let page = match state.backend.list(state.default_namespace(), &query).await {
            Ok(page) => page,
            Err(err) => return legacy_error(err),
        };
        jobs.extend(
            page.items.iter().map(|e| LegacyJob { task_id: e.id.to_string(), status: legacy_status(e.state).into() }),
        );
        match page.next_page_token {
            Some(token) => query.page_token = Some(token),
            None => break,
        }
    }
    axum::Json(jobs).into_response()
}

/// Cancel an evaluation (Flask API).
#[utoipa::path(
    delete,
    path = "/cancel_job",
    operation_id = "legacy_cancel_job",
    tag = "legacy",
    params(TaskIdParams),
    responses(
        (status = 200, description = "Cancelled", body = LegacyJob),
        (status = 404, description = "No such task id (or none given)", body = LegacyNotFound),
        (status = 409, description = "Already finished", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn cancel_job(
    caller: Caller,
    State(state): State<AppState>,
    query: Result<Query<TaskIdParams>, ApiError>,
) -> Response {
    let namespace = state.default_namespace();
    if let Err(err) = state.authorize(&caller, Access::evaluations(Verb::Patch, namespace)).await {
        return legacy_error(err);
    }
    let id = match task_id(query) {
        Ok(id) => id,
        Err(response) => return *response,
    };
    let cancelled = state.backend.cancel(namespace, id).await;
    audit(&caller, "cancel", namespace, Some(&id.to_string()), outcome(&cancelled));
    match cancelled {
        Ok(_) => axum::Json(LegacyJob { task_id: id.to_string(), status: "cancelled".into() }).into_response(),
        Err(ApiError::NotFound(_)) => not_found(format!("no task {id}")),
        Err(err) => legacy_error(err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn key_values_are_read_the_way_lm_eval_reads_them() {
        let map =
            parse_key_values("model_args", "pretrained=gpt2,max_length=2048,temperature=0.5,trust=True,stop=['a,b']")
                .expect("parse");
        assert_eq!(map["pretrained"], json!("gpt2"));
        assert_eq!(map["max_length"], json!(2048));
        assert_eq!(map["temperature"], json!(0.5));
        assert_eq!(map["trust"], json!(true));
        assert_eq!(map["stop"], json!(["a,b"]));
        assert!(parse_key_values("model_args", "novalue").is_err());
    }
}
