//! An evaluation's output set over HTTP: per-sample records page by page, the artifacts (listed, downloaded
//! with `Range`, or all in one `tar.gz`), and the reproducibility manifest. Everything is streamed from
//! wherever the backend keeps it; nothing is loaded whole. Each route's work is an `*_in` function shared by
//! the default-namespace and the namespaced route.

use axum::body::Body;
use axum::extract::{OriginalUri, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde::Deserialize;

use super::AppState;
use super::extract::{Query, evaluation_id, whole_number};
use crate::auth::{Access, Caller};
use crate::error::{ApiError, ApiResult, Problem};
use crate::model::State as EvalState;
use crate::outputs::index::{self, ArtifactList, Stored};
use crate::outputs::samples::{KeptBytes, Outcome, Records, SampleFilter, page_token, parse_page_token};
use crate::outputs::{OutputSet, archive};

const DEFAULT_SAMPLES_PAGE: usize = 100;
const MAX_SAMPLES_PAGE: usize = 1000;
const NDJSON: &str = "application/x-ndjson";

/// The output set of an evaluation the caller may read results of.
async fn output_set(caller: &Caller, state: &AppState, namespace: &str, id: &str) -> ApiResult<OutputSet> {
    state.authorize(caller, Access::evaluation_part("results", namespace)).await?;
    let id = evaluation_id(id)?;
    state.backend.outputs(namespace, id).await?.ok_or_else(|| {
        ApiError::Conflict(
            "this service keeps results and the log's end in the run record (--output-store configmap); per-sample records, artifacts and manifests need an object store or a claim".into(),
        )
    })
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SamplesParams {
    /// The task whose records to read (one of those the evaluation ran with `log_samples`).
    task: Option<String>,
    /// Records per page (1–1000, default 100).
    #[serde(default, deserialize_with = "whole_number")]
    #[param(minimum = 1, maximum = 1000)]
    page_size: Option<usize>,
    /// Where the page starts: the token in the previous page's `Link: rel="next"` (`o` and a byte offset; the page
    /// starts at the first record at or after it).
    #[param(pattern = "^o[0-9]{1,19}$")]
    page_token: Option<String>,
    /// Only the samples the task's metric scores 1 (`correct`) or 0 (`incorrect`).
    outcome: Option<Outcome>,
    /// The metric `outcome` looks at; by default each record's first metric (`acc`, `exact_match`…).
    metric: Option<String>,
}

/// The per-sample records of one task, as lm-eval wrote them.
///
/// JSON lines (`application/x-ndjson`), one record per line, streamed; the next page's URL is in
/// `Link: <…>; rel="next"` (absent on the last page).
#[utoipa::path(
    get,
    path = "/api/v1/evaluations/{id}/samples",
    operation_id = "get_evaluation_samples",
    tag = "evaluations",
    params(("id" = uuid::Uuid, Path, description = "Evaluation id"), SamplesParams),
    responses(
        (status = 200, description = "One page of records, one JSON object per line", body = String, content_type = "application/x-ndjson", headers(("Link" = String, description = "`<URL>; rel=\"next\"` while more pages follow"))),
        (status = 404, description = "No such evaluation, or no samples of that task (the field says which)", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The evaluation did not set log_samples, has not ended, or the service keeps no output sets", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A parameter is not valid, or the outcome filter means nothing for the task's metric", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get_evaluation_samples(
    caller: Caller,
    State(state): State<AppState>,
    Path(id): Path<String>,
    OriginalUri(uri): OriginalUri,
    Query(params): Query<SamplesParams>,
) -> ApiResult<Response> {
    samples_in(&caller, &state, state.default_namespace(), &id, uri.path(), params).await
}

pub(super) async fn samples_in(
    caller: &Caller,
    state: &AppState,
    namespace: &str,
    id: &str,
    route: &str,
    params: SamplesParams,
) -> ApiResult<Response> {
    let set = output_set(caller, state, namespace, id).await?;
    if !set.log_samples {
        return Err(ApiError::Conflict(format!(
            "evaluation {} did not set log_samples, so lm-eval kept no per-sample records; submit it again with \"log_samples\": true",
            set.id
        )));
    }
    let page_size = params.page_size.unwrap_or(DEFAULT_SAMPLES_PAGE);
    if !(1..=MAX_SAMPLES_PAGE).contains(&page_size) {
        return Err(ApiError::invalid("page_size", format!("page_size must be 1 to {MAX_SAMPLES_PAGE}")));
    }
    let index = set.index().await?;
    let tasks = index.tasks_with_samples();
    let task = match (&params.task, tasks.as_slice()) {
        (Some(task), _) => task.as_str(),
        (None, [only]) => only,
        (None, _) => {
            return Err(ApiError::invalid(
                "task",
                format!("task is required; tasks with samples: {}", tasks.join(", ")),
            ));
        }
    };
    let stored = index.samples(task).ok_or_else(|| ApiError::Missing {
        field: "task".into(),
        detail: format!(
            "no samples of task {:?}; tasks with samples: {}",
            task.chars().take(100).collect::<String>(),
            tasks.join(", ")
        ),
    })?;
    let size = stored.artifact.size;
    let start = match &params.page_token {
        None => 0,
        Some(token) => parse_page_token(token)
            .ok_or_else(|| ApiError::invalid("page_token", "page_token is not one this route handed out"))?
            .min(size),
    };
    let start = if start > 0 && start < size { record_at_or_after(&set, stored, start).await? } else { start };
    let filter = SampleFilter { outcome: params.outcome, metric: params.metric.clone() };
    let page = scan_page(&set, stored, start, page_size, &filter).await?;
    let (end, next) = (page.end, page.next);
    let body = if filter.keeps_everything() {
        Body::from_stream(set.stream(stored, start..end).await?)
    } else {
        let mut kept = KeptBytes::new(start, page.kept);
        let bytes = set.stream(stored, start..end).await?;
        Body::from_stream(bytes.map(move |chunk| chunk.map(|chunk| bytes::Bytes::from(kept.push(&chunk)))))
    };
    let mut response = ([(header::CONTENT_TYPE, NDJSON)], body).into_response();
    if let Some(next) = next {
        let mut query = form_urlencoded::Serializer::new(String::new());
        query.append_pair("task", task).append_pair("page_size", &page_size.to_string());
        query.append_pair("page_token", &page_token(next));
        if let Some(outcome) = params.outcome {
            query.append_pair("outcome", if outcome == Outcome::Correct { "correct" } else { "incorrect" });
        }
        if let Some(metric) = &params.metric {
            query.append_pair("metric", metric);
        }
        let link = format!("<{route}?{}>; rel=\"next\"", query.finish());
        if let Ok(value) = HeaderValue::from_str(&link) {
            response.headers_mut().insert(header::LINK, value);
        }
    }
    Ok(response)
}

/// Where the first record at or after `offset` starts (the end of the file when none does).
async fn record_at_or_after(set: &OutputSet, stored: &Stored, offset: u64) -> ApiResult<u64> {
    let size = stored.artifact.size;
    let mut bytes = set.stream(stored, offset - 1..size).await?;
    let mut at = offset - 1;
    while let Some(chunk) = bytes.next().await {
        let chunk = chunk.map_err(ApiError::internal)?;
        if let Some(newline) = chunk.iter().position(|b| *b == b'\n') {
            return Ok(at + newline as u64 + 1);
        }
        at += chunk.len() as u64;
    }
    Ok(size)
}

/// One page of records, as found by reading it once.
struct Page {
    /// Where the page ends.
    end: u64,
    /// Where the next kept record starts (none: this is the last page).
    next: Option<u64>,
    /// The kept records' bytes (without their newlines), when a filter chose them.
    kept: Vec<std::ops::Range<u64>>,
}

/// Reads from `start` until `page_size` records are kept, judging each as it streams past (none is held).
async fn scan_page(
    set: &OutputSet,
    stored: &Stored,
    start: u64,
    page_size: usize,
    filter: &SampleFilter,
) -> ApiResult<Page> {
    let size = stored.artifact.size;
    let mut bytes = set.stream(stored, start..size).await?;
    let mut records = Records::starting_at(start, filter.clone());
    let mut page = Page { end: start, next: None, kept: Vec::new() };
    let refused = |e: String| ApiError::invalid(if filter.metric.is_some() { "metric" } else { "outcome" }, e);
    let mut ended = false;
    while !ended {
        let found = match bytes.next().await {
            Some(chunk) => records.push(&chunk.map_err(ApiError::internal)?),
            None => {
                ended = true;
                records.finish().into_iter().collect()
            }
        };
        for record in found {
            if !record.kept.map_err(refused)? {
                continue;
            }
            if page.kept.len() == page_size {
                page.next = Some(record.start);
                return Ok(page);
            }
            page.kept.push(record.start..record.start + record.length);
            page.end = record.end;
        }
    }
    Ok(page)
}

/// Every file of the evaluation's output set, with its size and SHA-256.
#[utoipa::path(
    get,
    path = "/api/v1/evaluations/{id}/artifacts",
    operation_id = "list_evaluation_artifacts",
    tag = "evaluations",
    params(("id" = uuid::Uuid, Path, description = "Evaluation id")),
    responses(
        (status = 200, description = "The output set's files", body = ArtifactList),
        (status = 404, description = "No such evaluation", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Not ended yet, or the service keeps no output sets", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list_evaluation_artifacts(
    caller: Caller,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    artifacts_in(&caller, &state, state.default_namespace(), &id).await
}

pub(super) async fn artifacts_in(caller: &Caller, state: &AppState, namespace: &str, id: &str) -> ApiResult<Response> {
    let set = output_set(caller, state, namespace, id).await?;
    let index = set.index().await?;
    let items = index.artifacts.into_iter().map(|stored| stored.artifact).collect();
    Ok(axum::Json(ArtifactList { items }).into_response())
}

/// One file of the output set (`path` as listed; its slashes may be sent as they are or encoded).
///
/// Supports `Range: bytes=…` (one range; `206` with `Content-Range`).
#[utoipa::path(
    get,
    path = "/api/v1/evaluations/{id}/artifacts/{path}",
    operation_id = "get_evaluation_artifact",
    tag = "evaluations",
    params(
        ("id" = uuid::Uuid, Path, description = "Evaluation id"),
        ("path" = String, Path, description = "The artifact's path, as listed (e.g. `samples/lmeval_aas_mc.jsonl`)", pattern = r"^(?!/)(?!.*/$)(?!.*//)(?!(.*/)?\.\.?(/|$))[^\\\x00-\x1f\x7f-\x9f]{1,512}$"),
        ("Range" = Option<String>, Header, description = "`bytes=START-END`, `bytes=START-` or `bytes=-LAST`"),
    ),
    responses(
        (status = 200, description = "The file, typed by its name", content((crate::model::Binary = "application/octet-stream"), (serde_json::Value = "application/json"), (String = "application/x-ndjson"), (String = "text/plain; charset=utf-8"), (String = "application/yaml"), (String = "text/csv"))),
        (status = 206, description = "The requested range, typed by its name", content((crate::model::Binary = "application/octet-stream"), (serde_json::Value = "application/json"), (String = "application/x-ndjson"), (String = "text/plain; charset=utf-8"), (String = "application/yaml"), (String = "text/csv"))),
        (status = 404, description = "No such evaluation or artifact", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Not ended yet, or the service keeps no output sets", body = Problem, content_type = "application/problem+json"),
        (status = 416, description = "The range is not within the file", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Not a path of an output set (`..`, absolute, control characters…)", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get_evaluation_artifact(
    caller: Caller,
    State(state): State<AppState>,
    Path((id, path)): Path<(String, String)>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    artifact_in(&caller, &state, state.default_namespace(), &id, &path, &headers).await
}

pub(super) async fn artifact_in(
    caller: &Caller,
    state: &AppState,
    namespace: &str,
    id: &str,
    path: &str,
    headers: &HeaderMap,
) -> ApiResult<Response> {
    let set = output_set(caller, state, namespace, id).await?;
    let path = index::checked_path(path)?;
    let index = set.index().await?;
    let stored = index.find(path).ok_or_else(|| ApiError::Missing {
        field: "path".into(),
        detail: format!("evaluation {} has no artifact {path}", set.id),
    })?;
    let size = stored.artifact.size;
    let range = match headers.get(header::RANGE).and_then(|v| v.to_str().ok()) {
        Some(raw) => byte_range(raw, size)?,
        None => None,
    };
    let (status, span) = match range {
        Some(span) => (StatusCode::PARTIAL_CONTENT, span),
        None => (StatusCode::OK, 0..size),
    };
    let body = Body::from_stream(set.stream(stored, span.clone()).await?);
    let mut response = (status, body).into_response();
    let out = response.headers_mut();
    let name = path.rsplit('/').next().unwrap_or(path).replace(['"', '\\'], "_");
    let values = [
        (header::CONTENT_TYPE, stored.artifact.content_type.clone()),
        (header::CONTENT_LENGTH, (span.end - span.start).to_string()),
        (header::ACCEPT_RANGES, "bytes".into()),
        (header::ETAG, format!("\"{}\"", stored.artifact.sha256)),
        (header::CONTENT_DISPOSITION, format!("attachment; filename=\"{name}\"")),
    ];
    for (name, value) in values {
        if let Ok(value) = HeaderValue::from_str(&value) {
            out.insert(name, value);
        }
    }
    if status == StatusCode::PARTIAL_CONTENT
        && let Ok(value) = HeaderValue::from_str(&format!("bytes {}-{}/{size}", span.start, span.end - 1))
    {
        out.insert(header::CONTENT_RANGE, value);
    }
    Ok(response)
}

/// One range of `Range: bytes=…` within `size` bytes; `None` (the whole file) for what RFC 9110 lets a server
/// ignore (several ranges, another unit, a malformed value); `416` for a range past the end.
pub fn byte_range(raw: &str, size: u64) -> ApiResult<Option<std::ops::Range<u64>>> {
    let Some(spec) = raw.trim().strip_prefix("bytes=") else { return Ok(None) };
    if spec.contains(',') {
        return Ok(None);
    }
    let Some((first, last)) = spec.trim().split_once('-') else { return Ok(None) };
    let parse = |s: &str| s.trim().parse::<u64>().ok();
    let range = match (first.trim().is_empty(), last.trim().is_empty()) {
        (true, false) => {
            let Some(n) = parse(last) else { return Ok(None) };
            if n == 0 {
                return Err(ApiError::RangeNotSatisfiable(size));
            }
            size.saturating_sub(n)..size
        }
        (false, _) => {
            let Some(start) = parse(first) else { return Ok(None) };
            let end = if last.trim().is_empty() {
                size
            } else {
                let Some(end) = parse(last) else { return Ok(None) };
                if end < start {
                    return Ok(None);
                }
                end.saturating_add(1).min(size)
            };
            start..end
        }
        (true, true) => return Ok(None),
    };
    if range.start >= size {
        return Err(ApiError::RangeNotSatisfiable(size));
    }
    Ok(Some(range))
}

/// Every file of the output set in one gzipped tar, made as it is sent.
#[utoipa::path(
    get,
    path = "/api/v1/evaluations/{id}/artifacts.tar.gz",
    operation_id = "get_evaluation_archive",
    tag = "evaluations",
    params(("id" = uuid::Uuid, Path, description = "Evaluation id")),
    responses(
        (status = 200, description = "A tar.gz of every artifact, under the paths listed", body = crate::model::Binary, content_type = "application/gzip"),
        (status = 404, description = "No such evaluation", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Not ended yet, or the service keeps no output sets", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get_evaluation_archive(
    caller: Caller,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    archive_in(&caller, &state, state.default_namespace(), &id).await
}

pub(super) async fn archive_in(caller: &Caller, state: &AppState, namespace: &str, id: &str) -> ApiResult<Response> {
    let set = output_set(caller, state, namespace, id).await?;
    let index = set.index().await?;
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<bytes::Bytes>>(4);
    let mtime = crate::model::now().unix_timestamp().try_into().unwrap_or(0);
    let name = format!("{}-artifacts.tar.gz", set.id);
    tokio::spawn(async move {
        if let Err(e) = send_archive(&set, &index.artifacts, mtime, &tx).await {
            tracing::warn!(evaluation.id = %set.id, error = %e, "the artifacts archive stopped");
            let _ = tx.send(Err(std::io::Error::other(e.to_string()))).await;
        }
    });
    let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
    let disposition = format!("attachment; filename=\"{name}\"");
    Ok(([(header::CONTENT_TYPE, "application/gzip".to_string()), (header::CONTENT_DISPOSITION, disposition)], body)
        .into_response())
}

async fn send_archive(
    set: &OutputSet,
    artifacts: &[Stored],
    mtime: u64,
    tx: &tokio::sync::mpsc::Sender<std::io::Result<bytes::Bytes>>,
) -> anyhow::Result<()> {
    let mut gzip = archive::Gzip::default();
    let send = |bytes: bytes::Bytes| async move {
        if bytes.is_empty() {
            Ok(())
        } else {
            tx.send(Ok(bytes)).await.map_err(|_| anyhow::anyhow!("client went away"))
        }
    };
    for stored in artifacts {
        let size = stored.artifact.size;
        send(gzip.push(&archive::entry_header(&stored.artifact.path, size, mtime))?).await?;
        let mut bytes = set.stream(stored, 0..size).await.map_err(|e| anyhow::anyhow!("{e}"))?;
        let mut sent = 0u64;
        while let Some(chunk) = bytes.next().await {
            let chunk = chunk?;
            sent += chunk.len() as u64;
            send(gzip.push(&chunk)?).await?;
        }
        anyhow::ensure!(sent == size, "{} is {sent} bytes, its index says {size}", stored.artifact.path);
        send(gzip.push(&vec![0; archive::padding(size)])?).await?;
    }
    send(gzip.push(&archive::end_of_archive())?).await?;
    send(gzip.finish()?).await
}

/// The reproducibility manifest: lm-eval's version, the runner image, the exact argv, the request, hashes of
/// every task configuration and inline task file, seeds, lm-eval's git hash and the model's identity, start
/// and end.
#[utoipa::path(
    get,
    path = "/api/v1/evaluations/{id}/manifest",
    operation_id = "get_evaluation_manifest",
    tag = "evaluations",
    params(("id" = uuid::Uuid, Path, description = "Evaluation id")),
    responses(
        (status = 200, description = "The manifest", body = crate::model::Manifest),
        (status = 404, description = "No such evaluation", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Not ended yet, or the service keeps no output sets", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get_evaluation_manifest(
    caller: Caller,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    manifest_in(&caller, &state, state.default_namespace(), &id).await
}

pub(super) async fn manifest_in(caller: &Caller, state: &AppState, namespace: &str, id: &str) -> ApiResult<Response> {
    let set = output_set(caller, state, namespace, id).await?;
    let index = set.index().await?;
    let stored = index.find(index::MANIFEST).ok_or_else(|| ApiError::internal("an output set without its manifest"))?;
    let bytes = set.read_small(stored).await?;
    Ok(([(header::CONTENT_TYPE, "application/json")], bytes).into_response())
}

/// The whole results JSON from the output set, streamed, when the backend keeps one; `None` otherwise (the
/// backend's own copy answers).
pub(super) async fn stored_results(state: &AppState, namespace: &str, id: uuid::Uuid) -> ApiResult<Option<Response>> {
    let Some(set) = state.backend.outputs(namespace, id).await? else { return Ok(None) };
    if set.state != EvalState::Succeeded {
        return Ok(None);
    }
    let Ok(index) = set.index().await else { return Ok(None) };
    let Some(stored) = index.find(index::RESULTS) else { return Ok(None) };
    let body = Body::from_stream(set.stream(stored, 0..stored.artifact.size).await?);
    Ok(Some(([(header::CONTENT_TYPE, "application/json")], body).into_response()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_follow_rfc_9110() {
        assert_eq!(byte_range("bytes=0-9", 100).expect("ok"), Some(0..10));
        assert_eq!(byte_range("bytes=90-", 100).expect("ok"), Some(90..100));
        assert_eq!(byte_range("bytes=-10", 100).expect("ok"), Some(90..100));
        assert_eq!(byte_range("bytes=-1000", 100).expect("ok"), Some(0..100));
        assert_eq!(byte_range("bytes=50-5000", 100).expect("ok"), Some(50..100));
        for ignored in ["items=0-1", "bytes=0-1,5-6", "bytes=x-1", "bytes=5-1", "bytes=-"] {
            assert_eq!(byte_range(ignored, 100).expect("ignored"), None, "{ignored}");
        }
        for past in ["bytes=100-", "bytes=200-300", "bytes=-0"] {
            assert_eq!(byte_range(past, 100).expect_err(past).status(), StatusCode::RANGE_NOT_SATISFIABLE);
        }
    }
}
