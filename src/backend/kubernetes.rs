//! The Kubernetes backend: every evaluation is a `batch/v1` Job and the API server is the only store.
//! Reads come from caches fed by label-selected watches; writes go straight to the API server.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::{AsyncBufReadExt, StreamExt, TryStreamExt};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{DeleteParams, LogParams, Patch, PatchParams, PostParams, PropagationPolicy};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource};
use sha2::{Digest, Sha256};
use tokio::sync::watch;
use uuid::Uuid;

use super::{Backend, Created, ListQuery, Listable, LogOptions, LogStream, NewEvaluation, SortKey, paginate, sort_key};
use crate::command::RunPlan;
use crate::error::{ApiError, ApiResult};
use crate::k8s::job::{self, CONTAINER, RunnerConfig, owned_by};
use crate::k8s::run_record::RunRecord;
use crate::k8s::status::{self, RecordedFailure, STUCK_REASONS};
use crate::k8s::{
    CANCELLED_AT_ANNOTATION, EVALUATION_ID_LABEL, FAILED_ANNOTATION, KIND_LABEL, REQUEST_DIGEST_ANNOTATION,
    RUN_RECORD_KIND, input_name, managed_selector, object_name,
};
use crate::model::{Evaluation, EvaluationList, Links, State, now};
use crate::validate::ValidRequest;

/// Annotations are limited to 256 KiB in all; the evaluation must fit with room to spare.
const MAX_EVALUATION_ANNOTATION_BYTES: usize = 200 * 1024;
const RETRY_AFTER_SECONDS: u32 = 5;

#[derive(Debug, Clone)]
pub struct KubernetesConfig {
    pub namespace: String,
    pub runner: RunnerConfig,
    /// A pod waiting this long for something that will not come (see `STUCK_REASONS`) fails its evaluation.
    pub stuck_after: Duration,
    /// How long a write may wait for the API server before the client is told to retry (503).
    pub api_timeout: Duration,
}

pub struct KubernetesBackend {
    shared: Arc<Shared>,
}

struct Shared {
    config: KubernetesConfig,
    jobs: Api<Job>,
    pods: Api<Pod>,
    config_maps: Api<ConfigMap>,
    cache: RwLock<Cache>,
    synced: [AtomicBool; 3],
    /// Bumped on every cache change; log followers wait on it.
    changes: watch::Sender<u64>,
}

/// What the watches have seen, per evaluation, and the evaluation computed from it.
#[derive(Default)]
struct Cache {
    entries: HashMap<Uuid, Entry>,
    order: BTreeMap<SortKey, Uuid>,
}

#[derive(Default)]
struct Entry {
    job: Option<Job>,
    pods: BTreeMap<String, Pod>,
    record: Option<RunRecord>,
    view: Option<View>,
}

struct View {
    evaluation: Evaluation,
    json: Bytes,
    key: SortKey,
}

impl Listable for View {
    fn state(&self) -> State {
        self.evaluation.state
    }

    fn has_label(&self, key: &str, value: &str) -> bool {
        self.evaluation.labels.get(key).is_some_and(|v| v == value)
    }

    fn evaluation(&self) -> ApiResult<Evaluation> {
        Ok(self.evaluation.clone())
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Job = 0,
    Pod = 1,
    RunRecord = 2,
}

impl Kind {
    fn plural(self) -> &'static str {
        match self {
            Kind::Job => "jobs",
            Kind::Pod => "pods",
            Kind::RunRecord => "configmaps",
        }
    }
}

impl Entry {
    /// The evaluation as of now, from what the watches have seen; `None` without its Job.
    fn evaluation(&self, stuck_after: Duration) -> Option<Evaluation> {
        let pods: Vec<&Pod> = self.pods.values().collect();
        status::evaluation(self.job.as_ref()?, &pods, self.record.as_ref(), now(), stuck_after)
    }
}

impl Cache {
    fn refresh(&mut self, id: Uuid, stuck_after: Duration) {
        let Some(entry) = self.entries.get_mut(&id) else { return };
        if let Some(old) = entry.view.take() {
            self.order.remove(&old.key);
        }
        let view = entry.evaluation(stuck_after).and_then(|evaluation| {
            let json = Bytes::from(serde_json::to_vec(&evaluation).ok()?);
            Some(View { key: sort_key(&evaluation), evaluation, json })
        });
        if let Some(view) = &view {
            self.order.insert(view.key, id);
        }
        entry.view = view;
        if entry.job.is_none() && entry.pods.is_empty() && entry.record.is_none() {
            self.entries.remove(&id);
        }
    }

    fn view(&self, id: Uuid) -> ApiResult<&View> {
        self.entries.get(&id).and_then(|e| e.view.as_ref()).ok_or_else(|| ApiError::NotFound(id.to_string()))
    }
}

fn evaluation_id<K: Resource>(object: &K) -> Option<Uuid> {
    object.meta().labels.as_ref()?.get(EVALUATION_ID_LABEL)?.parse().ok()
}

fn object_key<K: Resource>(object: &K) -> Option<(Uuid, String)> {
    Some((evaluation_id(object)?, object.meta().name.clone()?))
}

/// Kubernetes API errors as the API's errors: unreachable or overloaded means "retry later".
fn api_error(e: kube::Error) -> ApiError {
    match e {
        kube::Error::Api(status) if status.code == 404 => ApiError::NotFound(status.message),
        kube::Error::Api(status) if status.code == 409 => ApiError::Conflict(status.message),
        kube::Error::Api(status) if status.code == 422 => ApiError::invalid("request", status.message),
        kube::Error::Api(status) if status.code == 403 => {
            ApiError::internal(format!("the service account may not do this: {}", status.message))
        }
        kube::Error::Api(status) if status.code < 500 && status.code != 429 => ApiError::internal(status.message),
        other => ApiError::Unavailable {
            detail: format!("the Kubernetes API server is unavailable: {other}"),
            retry_after_seconds: RETRY_AFTER_SECONDS,
        },
    }
}

impl Shared {
    /// A write to the API server, bounded in time so clients hear "retry" instead of hanging.
    async fn call<T>(&self, what: impl std::future::Future<Output = kube::Result<T>>) -> ApiResult<T> {
        match tokio::time::timeout(self.config.api_timeout, what).await {
            Ok(result) => result.map_err(api_error),
            Err(_) => Err(ApiError::Unavailable {
                detail: format!(
                    "the Kubernetes API server did not answer within {:?}; the change may still take effect, so retry (with the same Idempotency-Key for a submission)",
                    self.config.api_timeout
                ),
                retry_after_seconds: RETRY_AFTER_SECONDS,
            }),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Cache> {
        self.cache.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Cache> {
        self.cache.write().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Applies one watch event of `kind` to the cache; `seen` collects the keys of a relist.
    fn apply<K: Resource + Into<Stored>>(
        &self,
        kind: Kind,
        event: watcher::Event<K>,
        seen: &mut Option<HashSet<(Uuid, String)>>,
    ) {
        let stuck_after = self.config.stuck_after;
        let mut cache = self.write();
        let mut touched = Vec::new();
        match event {
            watcher::Event::Init => *seen = Some(HashSet::new()),
            watcher::Event::InitApply(object) | watcher::Event::Apply(object) => {
                if let Some(key) = object_key(&object) {
                    if let Some(seen) = seen.as_mut() {
                        seen.insert(key.clone());
                    }
                    store(&mut cache, &key, object.into());
                    touched.push(key.0);
                }
            }
            watcher::Event::Delete(object) => {
                if let Some(key) = object_key(&object) {
                    remove(&mut cache, kind, &key);
                    touched.push(key.0);
                }
            }
            watcher::Event::InitDone => {
                if let Some(seen) = seen.take() {
                    let stale: Vec<(Uuid, String)> = cache
                        .entries
                        .iter()
                        .flat_map(|(id, entry)| keys_of(kind, *id, entry))
                        .filter(|key| !seen.contains(key))
                        .collect();
                    for key in stale {
                        remove(&mut cache, kind, &key);
                        touched.push(key.0);
                    }
                }
                self.synced[kind as usize].store(true, Ordering::Release);
            }
        }
        for id in touched {
            cache.refresh(id, stuck_after);
        }
        drop(cache);
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// A Job this replica just wrote, cached at once so its next read sees the write.
    fn job_changed(&self, job: Job) {
        self.apply(Kind::Job, watcher::Event::Apply(job), &mut None);
    }

    /// Fails evaluations whose pod has waited too long, recording why on the Job and stopping it.
    async fn fail_stuck(&self) {
        let stuck: Vec<(Uuid, String, String)> = {
            let cache = self.read();
            cache
                .entries
                .iter()
                .filter_map(|(id, entry)| {
                    let view = entry.view.as_ref()?;
                    let reason = view.evaluation.reason.as_deref()?;
                    if view.evaluation.state != State::Pending || !STUCK_REASONS.contains(&reason) {
                        return None;
                    }
                    let now = entry.evaluation(self.config.stuck_after)?;
                    if now.state != State::Failed {
                        return None;
                    }
                    Some((*id, now.reason?, now.message.unwrap_or_default()))
                })
                .collect()
        };
        for (id, reason, message) in stuck {
            let failure = RecordedFailure { reason, message, at: now() };
            let patch = serde_json::json!({
                "metadata": {"annotations": {FAILED_ANNOTATION: serde_json::to_string(&failure).unwrap_or_default()}},
                "spec": {"suspend": true},
            });
            match self.call(self.jobs.patch(&object_name(id), &PatchParams::default(), &Patch::Merge(&patch))).await {
                Ok(job) => {
                    tracing::info!(evaluation.id = %id, reason = %failure.reason, "evaluation failed: its pod waited too long");
                    self.job_changed(job);
                }
                Err(e) => {
                    tracing::warn!(evaluation.id = %id, error = %e, "could not record a stuck evaluation's failure")
                }
            }
        }
    }
}

/// A cached object, trimmed of what the service never reads.
enum Stored {
    Job(Box<Job>),
    Pod(Box<Pod>),
    Record(RunRecord),
}

impl From<Job> for Stored {
    fn from(mut job: Job) -> Self {
        job.metadata.managed_fields = None;
        if let Some(spec) = job.spec.as_mut() {
            spec.template = Default::default();
        }
        Stored::Job(Box::new(job))
    }
}

impl From<Pod> for Stored {
    fn from(mut pod: Pod) -> Self {
        pod.metadata.managed_fields = None;
        pod.spec = None;
        Stored::Pod(Box::new(pod))
    }
}

impl From<ConfigMap> for Stored {
    fn from(config_map: ConfigMap) -> Self {
        Stored::Record(RunRecord::from_config_map(&config_map))
    }
}

fn store(cache: &mut Cache, (id, name): &(Uuid, String), object: Stored) {
    let entry = cache.entries.entry(*id).or_default();
    match object {
        Stored::Job(job) => entry.job = Some(*job),
        Stored::Pod(pod) => {
            entry.pods.insert(name.clone(), *pod);
        }
        Stored::Record(record) => entry.record = Some(record),
    }
}

fn remove(cache: &mut Cache, kind: Kind, (id, name): &(Uuid, String)) {
    let Some(entry) = cache.entries.get_mut(id) else { return };
    match kind {
        Kind::Job => entry.job = None,
        Kind::Pod => {
            entry.pods.remove(name);
        }
        Kind::RunRecord => entry.record = None,
    }
}

fn keys_of(kind: Kind, id: Uuid, entry: &Entry) -> Vec<(Uuid, String)> {
    match kind {
        Kind::Job => entry.job.iter().map(|_| (id, object_name(id))).collect(),
        Kind::Pod => entry.pods.keys().map(|name| (id, name.clone())).collect(),
        Kind::RunRecord => entry.record.iter().map(|_| (id, object_name(id))).collect(),
    }
}

impl KubernetesBackend {
    /// Connects (in-cluster config, else the kubeconfig) and starts the watches; `ready` waits for them.
    pub async fn connect(config: KubernetesConfig) -> anyhow::Result<Self> {
        let client = Client::try_default().await?;
        let namespace = &config.namespace;
        let shared = Arc::new(Shared {
            jobs: Api::namespaced(client.clone(), namespace),
            pods: Api::namespaced(client.clone(), namespace),
            config_maps: Api::namespaced(client, namespace),
            config,
            cache: RwLock::default(),
            synced: Default::default(),
            changes: watch::channel(0).0,
        });
        let selector = managed_selector();
        let record_selector = format!("{selector},{KIND_LABEL}={RUN_RECORD_KIND}");
        spawn_watch(&shared, Kind::Job, shared.jobs.clone(), &selector);
        spawn_watch(&shared, Kind::Pod, shared.pods.clone(), &selector);
        spawn_watch(&shared, Kind::RunRecord, shared.config_maps.clone(), &record_selector);
        let weak = Arc::downgrade(&shared);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                let Some(shared) = weak.upgrade() else { return };
                shared.fail_stuck().await;
            }
        });
        Ok(Self { shared })
    }
}

fn spawn_watch<K>(shared: &Arc<Shared>, kind: Kind, api: Api<K>, selector: &str)
where
    K: Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
    K: Into<Stored>,
{
    let weak = Arc::downgrade(shared);
    let stream = watcher(api, watcher::Config::default().labels(selector)).default_backoff();
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        let mut seen = None;
        // The first failure of a streak is a warning (a missing RBAC verb or a blocked API server shows here),
        // repeats are debug until the watch works again or a minute has passed.
        let mut warned: Option<std::time::Instant> = None;
        loop {
            match stream.next().await {
                Some(Ok(event)) => {
                    warned = None;
                    let Some(shared) = weak.upgrade() else { return };
                    shared.apply(kind, event, &mut seen);
                }
                Some(Err(e)) if warned.is_none_or(|at| at.elapsed() > Duration::from_secs(60)) => {
                    tracing::warn!(resource = kind.plural(), error = %e, "watch failed; retrying with back-off");
                    warned = Some(std::time::Instant::now());
                }
                Some(Err(e)) => tracing::debug!(resource = kind.plural(), error = %e, "watch failed; retrying"),
                None => return,
            }
        }
    });
}

/// The id of an idempotent create: the same key gives the same Job name on every replica.
fn idempotent_id(namespace: &str, key: &str) -> Uuid {
    let digest = Sha256::digest(format!("{namespace}\0{key}").as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_custom_bytes(bytes).into_uuid()
}

#[async_trait]
impl Backend for KubernetesBackend {
    fn check_supported(&self, valid: &ValidRequest) -> ApiResult<()> {
        let request = valid.request();
        if let Some(path) = &request.include_path {
            let runner = &self.shared.config.runner;
            let allowed = runner.task_dirs.iter().any(|dir| std::path::Path::new(path).starts_with(dir))
                || request.volumes.iter().any(|v| std::path::Path::new(path).starts_with(&v.mount_path));
            if !allowed {
                return Err(ApiError::invalid(
                    "include_path",
                    "must lie inside one of the request's volumes or the server's task directories",
                ));
            }
        }
        Ok(())
    }

    fn plan(&self, _id: Uuid) -> RunPlan {
        job::plan(&self.shared.config.runner)
    }

    async fn create(&self, new: NewEvaluation) -> ApiResult<Created> {
        let shared = &self.shared;
        let mut evaluation = new.evaluation;
        if let Some(key) = &new.idempotency {
            evaluation.id = idempotent_id(&shared.config.namespace, &key.key);
            evaluation.links = Links::for_id(evaluation.id);
        }
        let id = evaluation.id;
        let digest = new.idempotency.as_ref().map(|k| k.body_digest.as_str());
        let objects =
            job::build(&evaluation, &new.command, &shared.config.runner, digest).map_err(ApiError::internal)?;
        let annotation_bytes =
            objects.job.metadata.annotations.as_ref().map_or(0, |a| a.values().map(String::len).sum::<usize>());
        if annotation_bytes > MAX_EVALUATION_ANNOTATION_BYTES {
            return Err(ApiError::invalid(
                "request",
                format!(
                    "is {annotation_bytes} bytes as stored; the kubernetes backend keeps at most {MAX_EVALUATION_ANNOTATION_BYTES} (inline_tasks count too)"
                ),
            ));
        }
        if let Some(input) = &objects.input {
            match shared.call(shared.config_maps.create(&PostParams::default(), input)).await {
                Ok(_) | Err(ApiError::Conflict(_)) => {}
                Err(e) => return Err(e),
            }
        }
        let job = match shared.call(shared.jobs.create(&PostParams::default(), &objects.job)).await {
            Ok(job) => job,
            Err(ApiError::Conflict(_)) if new.idempotency.is_some() => {
                let existing = shared.call(shared.jobs.get(&object_name(id))).await?;
                let same = existing
                    .metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(REQUEST_DIGEST_ANNOTATION))
                    .map(String::as_str)
                    == digest;
                if !same {
                    return Err(ApiError::Conflict(
                        "Idempotency-Key was already used with a different request body".into(),
                    ));
                }
                shared.job_changed(existing);
                return Ok(Created::Existing(self.get(id).await?));
            }
            Err(e) => {
                if objects.input.is_some() {
                    let _ = shared.config_maps.delete(&input_name(id), &DeleteParams::default()).await;
                }
                return Err(e);
            }
        };
        if objects.input.is_some() {
            let owner = owned_by(&object_name(id), job.metadata.uid.as_deref().unwrap_or_default());
            let patch = serde_json::json!({"metadata": {"ownerReferences": [owner]}});
            // The evaluation exists now: a failure here leaves an unowned ConfigMap, not a failed request.
            let (name, params, patch) = (input_name(id), PatchParams::default(), Patch::Merge(&patch));
            if let Err(e) = shared.call(shared.config_maps.patch(&name, &params, &patch)).await {
                tracing::warn!(evaluation.id = %id, error = %e, "could not make the Job own its input ConfigMap");
            }
        }
        shared.job_changed(job);
        let created = shared.read().view(id).map(|v| v.evaluation.clone()).unwrap_or(evaluation);
        Ok(Created::New(created))
    }

    async fn get(&self, id: Uuid) -> ApiResult<Evaluation> {
        self.shared.read().view(id).map(|v| v.evaluation.clone())
    }

    async fn get_json(&self, id: Uuid) -> ApiResult<Bytes> {
        self.shared.read().view(id).map(|v| v.json.clone())
    }

    async fn list(&self, query: &ListQuery) -> ApiResult<EvaluationList> {
        let cache = self.shared.read();
        paginate(cache.order.iter().filter_map(|(key, id)| Some((key, cache.entries.get(id)?.view.as_ref()?))), query)
    }

    async fn logs(&self, id: Uuid, options: LogOptions) -> ApiResult<LogStream> {
        self.shared.read().view(id)?;
        let (tx, rx) = tokio::sync::mpsc::channel::<String>(256);
        let shared = Arc::clone(&self.shared);
        tokio::spawn(async move { stream_logs(shared, id, options, tx).await });
        Ok(tokio_stream::wrappers::ReceiverStream::new(rx).boxed())
    }

    async fn results(&self, id: Uuid) -> ApiResult<Bytes> {
        let cache = self.shared.read();
        let view = cache.view(id)?;
        if view.evaluation.state != State::Succeeded {
            return Err(ApiError::Conflict(format!(
                "evaluation {id} is {}; results exist only once it has succeeded",
                view.evaluation.state.as_str()
            )));
        }
        cache.entries.get(&id).and_then(|e| e.record.as_ref()?.results.clone()).ok_or_else(|| ApiError::Unavailable {
            detail: format!("evaluation {id} succeeded but its results are not in the cache yet"),
            retry_after_seconds: 1,
        })
    }

    async fn cancel(&self, id: Uuid) -> ApiResult<Evaluation> {
        let shared = &self.shared;
        let state = shared.read().view(id)?.evaluation.state;
        if state.is_terminal() {
            return Err(ApiError::Conflict(format!("evaluation {id} has already {}", state.as_str())));
        }
        let at = now().format(&time::format_description::well_known::Rfc3339).map_err(ApiError::internal)?;
        let patch = serde_json::json!({
            "metadata": {"annotations": {CANCELLED_AT_ANNOTATION: at}},
            "spec": {"suspend": true},
        });
        let job =
            shared.call(shared.jobs.patch(&object_name(id), &PatchParams::default(), &Patch::Merge(&patch))).await?;
        shared.job_changed(job);
        self.get(id).await
    }

    async fn delete(&self, id: Uuid) -> ApiResult<()> {
        let shared = &self.shared;
        shared.read().view(id)?;
        let params =
            DeleteParams { propagation_policy: Some(PropagationPolicy::Background), ..DeleteParams::default() };
        match shared.call(shared.jobs.delete(&object_name(id), &params)).await {
            Ok(_) | Err(ApiError::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
        let mut cache = shared.write();
        remove(&mut cache, Kind::Job, &(id, object_name(id)));
        cache.refresh(id, shared.config.stuck_after);
        Ok(())
    }

    async fn ready(&self) -> ApiResult<()> {
        if self.shared.synced.iter().all(|s| s.load(Ordering::Acquire)) {
            Ok(())
        } else {
            Err(ApiError::Unavailable {
                detail: "caches are still syncing with the API server".into(),
                retry_after_seconds: 1,
            })
        }
    }

    async fn count_by_state(&self) -> BTreeMap<State, u64> {
        let mut counts: BTreeMap<State, u64> = State::ALL.iter().map(|s| (*s, 0)).collect();
        for view in self.shared.read().entries.values().filter_map(|e| e.view.as_ref()) {
            *counts.entry(view.evaluation.state).or_default() += 1;
        }
        counts
    }
}

/// The pod's log from `pods/log` while there is a pod with a started container, else the copy in the
/// run record. Following waits for the pod to start and ends when the evaluation does.
async fn stream_logs(shared: Arc<Shared>, id: Uuid, options: LogOptions, tx: tokio::sync::mpsc::Sender<String>) {
    let mut changes = shared.changes.subscribe();
    loop {
        let (pod, terminal, tail) = {
            let cache = shared.read();
            let Some(entry) = cache.entries.get(&id) else { return };
            let started: Vec<&Pod> = entry.pods.values().filter(|p| status::has_started(p)).collect();
            let pod = status::newest(&started).and_then(|p| p.metadata.name.clone());
            let terminal = entry.view.as_ref().is_none_or(|v| v.evaluation.state.is_terminal());
            (pod, terminal, entry.record.as_ref().and_then(|r| r.log_tail.clone()))
        };
        if let Some(pod) = pod {
            let params = LogParams {
                container: Some(CONTAINER.into()),
                follow: options.follow,
                tail_lines: options.tail_lines.map(|n| i64::try_from(n).unwrap_or(i64::MAX)),
                ..LogParams::default()
            };
            if let Ok(reader) = shared.pods.log_stream(&pod, &params).await {
                let mut lines = std::pin::pin!(reader.lines());
                while let Ok(Some(line)) = lines.try_next().await {
                    if tx.send(line).await.is_err() {
                        return;
                    }
                }
                return;
            }
        }
        if !options.follow || terminal {
            let tail = tail.unwrap_or_default();
            let lines: Vec<&str> = tail.lines().collect();
            let skip = options.tail_lines.map_or(0, |n| lines.len().saturating_sub(n));
            for line in &lines[skip..] {
                if tx.send((*line).to_string()).await.is_err() {
                    return;
                }
            }
            return;
        }
        if changes.changed().await.is_err() {
            return;
        }
    }
}

impl std::fmt::Debug for KubernetesBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubernetesBackend").field("namespace", &self.shared.config.namespace).finish_non_exhaustive()
    }
}
