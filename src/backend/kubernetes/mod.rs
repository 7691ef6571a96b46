//! The Kubernetes backend: every evaluation is a `batch/v1` Job and the API server is the only store.
//! Reads come from `index` (the joined cache) fed by label-selected watches; writes go straight to the
//! API server; `logs` streams `pods/log` or the run record's copy.

mod index;
mod logs;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, PropagationPolicy};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource};
use tokio::sync::watch;
use uuid::Uuid;

use super::{
    Backend, Created, Guarded, ListQuery, LogOptions, LogStream, NewEvaluation, PendingLimits, Site, count_by_state,
    ensure_cancellable, ensure_succeeded, replay,
};
use crate::error::{ApiError, ApiResult};
use crate::k8s::job::{self, RunnerConfig, owned_by};
use crate::k8s::status::RecordedFailure;
use crate::k8s::{
    CANCELLED_AT_ANNOTATION, FAILED_ANNOTATION, KIND_LABEL, REQUEST_DIGEST_ANNOTATION, RUN_RECORD_KIND, input_name,
    managed_selector, object_name,
};
use crate::model::{Evaluation, EvaluationList, State, now};
use index::{Index, Kind, Relist, Stored, Stuck};

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
    pub pending_limits: PendingLimits,
}

pub struct KubernetesBackend {
    shared: Arc<Shared>,
}

struct Shared {
    config: KubernetesConfig,
    site: Site,
    jobs: Api<Job>,
    pods: Api<Pod>,
    config_maps: Api<ConfigMap>,
    index: Guarded<Index>,
    synced: [AtomicBool; 3],
    /// Bumped on every index change; log followers wait on it.
    changes: watch::Sender<u64>,
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

    /// Applies one watch event of `kind`; `relist` collects the keys of a relist.
    fn apply<K: Resource + Into<Stored>>(&self, kind: Kind, event: watcher::Event<K>, relist: &mut Relist) {
        if self.index.write().apply(kind, event, relist, now()) {
            self.synced[kind as usize].store(true, Ordering::Release);
        }
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// A Job this replica just wrote, indexed at once so its next read sees the write.
    fn job_changed(&self, job: Job) {
        self.apply(Kind::Job, watcher::Event::Apply(job), &mut None);
    }

    /// Fails evaluations whose pod has waited too long, recording why on the Job and stopping it.
    async fn fail_stuck(&self) {
        let stuck = self.index.read().stuck(now());
        for Stuck { id, reason, message } in stuck {
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

impl KubernetesBackend {
    /// Connects (in-cluster config, else the kubeconfig) and starts the watches; `ready` waits for them.
    pub async fn connect(config: KubernetesConfig) -> anyhow::Result<Self> {
        let client = Client::try_default().await?;
        let namespace = &config.namespace;
        let shared = Arc::new(Shared {
            jobs: Api::namespaced(client.clone(), namespace),
            pods: Api::namespaced(client.clone(), namespace),
            config_maps: Api::namespaced(client, namespace),
            site: job::site(&config.runner, namespace),
            index: Guarded::new(Index::new(config.stuck_after)),
            config,
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
        let mut relist = None;
        // The first failure of a streak is a warning (a missing RBAC verb or a blocked API server shows here),
        // repeats are debug until the watch works again or a minute has passed.
        let mut warned: Option<std::time::Instant> = None;
        loop {
            match stream.next().await {
                Some(Ok(event)) => {
                    warned = None;
                    let Some(shared) = weak.upgrade() else { return };
                    shared.apply(kind, event, &mut relist);
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

#[async_trait]
impl Backend for KubernetesBackend {
    fn site(&self) -> &Site {
        &self.shared.site
    }

    async fn create(&self, new: NewEvaluation) -> ApiResult<Created> {
        let shared = &self.shared;
        let evaluation = new.evaluation;
        let id = evaluation.id;
        {
            let (pending, of_creator) = shared.index.read().pending(&new.creator);
            shared.config.pending_limits.admit_one_more(pending, of_creator)?;
        }
        let provenance = job::Provenance {
            request_digest: new.idempotency.as_ref().map(|k| k.body_digest.as_str()),
            creator: Some(&new.creator),
        };
        let objects = job::build(&evaluation, new.config_yaml.as_deref(), &shared.config.runner, provenance)
            .map_err(ApiError::internal)?;
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
            Err(ApiError::Conflict(conflict)) => {
                let Some(key) = &new.idempotency else { return Err(ApiError::Conflict(conflict)) };
                let existing = shared.call(shared.jobs.get(&object_name(id))).await?;
                let stored =
                    existing.metadata.annotations.as_ref().and_then(|a| a.get(REQUEST_DIGEST_ANNOTATION)).cloned();
                shared.job_changed(existing);
                return replay(key, stored.as_deref(), self.get(id)?);
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
        let created = shared.index.read().view(id).map(|v| v.evaluation.clone()).unwrap_or(evaluation);
        Ok(Created::New(created))
    }

    fn get(&self, id: Uuid) -> ApiResult<Evaluation> {
        self.shared.index.read().view(id).map(|v| v.evaluation.clone())
    }

    fn get_json(&self, id: Uuid) -> ApiResult<Bytes> {
        self.shared.index.read().view(id).map(|v| v.json.clone())
    }

    async fn list(&self, query: &ListQuery) -> ApiResult<EvaluationList> {
        self.shared.index.read().list(query)
    }

    async fn logs(&self, id: Uuid, options: LogOptions) -> ApiResult<LogStream> {
        self.shared.index.read().view(id)?;
        let (tx, rx) = tokio::sync::mpsc::channel::<String>(256);
        tokio::spawn(logs::stream(Arc::clone(&self.shared), id, options, tx));
        Ok(tokio_stream::wrappers::ReceiverStream::new(rx).boxed())
    }

    async fn results(&self, id: Uuid) -> ApiResult<Bytes> {
        let index = self.shared.index.read();
        ensure_succeeded(id, index.view(id)?.evaluation.state)?;
        index.results(id).ok_or_else(|| ApiError::Unavailable {
            detail: format!("evaluation {id} succeeded but its results are not in the cache yet"),
            retry_after_seconds: 1,
        })
    }

    async fn cancel(&self, id: Uuid) -> ApiResult<Evaluation> {
        let shared = &self.shared;
        ensure_cancellable(id, shared.index.read().view(id)?.evaluation.state)?;
        let at = now().format(&time::format_description::well_known::Rfc3339).map_err(ApiError::internal)?;
        let patch = serde_json::json!({
            "metadata": {"annotations": {CANCELLED_AT_ANNOTATION: at}},
            "spec": {"suspend": true},
        });
        let job =
            shared.call(shared.jobs.patch(&object_name(id), &PatchParams::default(), &Patch::Merge(&patch))).await?;
        shared.job_changed(job);
        self.get(id)
    }

    async fn delete(&self, id: Uuid) -> ApiResult<()> {
        let shared = &self.shared;
        shared.index.read().view(id)?;
        let params =
            DeleteParams { propagation_policy: Some(PropagationPolicy::Background), ..DeleteParams::default() };
        match shared.call(shared.jobs.delete(&object_name(id), &params)).await {
            Ok(_) | Err(ApiError::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
        shared.index.write().forget_job(id, now());
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
        count_by_state(self.shared.index.read().states())
    }
}

impl std::fmt::Debug for KubernetesBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubernetesBackend").field("namespace", &self.shared.config.namespace).finish_non_exhaustive()
    }
}
