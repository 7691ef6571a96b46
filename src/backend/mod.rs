//! The seam between the API and whatever runs evaluations.

pub mod kubernetes;
pub mod local;

use std::collections::BTreeMap;
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use uuid::Uuid;

use crate::error::{ApiError, ApiResult};
pub use crate::lifecycle::admission::{IdempotencyKey, NewEvaluation, Site};
use crate::model::{Evaluation, EvaluationList, State};

/// What `create` did: a new evaluation, or the one an earlier request with the same key made.
#[derive(Debug, Clone)]
pub enum Created {
    New(Evaluation),
    Existing(Evaluation),
}

#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    pub page_size: usize,
    pub page_token: Option<String>,
    pub state: Option<State>,
    pub labels: Vec<(String, String)>,
    pub created_by: Option<String>,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct LogOptions {
    pub tail_lines: Option<usize>,
    pub follow: bool,
}

/// Log lines without their line ends; a followed stream ends when the evaluation does.
pub type LogStream = BoxStream<'static, String>;

/// How many lines a log stream reads ahead of its client: with lines cut at 64 KiB
/// (`log_lines::MAX_LINE_BYTES`), at most 2 MiB held for a client that does not read.
pub const LOG_LINES_AHEAD: usize = 32;

#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// The namespaces it serves; the first is the default one, which the un-namespaced routes mean.
    fn namespaces(&self) -> &[String];
    /// Where it runs evaluations of `namespace` and what it can provide (admission needs nothing else of it);
    /// `404` for a namespace it does not serve.
    fn site(&self, namespace: &str) -> ApiResult<Site>;
    /// Stores and starts an admitted evaluation (in `new.evaluation.namespace`).
    async fn create(&self, new: NewEvaluation) -> ApiResult<Created>;
    /// What the backend would make of it, for a dry run: `None` where it makes nothing worth showing.
    fn dry_run_objects(&self, _new: &NewEvaluation) -> ApiResult<Option<serde_json::Value>> {
        Ok(None)
    }
    /// The evaluation as the backend holds it in memory: no I/O, so no waiting.
    fn get(&self, namespace: &str, id: Uuid) -> ApiResult<Evaluation>;
    /// The evaluation as JSON, the hot read path: the bytes the backend keeps, not a copy of the evaluation.
    fn get_json(&self, namespace: &str, id: Uuid) -> ApiResult<Bytes>;
    async fn list(&self, namespace: &str, query: &ListQuery) -> ApiResult<EvaluationList>;
    /// One list over several served namespaces, newest first; by default the one namespace a backend serves.
    async fn list_across(&self, namespaces: &[&str], query: &ListQuery) -> ApiResult<EvaluationList> {
        match namespaces {
            [] => Ok(EvaluationList { items: Vec::new(), next_page_token: None }),
            [namespace] => self.list(namespace, query).await,
            _ => Err(ApiError::internal("this backend serves one namespace")),
        }
    }
    async fn logs(&self, namespace: &str, id: Uuid, options: LogOptions) -> ApiResult<LogStream>;
    /// Where the evaluation's output set is kept; `None` where the backend keeps none (the ConfigMap store).
    async fn outputs(&self, namespace: &str, id: Uuid) -> ApiResult<Option<crate::outputs::OutputSet>>;
    /// The results JSON exactly as lm-eval wrote it.
    async fn results(&self, namespace: &str, id: Uuid) -> ApiResult<Bytes>;
    async fn cancel(&self, namespace: &str, id: Uuid) -> ApiResult<Evaluation>;
    async fn delete(&self, namespace: &str, id: Uuid) -> ApiResult<()>;
    /// Ready to serve: state loaded, caches synced, the store reachable.
    async fn ready(&self) -> ApiResult<()>;
    /// Evaluations per state, for `/metrics`.
    async fn count_by_state(&self) -> BTreeMap<State, u64>;
}

/// `Ok` when `namespaces` holds `namespace`.
pub fn ensure_served(namespaces: &[String], namespace: &str) -> ApiResult<()> {
    if namespaces.iter().any(|served| served == namespace) {
        Ok(())
    } else {
        Err(ApiError::NamespaceNotServed(namespace.chars().take(63).collect()))
    }
}

/// Only a pending or running evaluation can be cancelled.
pub fn ensure_cancellable(id: Uuid, state: State) -> ApiResult<()> {
    if state.is_terminal() {
        return Err(ApiError::Conflict(format!("evaluation {id} has already {}", state.as_str())));
    }
    Ok(())
}

/// Results exist only once an evaluation has succeeded.
pub fn ensure_succeeded(id: Uuid, state: State) -> ApiResult<()> {
    if state != State::Succeeded {
        return Err(ApiError::Conflict(format!(
            "evaluation {id} is {}; results exist only once it has succeeded",
            state.as_str()
        )));
    }
    Ok(())
}

/// A create whose id is taken: the same creator's same key with the same body gets the existing evaluation back.
/// What another creator made under that id (its name can be taken in advance by anyone who may create there) is
/// never handed out.
pub fn replay(key: &IdempotencyKey, stored: Stored<'_>, creator: &str, existing: Evaluation) -> ApiResult<Created> {
    if stored.creator != Some(creator) {
        return Err(ApiError::Conflict(
            "Idempotency-Key: the evaluation it names was made by someone else; use another key".into(),
        ));
    }
    if stored.digest == Some(key.body_digest.as_str()) && stored.same_request {
        Ok(Created::Existing(existing))
    } else {
        Err(ApiError::Conflict("Idempotency-Key was already used with a different request body".into()))
    }
}

/// What an evaluation stored under an idempotent id says of how it was made.
#[derive(Debug, Clone, Copy)]
pub struct Stored<'a> {
    /// The request digest of the create that made it.
    pub digest: Option<&'a str>,
    pub creator: Option<&'a str>,
    /// Whether its request is the one being submitted again.
    pub same_request: bool,
}

/// How many evaluations may wait to start: in all, of one creator, and in one namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PendingLimits {
    pub total: usize,
    pub per_creator: usize,
    pub per_namespace: usize,
}

impl Default for PendingLimits {
    fn default() -> Self {
        Self { total: 10_000, per_creator: 1_000, per_namespace: 1_000 }
    }
}

/// How many evaluations are waiting to start: in all, of the submission's creator, in its namespace.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Waiting {
    pub all: usize,
    pub of_creator: usize,
    pub in_namespace: usize,
}

impl PendingLimits {
    /// Refuses (429) one more pending evaluation when `waiting` already wait.
    pub fn admit_one_more(self, waiting: Waiting, namespace: &str) -> ApiResult<()> {
        let Waiting { all: pending, of_creator, in_namespace } = waiting;
        let refuse = |detail: String| Err(ApiError::TooManyRequests { detail, retry_after_seconds: 30 });
        if in_namespace >= self.per_namespace {
            return refuse(format!(
                "{in_namespace} evaluations are pending in namespace {namespace}, the most one namespace may have (--max-pending-per-namespace); retry once some have started"
            ));
        }
        if of_creator >= self.per_creator {
            return refuse(format!(
                "{of_creator} evaluations of this creator are pending, the most one creator may have (--max-pending-per-creator); retry once some have started"
            ));
        }
        if pending >= self.total {
            return refuse(format!(
                "{pending} evaluations are pending, the most the server queues (--max-pending); retry once some have started"
            ));
        }
        Ok(())
    }
}

/// How many evaluations are in each state (every state present, zeros included).
pub fn count_by_state(states: impl IntoIterator<Item = State>) -> BTreeMap<State, u64> {
    let mut counts: BTreeMap<State, u64> = State::ALL.iter().map(|s| (*s, 0)).collect();
    for state in states {
        *counts.entry(state).or_default() += 1;
    }
    counts
}

/// A read-write lock whose guards survive a panic in another holder: the data is plain state that is
/// valid between statements, so a poisoned lock is still safe to use.
#[derive(Debug, Default)]
pub struct Guarded<T>(RwLock<T>);

impl<T> Guarded<T> {
    pub fn new(value: T) -> Self {
        Self(RwLock::new(value))
    }

    pub fn read(&self) -> RwLockReadGuard<'_, T> {
        self.0.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn write(&self) -> RwLockWriteGuard<'_, T> {
        self.0.write().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The list order: newest first, ties broken by id.
pub type SortKey = (std::cmp::Reverse<i128>, std::cmp::Reverse<Uuid>);

pub fn sort_key(evaluation: &Evaluation) -> SortKey {
    (std::cmp::Reverse(evaluation.created_at.unix_timestamp_nanos()), std::cmp::Reverse(evaluation.id))
}

/// What listing needs of a stored evaluation, so a backend can list without materialising every one.
pub trait Listable {
    fn state(&self) -> State;
    fn has_label(&self, key: &str, value: &str) -> bool;
    fn created_by(&self) -> Option<&str>;
    fn evaluation(&self) -> ApiResult<Evaluation>;
}

/// What a list's page token looks like: the sort key of the last item shown (creation time in nanoseconds,
/// id). Any token of this form is a place in the list, so the OpenAPI document can state the whole rule.
pub const PAGE_TOKEN_PATTERN: &str = "^[0-9]{1,30}[.][0-9a-f]{32}$";

/// A sort key as a page token.
fn encode_page_token((nanos, id): &SortKey) -> String {
    format!("{}.{}", nanos.0.max(0), id.0.simple())
}

fn decode_page_token(token: &str) -> ApiResult<SortKey> {
    let invalid = || ApiError::invalid("page_token", "is not a token this service issued");
    let (nanos, id) = token.split_once('.').ok_or_else(invalid)?;
    let digits = |text: &str, max: usize, hex: bool| {
        (1..=max).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_digit() || (hex && matches!(b, b'a'..=b'f')))
    };
    if !digits(nanos, 30, false) || id.len() != 32 || !digits(id, 32, true) {
        return Err(invalid());
    }
    let nanos: i128 = nanos.parse().map_err(|_| invalid())?;
    let id = Uuid::try_parse(id).map_err(|_| invalid())?;
    Ok((std::cmp::Reverse(nanos), std::cmp::Reverse(id)))
}

/// Filters and pages items given in list order (newest first) with their sort keys.
pub fn paginate<'a, T: Listable + 'a>(
    sorted: impl Iterator<Item = (&'a SortKey, &'a T)>,
    query: &ListQuery,
) -> ApiResult<EvaluationList> {
    let after = query.page_token.as_deref().map(decode_page_token).transpose()?;
    let mut items = Vec::with_capacity(query.page_size.min(64));
    let mut last_key = None;
    let mut next_page_token = None;
    let matching = sorted
        .filter(|(key, _)| after.as_ref().is_none_or(|after| *key > after))
        .filter(|(_, item)| query.state.is_none_or(|s| item.state() == s))
        .filter(|(_, item)| query.labels.iter().all(|(k, v)| item.has_label(k, v)))
        .filter(|(_, item)| query.created_by.as_deref().is_none_or(|user| item.created_by() == Some(user)));
    for (key, item) in matching {
        if items.len() == query.page_size {
            next_page_token = last_key.map(encode_page_token);
            break;
        }
        items.push(item.evaluation()?);
        last_key = Some(key);
    }
    Ok(EvaluationList { items, next_page_token })
}

#[cfg(test)]
#[path = "same_outcome_tests.rs"]
mod same_outcome_tests;

#[cfg(test)]
mod page_token_tests {
    use super::*;

    #[test]
    fn a_token_is_a_place_in_the_list_and_any_token_of_its_form_is_one() {
        let key = (std::cmp::Reverse(1_764_550_000_123_456_789), std::cmp::Reverse(Uuid::from_u128(0xfeed)));
        let token = encode_page_token(&key);
        assert_eq!(decode_page_token(&token).expect("its own token"), key);
        // What PAGE_TOKEN_PATTERN admits (as the OpenAPI document states it) is a place, never a 422.
        for admitted in
            ["0.00000000000000000000000000000000", "123456789012345678901234567890.0123456789abcdef0123456789abcdef"]
        {
            assert!(decode_page_token(admitted).is_ok(), "{admitted}");
        }
        for refused in [
            "",
            "garbage",
            "1.2",
            "1.0123456789ABCDEF0123456789abcdef",
            "-1.0123456789abcdef0123456789abcdef",
            "1.0123456789abcdef0123456789abcdef.",
            "1234567890123456789012345678901.0123456789abcdef0123456789abcdef",
        ] {
            assert!(decode_page_token(refused).is_err(), "{refused}");
        }
    }
}

#[cfg(test)]
mod replay_tests {
    use super::*;

    fn key() -> IdempotencyKey {
        IdempotencyKey { key: "ci-run-7".into(), body_digest: "d1".into() }
    }

    fn existing() -> Evaluation {
        let request = serde_json::from_value(serde_json::json!({"model": "dummy", "tasks": ["t"]})).expect("request");
        Evaluation::pending(Uuid::from_u128(7), request, Vec::new(), crate::model::now())
    }

    #[test]
    fn only_the_same_creators_same_request_is_replayed() {
        let made =
            |creator, digest, same_request| Stored { digest: Some(digest), creator: Some(creator), same_request };
        assert!(matches!(replay(&key(), made("alice", "d1", true), "alice", existing()), Ok(Created::Existing(_))));
        let conflict = |stored| match replay(&key(), stored, "alice", existing()) {
            Err(ApiError::Conflict(detail)) => detail,
            other => panic!("expected a conflict, got {:?}", other.map(|_| ())),
        };
        // A co-tenant made the object first, with alice's very request and a digest to match: never alice's.
        assert!(conflict(made("mallory", "d1", true)).contains("someone else"));
        assert!(conflict(Stored { creator: None, ..made("alice", "d1", true) }).contains("someone else"));
        // The digest annotation is the object's author's to write: the stored request must be the same too.
        assert!(conflict(made("alice", "d1", false)).contains("different request body"));
        assert!(conflict(made("alice", "d2", true)).contains("different request body"));
    }
}
