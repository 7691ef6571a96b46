//! The Kubernetes backend: every evaluation is an `Evaluation` object (`evaluations.lm-eval-aas.io`), run as a
//! Job; the API server is the only store. `views` is what every replica reads from (a watch of the Evaluations
//! of the served namespaces); the writes of the REST API are writes of Evaluation objects; `controller` (on the
//! replica `leader` elects) turns them into Jobs and their Jobs, Pods and run records into their status;
//! `logs` streams `pods/log` or the run record's copy.

mod controller;
mod egress;
mod index;
mod leader;
mod logs;
mod views;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, PropagationPolicy};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use tokio::sync::watch;
use uuid::Uuid;

use super::{
    Backend, Created, Guarded, ListQuery, LogOptions, LogStream, NewEvaluation, PendingLimits, Site, Stored,
    count_by_state, ensure_cancellable, ensure_served, ensure_succeeded, replay,
};
use crate::error::{ApiError, ApiResult};
use crate::k8s::job::{self, Provenance, RunnerConfig};
use crate::k8s::resource::{CANCEL_ANNOTATION, EvaluationObject};
use crate::k8s::run_record::RunRecord;
use crate::k8s::{CREATOR_ANNOTATION, REQUEST_DIGEST_ANNOTATION, object_name};
use crate::lifecycle::CANCELLATION_REQUESTED;
use crate::metrics::Metrics;
use crate::model::{Evaluation, EvaluationList, State};
use crate::outputs::OutputSet;
use crate::outputs::store::OutputStore;
use crate::validate::Policy;
use views::{View, Views};

/// Annotations are limited to 256 KiB in all; the Job's copy of the evaluation must fit with room to spare.
const MAX_EVALUATION_ANNOTATION_BYTES: usize = 200 * 1024;
const RETRY_AFTER_SECONDS: u32 = 5;
const LEASE_NAME: &str = "lm-eval-aas-controller";

#[derive(Debug, Clone)]
pub struct KubernetesConfig {
    /// The namespaces served; the first is the default (the un-namespaced routes', and the Lease's).
    pub namespaces: Vec<String>,
    pub runner: RunnerConfig,
    /// A pod waiting this long for something that will not come (see `STUCK_REASONS`) fails its evaluation.
    pub stuck_after: Duration,
    /// How long a write may wait for the API server before the client is told to retry (503).
    pub api_timeout: Duration,
    pub pending_limits: PendingLimits,
    /// Evaluations whose Jobs run at once in one namespace; more wait, pending.
    pub max_running_per_namespace: Option<usize>,
    /// The same policy the REST API admits with: the controller admits specs made with kubectl by it.
    pub policy: Policy,
    /// This replica, as the leader Lease names its holder.
    pub identity: String,
    /// How long the leader's Lease lasts unrenewed before another replica takes over.
    pub lease_duration: Duration,
    /// Where output sets are kept (`--output-store`).
    pub output_store: OutputStore,
}

pub struct KubernetesBackend {
    shared: Arc<Shared>,
}

struct Shared {
    config: KubernetesConfig,
    client: Client,
    /// The controller's own connections: its bursts (an evaluation's identity, record, input and Job) never
    /// queue ahead of a client's write.
    controller_client: Client,
    sites: HashMap<String, Site>,
    views: Guarded<Views>,
    synced: HashMap<String, AtomicBool>,
    /// Bumped on every change of a view; log followers wait on it.
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

    fn site_of(&self, namespace: &str) -> ApiResult<Site> {
        self.sites
            .get(namespace)
            .cloned()
            .ok_or_else(|| ApiError::NamespaceNotServed(namespace.chars().take(63).collect()))
    }

    fn evaluations(&self, namespace: &str) -> Api<EvaluationObject> {
        Api::namespaced(self.client.clone(), namespace)
    }

    /// An Evaluation object this replica has just written, in its views at once.
    fn stored(&self, namespace: &str, object: &EvaluationObject) {
        self.views.write().store(namespace, object);
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    fn evaluation(&self, namespace: &str, id: Uuid) -> ApiResult<Evaluation> {
        self.views.read().view(namespace, id).and_then(View::evaluation)
    }

    /// Where evaluation `id` stands, without reading back its whole view.
    fn state_of(&self, namespace: &str, id: Uuid) -> Option<State> {
        self.views.read().view(namespace, id).ok().map(|v| v.state)
    }
}

/// A client of the API server (in-cluster config, else the kubeconfig) that counts every request it makes
/// (`lmeval_kube_api_requests_total`), so reads answered from the caches can be seen to cost none.
pub async fn counted_client(metrics: Arc<Metrics>) -> anyhow::Result<Client> {
    let counted = tower::util::MapRequestLayer::new(move |request: axum::http::Request<kube::client::Body>| {
        metrics.kube_request(request.method(), request.uri());
        request
    });
    Ok(kube::client::ClientBuilder::try_from(kube::Config::infer().await?)?.with_layer(&counted).build())
}

impl KubernetesBackend {
    /// Starts the watches of the served namespaces' Evaluations and the leader election; `ready` waits for the
    /// watches.
    pub fn connect(config: KubernetesConfig, client: Client, controller_client: Client) -> Self {
        let sites: HashMap<String, Site> = config
            .namespaces
            .iter()
            .enumerate()
            .map(|(i, namespace)| {
                let mut site = job::site(&config.runner, namespace);
                site.default_namespace = i == 0;
                (namespace.clone(), site)
            })
            .collect();
        let shared = Arc::new(Shared {
            views: Guarded::new(Views::new(sites.clone(), config.policy.clone())),
            synced: config.namespaces.iter().map(|ns| (ns.clone(), AtomicBool::new(false))).collect(),
            changes: watch::channel(0).0,
            sites,
            client,
            controller_client,
            config,
        });
        for namespace in &shared.config.namespaces {
            spawn_watch(&shared, namespace.clone());
        }
        let leases: Api<Lease> = Api::namespaced(shared.client.clone(), &shared.config.namespaces[0]);
        let lease = leader::LeaseConfig {
            name: LEASE_NAME.into(),
            identity: shared.config.identity.clone(),
            duration: shared.config.lease_duration,
        };
        let elected = Arc::clone(&shared);
        tokio::spawn(leader::lead_while_elected(leases, lease, move |stop| {
            let shared = Arc::clone(&elected);
            async move {
                let controllers = shared.config.namespaces.iter().map(|namespace| {
                    tokio::spawn(controller::run(Arc::clone(&shared), namespace.clone(), stop.clone()))
                });
                let egress = tokio::spawn(egress::run(Arc::clone(&shared), stop.clone()));
                futures::future::join_all(controllers.chain(std::iter::once(egress)).collect::<Vec<_>>()).await;
            }
        }));
        Self { shared }
    }
}

fn spawn_watch(shared: &Arc<Shared>, namespace: String) {
    let weak = Arc::downgrade(shared);
    let stream = watcher(shared.evaluations(&namespace), watcher::Config::default()).default_backoff();
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
                    if shared.views.write().apply(&namespace, event, &mut relist)
                        && let Some(synced) = shared.synced.get(&namespace)
                    {
                        synced.store(true, Ordering::Release);
                    }
                    shared.changes.send_modify(|n| *n = n.wrapping_add(1));
                }
                // A watch that fell too far behind (410 Gone) is part of a watch's life: it relists by itself.
                Some(Err(watcher::Error::WatchError(status))) if status.code == 410 => {
                    tracing::debug!(namespace = %namespace, error = %status, "watch expired; relisting");
                }
                Some(Err(e)) if warned.is_none_or(|at| at.elapsed() > Duration::from_secs(60)) => {
                    tracing::warn!(namespace = %namespace, error = %e, "watch of evaluations failed; retrying with back-off");
                    warned = Some(std::time::Instant::now());
                }
                Some(Err(e)) => tracing::debug!(namespace = %namespace, error = %e, "watch failed; retrying"),
                None => return,
            }
        }
    });
}

/// The Evaluation object (and the Job it will run as) of an admitted evaluation.
fn objects_of(
    new: &NewEvaluation,
    runner: &RunnerConfig,
) -> ApiResult<(EvaluationObject, k8s_openapi::api::batch::v1::Job)> {
    let evaluation = &new.evaluation;
    let mut object = EvaluationObject::new(evaluation, &evaluation.namespace).map_err(ApiError::internal)?;
    let annotations = object.metadata.annotations.get_or_insert_default();
    annotations.insert(CREATOR_ANNOTATION.into(), new.creator.clone());
    if let Some(key) = &new.idempotency {
        annotations.insert(REQUEST_DIGEST_ANNOTATION.into(), key.body_digest.clone());
    }
    let provenance = Provenance { request_digest: None, creator: Some(&new.creator) };
    let job = job::build(evaluation, new.config_yaml.as_deref(), runner, provenance).map_err(ApiError::internal)?.job;
    let annotation_bytes = job.metadata.annotations.as_ref().map_or(0, |a| a.values().map(String::len).sum::<usize>());
    if annotation_bytes > MAX_EVALUATION_ANNOTATION_BYTES {
        return Err(ApiError::invalid(
            "request",
            format!(
                "is {annotation_bytes} bytes as stored; the kubernetes backend keeps at most {MAX_EVALUATION_ANNOTATION_BYTES} (inline_tasks count too)"
            ),
        ));
    }
    Ok((object, job))
}

#[async_trait]
impl Backend for KubernetesBackend {
    fn namespaces(&self) -> &[String] {
        &self.shared.config.namespaces
    }

    fn site(&self, namespace: &str) -> ApiResult<Site> {
        self.shared.site_of(namespace)
    }

    async fn create(&self, new: NewEvaluation) -> ApiResult<Created> {
        let shared = &self.shared;
        let namespace = new.evaluation.namespace.clone();
        ensure_served(&shared.config.namespaces, &namespace)?;
        let waiting = shared.views.read().pending(&new.creator, &namespace);
        shared.config.pending_limits.admit_one_more(waiting, &namespace)?;
        let (object, _) = objects_of(&new, &shared.config.runner)?;
        let api = shared.evaluations(&namespace);
        match shared.call(api.create(&PostParams::default(), &object)).await {
            Ok(created) => {
                shared.stored(&namespace, &created);
                Ok(Created::New(shared.evaluation(&namespace, new.evaluation.id).unwrap_or(new.evaluation)))
            }
            Err(ApiError::Conflict(conflict)) => {
                let Some(key) = &new.idempotency else { return Err(ApiError::Conflict(conflict)) };
                let existing = shared.call(api.get(&object_name(new.evaluation.id))).await?;
                shared.stored(&namespace, &existing);
                let annotation = |name| existing.metadata.annotations.as_ref()?.get(name).map(String::as_str);
                let stored = Stored {
                    digest: annotation(REQUEST_DIGEST_ANNOTATION),
                    creator: annotation(CREATOR_ANNOTATION),
                    same_request: existing.spec == object.spec,
                };
                replay(key, stored, &new.creator, shared.evaluation(&namespace, new.evaluation.id)?)
            }
            Err(e) => Err(e),
        }
    }

    fn dry_run_objects(&self, new: &NewEvaluation) -> ApiResult<Option<serde_json::Value>> {
        let (object, job) = objects_of(new, &self.shared.config.runner)?;
        Ok(Some(serde_json::json!({"evaluation": object, "job": job})))
    }

    fn get(&self, namespace: &str, id: Uuid) -> ApiResult<Evaluation> {
        self.shared.evaluation(namespace, id)
    }

    fn get_json(&self, namespace: &str, id: Uuid) -> ApiResult<Bytes> {
        self.shared.views.read().view(namespace, id).map(|v| v.json.clone())
    }

    async fn list(&self, namespace: &str, query: &ListQuery) -> ApiResult<EvaluationList> {
        self.shared.views.read().list(namespace, query)
    }

    async fn list_across(&self, namespaces: &[&str], query: &ListQuery) -> ApiResult<EvaluationList> {
        self.shared.views.read().list_across(namespaces, query)
    }

    async fn logs(&self, namespace: &str, id: Uuid, options: LogOptions) -> ApiResult<LogStream> {
        self.shared.views.read().view(namespace, id)?;
        let (tx, rx) = tokio::sync::mpsc::channel::<String>(crate::backend::LOG_LINES_AHEAD);
        tokio::spawn(logs::stream(Arc::clone(&self.shared), namespace.to_string(), id, options, tx));
        Ok(tokio_stream::wrappers::ReceiverStream::new(rx).boxed())
    }

    async fn outputs(&self, namespace: &str, id: Uuid) -> ApiResult<Option<OutputSet>> {
        let evaluation = self.shared.evaluation(namespace, id)?;
        let (state, log_samples) = (evaluation.state, evaluation.request.log_samples);
        let Some(objects) = &self.shared.config.output_store.objects else { return Ok(None) };
        Ok(Some(OutputSet {
            objects: objects.clone(),
            dir: OutputStore::dir(namespace, &id.to_string()),
            in_place: false,
            id,
            state,
            log_samples,
        }))
    }

    async fn results(&self, namespace: &str, id: Uuid) -> ApiResult<Bytes> {
        let shared = &self.shared;
        ensure_succeeded(id, shared.views.read().view(namespace, id)?.state)?;
        let config_maps: Api<ConfigMap> = Api::namespaced(shared.client.clone(), namespace);
        let record = shared.call(config_maps.get_opt(&object_name(id))).await?;
        let record = record.map(|r| RunRecord::from_config_map(&r));
        if record.as_ref().is_some_and(|r| r.stored_outputs) {
            // The record holds only the metrics' part; the whole results are in the store, which did not answer.
            return Err(ApiError::Unavailable {
                detail: format!("evaluation {id}'s results are in the output store, which is not readable now; retry"),
                retry_after_seconds: RETRY_AFTER_SECONDS,
            });
        }
        record.and_then(|r| r.results).ok_or_else(|| ApiError::Unavailable {
            detail: format!("evaluation {id} succeeded but its run record holds no results yet"),
            retry_after_seconds: 1,
        })
    }

    async fn cancel(&self, namespace: &str, id: Uuid) -> ApiResult<Evaluation> {
        let shared = &self.shared;
        let (state, name) = {
            let views = shared.views.read();
            let view = views.view(namespace, id)?;
            (view.state, view.name.clone())
        };
        ensure_cancellable(id, state)?;
        let patch = serde_json::json!({"metadata": {"annotations": {CANCEL_ANNOTATION: "true"}}});
        let api = shared.evaluations(namespace);
        let object = shared.call(api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))).await?;
        shared.stored(namespace, &object);
        let mut evaluation = shared.evaluation(namespace, id)?;
        if !evaluation.state.is_terminal() {
            evaluation.message = Some(CANCELLATION_REQUESTED.into());
        }
        Ok(evaluation)
    }

    async fn delete(&self, namespace: &str, id: Uuid) -> ApiResult<()> {
        let shared = &self.shared;
        let name = shared.views.read().view(namespace, id)?.name.clone();
        // The stored objects first: a store that does not answer leaves the evaluation there to delete again.
        let stored =
            shared.config.output_store.objects.as_ref().map(|o| (o, OutputStore::dir(namespace, &id.to_string())));
        if let Some((objects, dir)) = &stored {
            objects.delete_all(dir).await?;
        }
        let params =
            DeleteParams { propagation_policy: Some(PropagationPolicy::Background), ..DeleteParams::default() };
        match shared.call(shared.evaluations(namespace).delete(&name, &params)).await {
            Ok(_) | Err(ApiError::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
        shared.views.write().remove(namespace, &name);
        // A run still going wrote its log again meanwhile; what it writes after this is left (see README).
        if let Some((objects, dir)) = &stored
            && let Err(e) = objects.delete_all(dir).await
        {
            tracing::warn!(evaluation.id = %id, error = %e, "stored objects written during the deletion are left");
        }
        Ok(())
    }

    async fn ready(&self) -> ApiResult<()> {
        if self.shared.synced.values().all(|s| s.load(Ordering::Acquire)) {
            Ok(())
        } else {
            Err(ApiError::Unavailable {
                detail: "caches are still syncing with the API server".into(),
                retry_after_seconds: 1,
            })
        }
    }

    async fn count_by_state(&self) -> BTreeMap<State, u64> {
        count_by_state(self.shared.views.read().states())
    }
}

/// The pods of evaluation `id` (the controller's are cached on the leader only; this asks the API server).
async fn pods_of(shared: &Shared, namespace: &str, id: Uuid) -> ApiResult<Vec<Pod>> {
    let pods: Api<Pod> = Api::namespaced(shared.client.clone(), namespace);
    let params = kube::api::ListParams::default().labels(&format!("{}={id}", crate::k8s::EVALUATION_ID_LABEL));
    Ok(shared.call(pods.list(&params)).await?.items)
}

impl std::fmt::Debug for KubernetesBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubernetesBackend").field("namespaces", &self.shared.config.namespaces).finish_non_exhaustive()
    }
}
