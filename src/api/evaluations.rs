//! `/api/v1/evaluations`: the evaluation API.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::AppState;
use super::extract::{JsonBody, QueryParams, evaluation_id};
use crate::backend::{Created, IdempotencyKey, ListQuery, LogOptions, NewEvaluation};
use crate::command;
use crate::error::{ApiError, ApiResult, Problem};
use crate::model::{Evaluation, EvaluationList, EvaluationRequest, State as EvalState, now};
use crate::validate::{ValidRequest, parse_label_selector};

pub const DEFAULT_PAGE_SIZE: usize = 50;
pub const MAX_PAGE_SIZE: usize = 500;

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
struct CreateParams {
    /// Validate and show the command that would run, creating nothing.
    dry_run: Option<bool>,
}

/// Validates a request into a new, not yet stored, evaluation.
pub(crate) fn prepare(state: &AppState, request: EvaluationRequest) -> ApiResult<NewEvaluation> {
    let valid = ValidRequest::parse(request, &state.policy)?;
    state.backend.check_supported(&valid)?;
    let id = Uuid::new_v4();
    let command = command::build(&valid, &state.backend.plan(id));
    let request = valid.request().clone();
    let evaluation = Evaluation::pending(id, request, command.argv.clone(), now());
    Ok(NewEvaluation { evaluation, valid, command, idempotency: None })
}

/// Submit an evaluation.
///
/// Returns at once with the evaluation's id; it runs in the background. With `dry_run=true`
/// the request is validated and the exact `lm_eval` command returned, and nothing is created.
/// An `Idempotency-Key` header makes retries safe.
#[utoipa::path(
    post,
    path = "/api/v1/evaluations",
    operation_id = "create_evaluation",
    tag = "evaluations",
    params(CreateParams, ("Idempotency-Key" = Option<String>, Header, description = "Retries with the same key and body return the original evaluation")),
    request_body = EvaluationRequest,
    responses(
        (status = 202, description = "Accepted; the evaluation will run", body = Evaluation, headers(("Location" = String, description = "The evaluation's URL"))),
        (status = 200, description = "Dry run: what would run", body = Evaluation),
        (status = 400, description = "Malformed JSON, wrong type or unknown field", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Refused by the server's policy", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Idempotency-Key reused with another body", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid value", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Backend unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn create_evaluation(
    State(state): State<AppState>,
    query: QueryParams,
    headers: HeaderMap,
    JsonBody(request, _): JsonBody<EvaluationRequest>,
) -> ApiResult<Response> {
    let dry_run = query.flag("dry_run")?;
    let mut new = prepare(&state, request)?;
    if dry_run {
        return Ok((StatusCode::OK, axum::Json(new.evaluation)).into_response());
    }
    if let Some(key) = headers.get("idempotency-key") {
        let key = key
            .to_str()
            .ok()
            .filter(|k| !k.is_empty() && k.len() <= 256)
            .ok_or_else(|| ApiError::invalid("Idempotency-Key", "must be 1 to 256 visible ASCII characters"))?;
        let normalised = serde_json::to_vec(new.valid.request()).map_err(ApiError::internal)?;
        let body_digest = format!("{:x}", Sha256::digest(&normalised));
        new.idempotency = Some(IdempotencyKey { key: key.to_string(), body_digest });
    }
    let (evaluation, replayed) = match state.backend.create(new).await? {
        Created::New(evaluation) => {
            state.metrics.evaluation_created();
            tracing::info!(evaluation.id = %evaluation.id, model = %evaluation.request.model, "evaluation accepted");
            (evaluation, false)
        }
        Created::Existing(evaluation) => (evaluation, true),
    };
    let mut response = (StatusCode::ACCEPTED, axum::Json(&evaluation)).into_response();
    if let Ok(location) = HeaderValue::from_str(&evaluation.links.self_) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    if replayed {
        response.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(response)
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
struct ListParams {
    /// Items per page (1–500, default 50).
    page_size: Option<usize>,
    /// `next_page_token` of the previous page.
    page_token: Option<String>,
    /// Only evaluations in this state.
    state: Option<EvalState>,
    /// `key=value`; repeat for several (all must match).
    label: Option<Vec<String>>,
}

/// List evaluations, newest first.
#[utoipa::path(
    get,
    path = "/api/v1/evaluations",
    operation_id = "list_evaluations",
    tag = "evaluations",
    params(ListParams),
    responses(
        (status = 200, description = "A page of evaluations", body = EvaluationList),
        (status = 422, description = "Invalid query parameter", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list_evaluations(
    State(state): State<AppState>,
    query: QueryParams,
) -> ApiResult<axum::Json<EvaluationList>> {
    let page_size = query.parse::<usize>("page_size", "a whole number")?.unwrap_or(DEFAULT_PAGE_SIZE);
    if !(1..=MAX_PAGE_SIZE).contains(&page_size) {
        return Err(ApiError::invalid("page_size", format!("must be between 1 and {MAX_PAGE_SIZE}")));
    }
    let state_filter = query
        .one("state")
        .map(|s| {
            EvalState::parse(s)
                .ok_or_else(|| ApiError::invalid("state", "must be pending, running, succeeded, failed or cancelled"))
        })
        .transpose()?;
    let labels = query.all("label").iter().map(|l| parse_label_selector(l)).collect::<ApiResult<Vec<_>>>()?;
    let list_query =
        ListQuery { page_size, page_token: query.one("page_token").map(str::to_string), state: state_filter, labels };
    Ok(axum::Json(state.backend.list(&list_query).await?))
}

/// Get one evaluation.
#[utoipa::path(
    get,
    path = "/api/v1/evaluations/{id}",
    operation_id = "get_evaluation",
    tag = "evaluations",
    params(("id" = Uuid, Path, description = "Evaluation id")),
    responses(
        (status = 200, description = "The evaluation", body = Evaluation),
        (status = 404, description = "No such evaluation", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get_evaluation(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<Response> {
    let json = state.backend.get_json(evaluation_id(&id)?).await?;
    Ok(([(header::CONTENT_TYPE, "application/json")], json).into_response())
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
struct LogParams {
    /// Only the last N lines (of what exists when the request arrives).
    tail_lines: Option<usize>,
    /// Keep streaming new lines until the evaluation ends.
    follow: Option<bool>,
}

/// The evaluation's log (lm-eval's output).
///
/// Plain text, or Server-Sent Events with `Accept: text/event-stream`: one `data:` event per line
/// and a final `event: end` whose data is `end`.
#[utoipa::path(
    get,
    path = "/api/v1/evaluations/{id}/logs",
    operation_id = "get_evaluation_logs",
    tag = "evaluations",
    params(("id" = Uuid, Path, description = "Evaluation id"), LogParams),
    responses(
        (status = 200, description = "Log lines", body = String, content_type = "text/plain"),
        (status = 404, description = "No such evaluation", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid query parameter", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get_evaluation_logs(
    State(state): State<AppState>,
    Path(id): Path<String>,
    query: QueryParams,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let id = evaluation_id(&id)?;
    let options =
        LogOptions { tail_lines: query.parse("tail_lines", "a whole number")?, follow: query.flag("follow")? };
    let lines = state.backend.logs(id, options).await?;
    let mut shutdown = state.shutdown.clone();
    let lines = lines.take_until(async move {
        let _ = shutdown.wait_for(|stopping| *stopping).await;
    });
    let wants_sse =
        headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|v| v.contains("text/event-stream"));
    if wants_sse {
        let events = lines
            .map(|line| Ok::<_, std::convert::Infallible>(Event::default().data(line)))
            .chain(futures::stream::once(async { Ok(Event::default().event("end").data("end")) }));
        Ok(Sse::new(events).into_response())
    } else {
        let body = Body::from_stream(lines.map(|mut line| {
            line.push('\n');
            Ok::<_, std::convert::Infallible>(line)
        }));
        Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8"), (header::CACHE_CONTROL, "no-cache")], body)
            .into_response())
    }
}

/// The results JSON lm-eval wrote, verbatim.
#[utoipa::path(
    get,
    path = "/api/v1/evaluations/{id}/results",
    operation_id = "get_evaluation_results",
    tag = "evaluations",
    params(("id" = Uuid, Path, description = "Evaluation id")),
    responses(
        (status = 200, description = "lm-eval's results file", body = Object),
        (status = 404, description = "No such evaluation", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Not succeeded (yet)", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get_evaluation_results(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<Response> {
    let bytes = state.backend.results(evaluation_id(&id)?).await?;
    Ok(([(header::CONTENT_TYPE, "application/json")], bytes).into_response())
}

/// Cancel a pending or running evaluation.
#[utoipa::path(
    post,
    path = "/api/v1/evaluations/{id}/cancel",
    operation_id = "cancel_evaluation",
    tag = "evaluations",
    params(("id" = Uuid, Path, description = "Evaluation id")),
    responses(
        (status = 202, description = "Cancellation under way (or done)", body = Evaluation),
        (status = 404, description = "No such evaluation", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Already finished", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn cancel_evaluation(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<Response> {
    let evaluation = state.backend.cancel(evaluation_id(&id)?).await?;
    Ok((StatusCode::ACCEPTED, axum::Json(evaluation)).into_response())
}

/// Delete an evaluation and everything it produced; a running one is cancelled first.
#[utoipa::path(
    delete,
    path = "/api/v1/evaluations/{id}",
    operation_id = "delete_evaluation",
    tag = "evaluations",
    params(("id" = Uuid, Path, description = "Evaluation id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such evaluation", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn delete_evaluation(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<StatusCode> {
    state.backend.delete(evaluation_id(&id)?).await?;
    Ok(StatusCode::NO_CONTENT)
}
