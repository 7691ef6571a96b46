//! `/api/v1/evaluations`: the evaluation API, in the server's default namespace. Each route's work is a
//! `*_in` function that `namespaced.rs` shares for `/api/v1/namespaces/{namespace}/evaluations`.

use axum::body::Body;
use std::sync::Arc;

use axum::Extension;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde::Deserialize;
use uuid::Uuid;

use super::AppState;
use super::extract::{JsonBody, PeerAddr, Query, creator, evaluation_id, flag, whole_number};
use crate::auth::{Access, Caller, Verb, audit};
use crate::backend::{Created, ListQuery, LogOptions, NewEvaluation};
use crate::error::{ApiError, ApiResult, Problem};
use crate::lifecycle::admission::{self, Submission};
use crate::model::{Evaluation, EvaluationList, EvaluationRequest, State as EvalState, now};

pub const DEFAULT_PAGE_SIZE: usize = 50;
const LINES_PER_CHUNK: usize = 256;
/// A batch of log lines ends once it holds this much (lines are cut at 64 KiB, so a batch is at most 320 KiB).
const BATCH_BYTES: usize = 256 * 1024;
pub const MAX_PAGE_SIZE: usize = 500;

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CreateParams {
    /// Validate and show the command that would run, creating nothing.
    #[serde(default, deserialize_with = "flag")]
    #[param(value_type = Option<bool>)]
    dry_run: bool,
}

/// Admits a submission into `namespace` for the backend that will run it: an evaluation not yet stored.
pub(crate) fn admit(state: &AppState, namespace: &str, submission: Submission<'_>) -> ApiResult<NewEvaluation> {
    admission::admit(submission, &state.policy, &state.backend.site(namespace)?, Uuid::new_v4(), now())
}

/// What a dry run shows: the evaluation that would be accepted, and on Kubernetes the objects it would make.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct DryRun {
    #[serde(flatten)]
    pub evaluation: Evaluation,
    /// Kubernetes backend: `{"evaluation": <the Evaluation object>, "job": <the Job it would run as>}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = crate::model::schema::free_form)]
    pub objects: Option<serde_json::Value>,
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
    params(CreateParams, ("Idempotency-Key" = Option<String>, Header, nullable = false, description = "Retries with the same key and body return the original evaluation")),
    request_body = EvaluationRequest,
    responses(
        (status = 202, description = "Accepted; the evaluation will run", body = Evaluation, headers(("Location" = String, description = "The evaluation's URL"), ("Idempotent-Replayed" = String, description = "`true` when an earlier request with the same Idempotency-Key made it"))),
        (status = 200, description = "Dry run: what would run", body = DryRun),
        (status = 400, description = "Malformed JSON, wrong type or unknown field", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Refused by the server's policy, or the caller may not create evaluations here or read a Secret or claim the request names (the field says which)", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Idempotency-Key reused with another body", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"),
        (status = 408, description = "The body did not arrive in time", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid value", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many pending evaluations (in all, or of this creator); see Retry-After", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Backend unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn create_evaluation(
    caller: Caller,
    State(state): State<AppState>,
    query: Query<CreateParams>,
    peer: Option<Extension<PeerAddr>>,
    headers: HeaderMap,
    body: JsonBody<EvaluationRequest>,
) -> ApiResult<Response> {
    create_in(&caller, &state, state.default_namespace(), query, peer, headers, body).await
}

pub(super) async fn create_in(
    caller: &Caller,
    state: &AppState,
    namespace: &str,
    Query(params): Query<CreateParams>,
    peer: Option<Extension<PeerAddr>>,
    headers: HeaderMap,
    JsonBody(request): JsonBody<EvaluationRequest>,
) -> ApiResult<Response> {
    state.authorize(caller, Access::evaluations(Verb::Create, namespace)).await?;
    let submission = if params.dry_run {
        Submission::anonymous(request)
    } else {
        Submission {
            request,
            idempotency_key: headers.get("idempotency-key").map(HeaderValue::as_bytes),
            creator: creator(caller, peer.as_deref()),
        }
    };
    let new = admit(state, namespace, submission)?;
    authorize_references(state, caller, &new.evaluation).await?;
    if params.dry_run {
        let objects = state.backend.dry_run_objects(&new)?;
        return Ok((StatusCode::OK, axum::Json(DryRun { evaluation: new.evaluation, objects })).into_response());
    }
    let id = new.evaluation.id.to_string();
    let created = state.backend.create(new).await;
    audit(caller, "create", namespace, Some(&id), outcome(&created));
    let (evaluation, replayed) = match created? {
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
pub struct ListParams {
    /// Items per page (1–500, default 50).
    #[serde(default, deserialize_with = "whole_number")]
    #[param(minimum = 1, maximum = 500)]
    page_size: Option<usize>,
    /// `next_page_token` of the previous page.
    #[param(pattern = "^[0-9]{1,30}[.][0-9a-f]{32}$")]
    page_token: Option<String>,
    /// Only evaluations in this state.
    state: Option<EvalState>,
    /// `key=value`; repeat for several (all must match).
    #[serde(default)]
    #[param(value_type = Option<Vec<String>>, pattern = "=")]
    label: Vec<LabelSelector>,
    /// Only evaluations this user submitted.
    created_by: Option<String>,
    /// Instead of one namespace: every namespace the server serves in which the caller may list evaluations.
    #[serde(default, deserialize_with = "flag")]
    #[param(value_type = Option<bool>)]
    all_namespaces: bool,
}

/// `key=value`, as the list's `label` parameter takes it.
struct LabelSelector(String, String);

impl<'de> Deserialize<'de> for LabelSelector {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        let (key, value) = raw.split_once('=').ok_or_else(|| serde::de::Error::custom("must be key=value"))?;
        Ok(Self(key.to_string(), value.to_string()))
    }
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
    caller: Caller,
    State(state): State<AppState>,
    query: Query<ListParams>,
) -> ApiResult<axum::Json<EvaluationList>> {
    list_in(&caller, &state, state.default_namespace(), query).await
}

pub(super) async fn list_in(
    caller: &Caller,
    state: &AppState,
    namespace: &str,
    Query(params): Query<ListParams>,
) -> ApiResult<axum::Json<EvaluationList>> {
    if params.all_namespaces {
        return list_across(caller, state, params).await;
    }
    state.authorize(caller, Access::evaluations(Verb::List, namespace)).await?;
    Ok(axum::Json(state.backend.list(namespace, &list_query(params)?).await?))
}

fn list_query(params: ListParams) -> ApiResult<ListQuery> {
    let page_size = params.page_size.unwrap_or(DEFAULT_PAGE_SIZE);
    if !(1..=MAX_PAGE_SIZE).contains(&page_size) {
        return Err(ApiError::invalid("page_size", format!("must be between 1 and {MAX_PAGE_SIZE}")));
    }
    let labels = params.label.into_iter().map(|LabelSelector(key, value)| (key, value)).collect();
    Ok(ListQuery {
        page_size,
        page_token: params.page_token,
        state: params.state,
        labels,
        created_by: params.created_by,
    })
}

/// The evaluations of every served namespace the caller may list; `403` when that is none of them.
async fn list_across(caller: &Caller, state: &AppState, params: ListParams) -> ApiResult<axum::Json<EvaluationList>> {
    let mut allowed = Vec::new();
    for namespace in state.backend.namespaces() {
        if state.auth.allows(caller, &Access::evaluations(Verb::List, namespace)).await? {
            allowed.push(namespace.as_str());
        }
    }
    if allowed.is_empty() {
        audit(caller, "list", "", None, "denied");
        return Err(ApiError::Denied {
            field: None,
            detail: format!(
                "user {} cannot list evaluations.lm-eval-aas.io in any namespace this server serves",
                caller.user
            ),
        });
    }
    Ok(axum::Json(state.backend.list_across(&allowed, &list_query(params)?).await?))
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
pub async fn get_evaluation(
    caller: Caller,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    get_in(&caller, &state, state.default_namespace(), &id).await
}

pub(super) async fn get_in(caller: &Caller, state: &AppState, namespace: &str, id: &str) -> ApiResult<Response> {
    state.authorize(caller, Access::evaluations(Verb::Get, namespace)).await?;
    let json = state.backend.get_json(namespace, evaluation_id(id)?)?;
    Ok(([(header::CONTENT_TYPE, "application/json")], json).into_response())
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LogParams {
    /// Only the last N lines (of what exists when the request arrives).
    #[serde(default, deserialize_with = "whole_number")]
    #[param(minimum = 0, maximum = 1_000_000_000)]
    tail_lines: Option<usize>,
    /// Keep streaming new lines until the evaluation ends.
    #[serde(default, deserialize_with = "flag")]
    #[param(value_type = Option<bool>)]
    follow: bool,
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
        (status = 200, description = "Log lines", content((String = "text/plain"), (String = "text/event-stream"))),
        (status = 404, description = "No such evaluation", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid query parameter", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Too many log streams follow evaluations; see Retry-After", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get_evaluation_logs(
    caller: Caller,
    State(state): State<AppState>,
    Path(id): Path<String>,
    query: Query<LogParams>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    logs_in(&caller, &state, state.default_namespace(), &id, query, headers).await
}

pub(super) async fn logs_in(
    caller: &Caller,
    state: &AppState,
    namespace: &str,
    id: &str,
    Query(params): Query<LogParams>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    state.authorize(caller, Access::evaluation_part("log", namespace)).await?;
    let id = evaluation_id(id)?;
    let options = LogOptions { tail_lines: params.tail_lines, follow: params.follow };
    // A follower holds its place until its stream ends or its client goes.
    let place = if options.follow {
        Some(Arc::clone(&state.limits.log_followers).try_acquire_owned().map_err(|_| ApiError::Unavailable {
            detail: "as many log streams follow evaluations as the server allows; retry later".into(),
            retry_after_seconds: 5,
        })?)
    } else {
        None
    };
    let lines = state.backend.logs(namespace, id, options).await?.inspect(move |_| {
        let _ = &place;
    });
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
        // Lines go out in batches: one chunk per line would cost a write per line.
        let body = Body::from_stream(batches(lines).map(Ok::<_, std::convert::Infallible>));
        Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8"), (header::CACHE_CONTROL, "no-cache")], body)
            .into_response())
    }
}

/// The lines ready now, each ended by `\n`, as one text of at most `LINES_PER_CHUNK` lines and about
/// `BATCH_BYTES`; waits only while it has none.
fn batches(
    lines: impl futures::Stream<Item = String> + Send + 'static,
) -> impl futures::Stream<Item = String> + Send + 'static {
    use std::task::Poll;
    let mut lines = lines.boxed().fuse();
    futures::stream::poll_fn(move |cx| {
        let mut text = String::new();
        for _ in 0..LINES_PER_CHUNK {
            match lines.poll_next_unpin(cx) {
                Poll::Ready(Some(line)) => {
                    text.push_str(&line);
                    text.push('\n');
                    if text.len() >= BATCH_BYTES {
                        break;
                    }
                }
                Poll::Ready(None) if text.is_empty() => return Poll::Ready(None),
                Poll::Pending if text.is_empty() => return Poll::Pending,
                Poll::Ready(None) | Poll::Pending => break,
            }
        }
        Poll::Ready(Some(text))
    })
}

/// The results JSON lm-eval wrote, verbatim.
#[utoipa::path(
    get,
    path = "/api/v1/evaluations/{id}/results",
    operation_id = "get_evaluation_results",
    tag = "evaluations",
    params(("id" = Uuid, Path, description = "Evaluation id")),
    responses(
        (status = 200, description = "lm-eval's results file", body = crate::model::Document),
        (status = 404, description = "No such evaluation", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Not succeeded (yet)", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get_evaluation_results(
    caller: Caller,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    results_in(&caller, &state, state.default_namespace(), &id).await
}

pub(super) async fn results_in(caller: &Caller, state: &AppState, namespace: &str, id: &str) -> ApiResult<Response> {
    state.authorize(caller, Access::evaluation_part("results", namespace)).await?;
    let id = evaluation_id(id)?;
    if let Some(response) = super::outputs::stored_results(state, namespace, id).await? {
        return Ok(response);
    }
    let bytes = state.backend.results(namespace, id).await?;
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
pub async fn cancel_evaluation(
    caller: Caller,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    cancel_in(&caller, &state, state.default_namespace(), &id).await
}

pub(super) async fn cancel_in(caller: &Caller, state: &AppState, namespace: &str, id: &str) -> ApiResult<Response> {
    state.authorize(caller, Access::evaluations(Verb::Patch, namespace)).await?;
    let cancelled = state.backend.cancel(namespace, evaluation_id(id)?).await;
    audit(caller, "cancel", namespace, Some(id), outcome(&cancelled));
    let evaluation = cancelled?;
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
pub async fn delete_evaluation(
    caller: Caller,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    delete_in(&caller, &state, state.default_namespace(), &id).await
}

pub(super) async fn delete_in(caller: &Caller, state: &AppState, namespace: &str, id: &str) -> ApiResult<StatusCode> {
    state.authorize(caller, Access::evaluations(Verb::Delete, namespace)).await?;
    let deleted = state.backend.delete(namespace, evaluation_id(id)?).await;
    audit(caller, "delete", namespace, Some(id), outcome(&deleted));
    deleted?;
    Ok(StatusCode::NO_CONTENT)
}

/// An audit line's outcome of a write.
pub(crate) fn outcome<T>(result: &ApiResult<T>) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(ApiError::NotFound(_)) => "not-found",
        Err(_) => "failed",
    }
}

/// The Secrets and claims a request names are read on the caller's behalf: the caller must be allowed to `get`
/// each of them itself, and to `update` a claim it mounts writable, else the service would hand them what RBAC
/// keeps from them. The admission policy (`k8s/base/admission-evaluations.yaml`) asks the same of `kubectl`.
async fn authorize_references(state: &AppState, caller: &Caller, evaluation: &Evaluation) -> ApiResult<()> {
    let (namespace, request) = (evaluation.namespace.as_str(), &evaluation.request);
    let secrets = request.env.iter().enumerate().filter_map(|(i, env)| {
        env.secret
            .as_ref()
            .map(|secret| (format!("env[{i}].secret"), Access::object("secrets", namespace, &secret.name)))
    });
    let claims = request.volumes.iter().enumerate().flat_map(|(i, volume)| {
        let read = Access::object("persistentvolumeclaims", namespace, &volume.pvc);
        let write = (volume.read_only == Some(false)).then(|| Access { verb: Verb::Update, ..read.clone() });
        std::iter::once(read).chain(write).map(move |access| (format!("volumes[{i}].pvc"), access))
    });
    for (field, access) in secrets.chain(claims) {
        if !state.auth.allows(caller, &access).await? {
            audit(caller, "create", namespace, None, "denied");
            return Err(ApiError::Denied { field: Some(field), detail: access.denial(caller) });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn log_batches_hold_what_is_ready_up_to_a_size() {
        let short: Vec<String> = (0..300).map(|i| format!("line {i}")).collect();
        let got: Vec<String> = batches(futures::stream::iter(short)).collect().await;
        assert_eq!(got.iter().map(|t| t.lines().count()).collect::<Vec<_>>(), [LINES_PER_CHUNK, 300 - LINES_PER_CHUNK]);
        assert!(got[0].starts_with("line 0\nline 1\n") && got[1].ends_with("line 299\n"));
        let long = vec!["x".repeat(64 * 1024); 10];
        let got: Vec<String> = batches(futures::stream::iter(long)).collect().await;
        assert_eq!(got.iter().map(|t| t.lines().count()).collect::<Vec<_>>(), [4, 4, 2], "about BATCH_BYTES each");
        let none: Vec<String> = batches(futures::stream::iter(Vec::<String>::new())).collect().await;
        assert!(none.is_empty());
    }
}
