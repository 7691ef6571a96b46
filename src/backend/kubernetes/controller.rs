//! The controller (on the leader only): Evaluation → Job, and Job + Pods + run record → the Evaluation's status,
//! in kube-runtime's shape. `reconcile` is idempotent: it admits the spec as the REST API would (a spec the
//! webhook let through by mistake fails with `InvalidRequest`), makes the Job if there is none, carries out a
//! cancel or a stuck pod's failure on the Job, and writes the status only when it changed — at most once every
//! 2 s while the evaluation runs. Each transition is also a Kubernetes Event.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, ServiceAccount};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{self, Action};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{Controller, WatchStreamExt, watcher};
use kube::{Api, Resource, ResourceExt};
use serde_json::json;
use tokio::sync::watch;
use uuid::Uuid;

use super::Shared;
use super::index::{Index, Kind, Stored, evaluation_of};
use crate::backend::Guarded;
use crate::error::ApiError;
use crate::k8s::job::{self, Provenance};
use crate::k8s::resource::{API_VERSION, EvaluationObject, EvaluationStatus, KIND};
use crate::k8s::status::{RecordedFailure, STUCK_REASONS};
use crate::k8s::{
    CANCELLED_AT_ANNOTATION, CREATOR_ANNOTATION, EVALUATION_ANNOTATION, EVALUATION_ID_LABEL, FAILED_ANNOTATION,
    KIND_LABEL, MANAGED_BY, MANAGED_BY_LABEL, RUN_RECORD_KIND, managed_selector, object_name,
};
use crate::lifecycle::{self, admission::refused};
use crate::model::{Evaluation, State, now};
use crate::outputs::store::{OutputStore, upload_validity};

const FIELD_MANAGER: &str = "lm-eval-aas-controller";
/// The least time between two status writes of a running evaluation (progress moves faster than that).
const STATUS_EVERY: Duration = Duration::from_secs(2);
const REPORTING_CONTROLLER: &str = "lm-eval-aas.io/controller";

/// Reconciles in flight at once: 10,000 Evaluations applied together queue here, not as 10,000 concurrent
/// requests (and their buffers) to the API server.
const RECONCILES_AT_ONCE: u16 = 32;

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ReconcileError(String);

impl From<kube::Error> for ReconcileError {
    fn from(e: kube::Error) -> Self {
        Self(e.to_string())
    }
}

impl From<ApiError> for ReconcileError {
    fn from(e: ApiError) -> Self {
        Self(e.to_string())
    }
}

struct Context {
    shared: Arc<Shared>,
    namespace: String,
    evaluations: Api<EvaluationObject>,
    jobs: Api<Job>,
    config_maps: Api<ConfigMap>,
    service_accounts: Api<ServiceAccount>,
    roles: Api<Role>,
    role_bindings: Api<RoleBinding>,
    secrets: Api<Secret>,
    index: Arc<Guarded<Index>>,
    /// Where Events are published (events.k8s.io), and as whom.
    events: Api<Event>,
    instance: String,
    /// When each evaluation's status was last written and the resourceVersion that write made, by object name.
    written: Mutex<HashMap<String, Written>>,
    /// Held from counting the running Jobs to creating one, when their number is limited.
    starting: tokio::sync::Mutex<()>,
}

/// Reconciles the Evaluations of `namespace` until `stop` flips.
pub async fn run(shared: Arc<Shared>, namespace: String, mut stop: watch::Receiver<bool>) {
    let client = shared.controller_client.clone();
    let evaluations: Api<EvaluationObject> = Api::namespaced(client.clone(), &namespace);
    let jobs: Api<Job> = Api::namespaced(client.clone(), &namespace);
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), &namespace);
    let index = Arc::new(Guarded::new(Index::new(shared.config.stuck_after)));
    let selector = managed_selector();
    let job_stream = fed(Api::<Job>::namespaced(client.clone(), &namespace), &selector, Kind::Job, &index);
    let pod_stream = fed(Api::<Pod>::namespaced(client.clone(), &namespace), &selector, Kind::Pod, &index);
    let record_selector = format!("{selector},{KIND_LABEL}={RUN_RECORD_KIND}");
    let record_stream = fed(config_maps.clone(), &record_selector, Kind::RunRecord, &index);
    let context = Arc::new(Context {
        events: Api::namespaced(client, &namespace),
        instance: shared.config.identity.clone(),
        shared: Arc::clone(&shared),
        namespace: namespace.clone(),
        evaluations: evaluations.clone(),
        jobs,
        config_maps,
        service_accounts: Api::namespaced(shared.controller_client.clone(), &namespace),
        roles: Api::namespaced(shared.controller_client.clone(), &namespace),
        role_bindings: Api::namespaced(shared.controller_client.clone(), &namespace),
        secrets: Api::namespaced(shared.controller_client.clone(), &namespace),
        index,
        written: Mutex::new(HashMap::new()),
        starting: tokio::sync::Mutex::new(()),
    });
    adopt_orphans(&context).await;
    let owner_of = |shared: Arc<Shared>, namespace: String| {
        move |id: Option<Uuid>| -> Option<ObjectRef<EvaluationObject>> {
            let name = shared.views.read().name_of(&namespace, id?)?;
            Some(ObjectRef::new(&name).within(&namespace))
        }
    };
    let pods_owner = owner_of(Arc::clone(&shared), namespace.clone());
    let records_owner = owner_of(Arc::clone(&shared), namespace.clone());
    // The controller's own store of Evaluations, without managedFields (the status writes make them large) or
    // the parts of a status its spec fixes: the leader holds one per evaluation.
    let (reader, writer) = reflector::store();
    let trigger = watcher(evaluations, watcher::Config::default())
        .default_backoff()
        .modify(|object: &mut EvaluationObject| {
            object.metadata.managed_fields = None;
            object.status = object.status.take().map(EvaluationStatus::without_fixed_parts);
        })
        .reflect(writer)
        .applied_objects();
    Controller::for_stream(trigger, reader)
        .with_config(controller::Config::default().concurrency(RECONCILES_AT_ONCE))
        .owns_stream(job_stream)
        .watches_stream(pod_stream, move |pod: Pod| pods_owner(evaluation_of(Kind::Pod, &pod)))
        .watches_stream(record_stream, move |record: ConfigMap| records_owner(evaluation_of(Kind::RunRecord, &record)))
        .graceful_shutdown_on(async move {
            let _ = stop.wait_for(|stopped| *stopped).await;
        })
        .run(reconcile, error_policy, context)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "reconcile");
            }
        })
        .await;
}

/// A label-selected watch of `K` that feeds the controller's index before triggering its reconciles.
fn fed<K>(
    api: Api<K>,
    selector: &str,
    kind: Kind,
    index: &Arc<Guarded<Index>>,
) -> impl futures::Stream<Item = Result<K, watcher::Error>> + Send + 'static
where
    K: Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
    K: Into<Stored>,
{
    let index = Arc::clone(index);
    let mut relist = None;
    watcher(api, watcher::Config::default().labels(selector))
        .default_backoff()
        .map_ok(move |event| {
            index.write().apply(kind, event.clone(), &mut relist);
            event
        })
        .touched_objects()
}

/// The Evaluation's uid: what its Job and run record must be owned by to count.
fn uid_of(object: &EvaluationObject) -> &str {
    object.metadata.uid.as_deref().unwrap_or_default()
}

fn error_policy(_: Arc<EvaluationObject>, error: &ReconcileError, _: Arc<Context>) -> Action {
    tracing::warn!(error = %error, "reconcile failed; retrying");
    Action::requeue(Duration::from_secs(5))
}

async fn reconcile(object: Arc<EvaluationObject>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    if object.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let (Some(id), Some(name)) = (object.id(), object.metadata.name.clone()) else {
        return Ok(Action::await_change());
    };
    let labels = object.metadata.labels.as_ref();
    if labels.and_then(|l| l.get(EVALUATION_ID_LABEL)).is_none() {
        // Made with kubectl: give it its id (the uid) and the request's labels, so REST and `kubectl -l` agree.
        let mut added = object.request().labels;
        added.insert(EVALUATION_ID_LABEL.into(), id.to_string());
        added.insert(MANAGED_BY_LABEL.into(), MANAGED_BY.into());
        let patch = json!({"metadata": {"labels": added}});
        ctx.evaluations.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
        return Ok(Action::await_change());
    }
    let site = ctx.shared.site_of(&ctx.namespace)?;
    let created_at = object.created_at().unwrap_or_else(now);
    let evaluation = match object.admit(id, &site, &ctx.shared.config.policy, created_at) {
        Err(problem) => refused(id, object.request(), created_at, &problem),
        Ok(new) => {
            let job = ctx.index.read().job(id, uid_of(&object));
            // Judged once, before its first status: what was pending ahead of it only shrinks afterwards.
            let fresh = object.status.as_ref().and_then(|s| s.state).is_none();
            if job.is_none()
                && fresh
                && let Err(refusal) = pending_limits_of_kubectl(&ctx, id)
            {
                let evaluation = refused(id, object.request(), created_at, &refusal);
                return write_status(&ctx, &object, &name, &evaluation).await;
            }
            let limited = ctx.shared.config.max_running_per_namespace.filter(|_| job.is_none());
            let _starting = match limited {
                Some(_) => Some(ctx.starting.lock().await),
                None => None,
            };
            match job {
                None if object.status.as_ref().and_then(|s| s.state).is_some_and(State::is_terminal) => {
                    return Ok(Action::await_change());
                }
                None if limited.is_some_and(|most| ctx.index.read().unfinished_jobs() >= most) => {
                    let mut waiting = new.evaluation;
                    let most = limited.unwrap_or_default();
                    waiting.message = Some(format!(
                        "waiting for a slot: {most} evaluations run at once in namespace {} (--max-running-per-namespace)",
                        ctx.namespace
                    ));
                    write_status(&ctx, &object, &name, &waiting).await?;
                    return Ok(Action::requeue(Duration::from_secs(3)));
                }
                None => match create_job(&ctx, &object, &new).await? {
                    JobCreation::Created => new.evaluation,
                    // Not in the cache yet but already there (a new leader's cache still filling): its status is
                    // written once the cache shows it, never set back to pending meanwhile.
                    JobCreation::Existed => return Ok(Action::requeue(Duration::from_secs(1))),
                    JobCreation::Taken(message) => {
                        let mut failed = new.evaluation;
                        lifecycle::conclude(
                            &mut failed,
                            lifecycle::Outcome::failed(crate::model::Reason::StartError, message),
                            Some(now()),
                            None,
                        );
                        failed
                    }
                },
                Some(job) => carry_out(&ctx, &object, id, &job).await?.unwrap_or(new.evaluation),
            }
        }
    };
    write_status(&ctx, &object, &name, &evaluation).await
}

/// The pending limits REST applies at creation (`429`), applied to an Evaluation made by any other door before
/// its Job is made: counting only what was pending when it was created, an evaluation REST accepted always passes.
fn pending_limits_of_kubectl(ctx: &Context, id: Uuid) -> Result<(), ApiError> {
    let waiting = ctx.shared.views.read().pending_ahead_of(&ctx.namespace, id);
    waiting.map_or(Ok(()), |waiting| ctx.shared.config.pending_limits.admit_one_more(waiting, &ctx.namespace))
}

/// Carries out on the Job what the Evaluation and the facts ask (a cancel, a stuck pod's failure, each once); the
/// evaluation as the facts then show it.
async fn carry_out(
    ctx: &Context,
    object: &EvaluationObject,
    id: Uuid,
    job: &Job,
) -> Result<Option<Evaluation>, ReconcileError> {
    let evaluation = ctx.index.read().evaluation(id, uid_of(object), now());
    let Some(evaluation) = evaluation else { return Ok(None) };
    let recorded = |key: &str| job.metadata.annotations.as_ref().is_some_and(|a| a.contains_key(key));
    // A pod that waited too long makes the evaluation failed as of now; recording it on the Job (and suspending
    // it) makes that final, whatever the pod does next.
    let stuck = evaluation.state == State::Failed && evaluation.reason.is_some_and(|r| STUCK_REASONS.contains(&r));
    let patch = if stuck && !recorded(FAILED_ANNOTATION) {
        let failure = RecordedFailure {
            reason: evaluation.reason.unwrap_or(crate::model::Reason::Unschedulable),
            message: evaluation.message.clone().unwrap_or_default(),
            at: now(),
        };
        json!({"metadata": {"annotations": {FAILED_ANNOTATION: serde_json::to_string(&failure).unwrap_or_default()}}, "spec": {"suspend": true}})
    } else if !evaluation.state.is_terminal() && object.cancel_requested() && !recorded(CANCELLED_AT_ANNOTATION) {
        let at = now().format(&time::format_description::well_known::Rfc3339).unwrap_or_default();
        json!({"metadata": {"annotations": {CANCELLED_AT_ANNOTATION: at}}, "spec": {"suspend": true}})
    } else {
        return Ok(Some(evaluation));
    };
    let job = ctx.jobs.patch(&object_name(id), &PatchParams::default(), &Patch::Merge(&patch)).await?;
    ctx.index.write().job_written(job);
    Ok(ctx.index.read().evaluation(id, uid_of(object), now()))
}

/// What became of an evaluation's objects.
enum JobCreation {
    Created,
    /// Its Job was there already (made by this or an earlier leader).
    Existed,
    /// An object of one of its names exists and is not the evaluation's: nothing of it is used.
    Taken(String),
}

/// Creates `wanted`, owned by `owner` (its controller unless another object is to control it); an object of that
/// name that `owner` does not own is named in the answer, never used (a name can be taken in advance by whoever
/// may create objects in the namespace).
async fn create_fresh<K>(
    api: &Api<K>,
    mut wanted: K,
    owner: &EvaluationObject,
    controller: bool,
) -> Result<Option<String>, ReconcileError>
where
    K: Resource<DynamicType = ()> + Clone + std::fmt::Debug + serde::Serialize + serde::de::DeserializeOwned,
{
    let reference = owner.owner_reference().map(|o| OwnerReference { controller: controller.then_some(true), ..o });
    wanted.meta_mut().owner_references = reference.map(|o| vec![o]);
    let name = wanted.meta().name.clone().unwrap_or_default();
    match api.create(&PostParams::default(), &wanted).await {
        Ok(_) => Ok(None),
        Err(kube::Error::Api(status)) if status.code == 409 => {
            let existing = api.get(&name).await?;
            let uid = owner.metadata.uid.as_deref();
            let ours = existing.meta().owner_references.iter().flatten().any(|o| Some(o.uid.as_str()) == uid);
            Ok((!ours).then(|| {
                format!("{} {name} already exists and is not this evaluation's; it is not used", K::kind(&()))
            }))
        }
        Err(e) => Err(e.into()),
    }
}

/// With a bucket for outputs: the Secret of presigned URLs that let the run write its own objects, and no others.
/// A new one for each attempt (a new leader may try again): each is owned by the Evaluation and goes with it.
async fn upload_secret(ctx: &Context, evaluation: &Evaluation) -> Result<Option<Secret>, ReconcileError> {
    let store = &ctx.shared.config.output_store;
    let dir = OutputStore::dir(&evaluation.namespace, &evaluation.id.to_string());
    let valid_for =
        upload_validity(evaluation.request.timeout_seconds, ctx.shared.config.runner.upload_patience_seconds);
    let Some(urls) = store
        .upload_urls(&dir, valid_for)
        .await
        .map_err(|e| ReconcileError(format!("cannot sign upload URLs: {e}")))?
    else {
        return Ok(None);
    };
    Ok(Some(job::upload_secret(evaluation.id, &Uuid::new_v4().simple().to_string()[..10], urls)))
}

/// A run that has ended needs its upload URLs no more: the Secret holding them is deleted by the name its Job
/// mounts (read from the Job, never from a Secret), so it does not outlive the run. With no Job, or no bucket,
/// there is none. A Role without `delete` on Secrets (an older install) leaves it to go with its Evaluation.
async fn delete_upload_secret(ctx: &Context, id: Uuid) -> Result<(), ReconcileError> {
    if !ctx.shared.config.output_store.signs_uploads() {
        return Ok(());
    }
    let job = match ctx.jobs.get_opt(&object_name(id)).await? {
        Some(job) => job,
        None => return Ok(()),
    };
    let Some(secret) = job::upload_secret_of(&job, id) else { return Ok(()) };
    match ctx.secrets.delete(&secret, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 403 => {
            tracing::warn!(evaluation.id = %id, secret, error = %status.message, "cannot delete the ended run's upload Secret (give the service's Role delete on secrets); it goes with its Evaluation");
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

/// Creates the evaluation's runner identity (ServiceAccount, Role, RoleBinding) and its empty run record, each
/// fresh and owned by `owner`; the first object of one of their names that is not the evaluation's, named.
async fn create_identity(
    ctx: &Context,
    identity: job::RunnerIdentity,
    record: ConfigMap,
    owner: &EvaluationObject,
) -> Result<Option<String>, ReconcileError> {
    let taken = [
        create_fresh(&ctx.service_accounts, identity.service_account, owner, true).await?,
        create_fresh(&ctx.roles, identity.role, owner, true).await?,
        create_fresh(&ctx.role_bindings, identity.binding, owner, true).await?,
        // Owned, not controlled: records of earlier releases had their Job as controller.
        create_fresh(&ctx.config_maps, record, owner, false).await?,
    ];
    Ok(taken.into_iter().flatten().next())
}

/// Creates the evaluation's runner identity, run record, input and Job, each fresh.
async fn create_job(
    ctx: &Context,
    object: &EvaluationObject,
    new: &crate::lifecycle::admission::NewEvaluation,
) -> Result<JobCreation, ReconcileError> {
    let annotations = object.metadata.annotations.as_ref();
    let provenance = Provenance {
        request_digest: None,
        creator: annotations.and_then(|a| a.get(CREATOR_ANNOTATION)).map(String::as_str),
    };
    let mut objects = job::build(&new.evaluation, new.config_yaml.as_deref(), &ctx.shared.config.runner, provenance)
        .map_err(|e| ReconcileError(e.to_string()))?;
    let identity_taken = create_identity(ctx, objects.identity, objects.record, object).await?;
    let input_taken = match objects.input {
        Some(input) => create_fresh(&ctx.config_maps, input, object, true).await?,
        None => None,
    };
    if let Some(message) = identity_taken.or(input_taken) {
        return Ok(JobCreation::Taken(message));
    }
    if let Some(mut secret) = upload_secret(ctx, &new.evaluation).await? {
        secret.metadata.owner_references = object.owner_reference().map(|o| vec![o]);
        let created = ctx.secrets.create(&PostParams::default(), &secret).await?;
        job::use_upload_secret(&mut objects.job, &created.name_any());
    }
    objects.job.metadata.owner_references = object.owner_reference().map(|o| vec![o]);
    match ctx.jobs.create(&PostParams::default(), &objects.job).await {
        Ok(job) => {
            ctx.index.write().job_written(job);
            publish(
                ctx,
                object,
                EventType::Normal,
                "JobCreated",
                format!("created Job {}", object_name(new.evaluation.id)),
            )
            .await;
            Ok(JobCreation::Created)
        }
        Err(kube::Error::Api(status)) if status.code == 409 => {
            // Ours (made by this or an earlier leader), or made in advance by someone else: never counted as ours.
            let existing = ctx.jobs.get(&object_name(new.evaluation.id)).await?;
            let uid = uid_of(object);
            Ok(if existing.owner_references().iter().any(|o| o.uid == uid) {
                JobCreation::Existed
            } else {
                JobCreation::Taken(format!(
                    "Job {} already exists and is not this evaluation's; it is not used",
                    object_name(new.evaluation.id)
                ))
            })
        }
        Err(e) => Err(e.into()),
    }
}

/// Writes the status that shows `evaluation` when it differs from the one there (and, while it runs, at most
/// once every `STATUS_EVERY`); publishes the transition.
async fn write_status(
    ctx: &Context,
    object: &EvaluationObject,
    name: &str,
    evaluation: &Evaluation,
) -> Result<Action, ReconcileError> {
    let last = ctx.written.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(name).cloned();
    if cache_is_behind(object.metadata.resource_version.as_deref(), last.as_ref().map(|w| w.version.as_str())) {
        // Judged against an older status, this write would repeat ours (with new transition times).
        return Ok(Action::requeue(Duration::from_millis(500)));
    }
    let previous = object.status.as_ref();
    let status =
        EvaluationStatus::of(evaluation, &object_name(evaluation.id), object.metadata.generation, previous, now());
    let next = match evaluation.state {
        // Watches bring every change of the facts; the clock matters only for a pod that may get stuck.
        State::Pending => match ctx.index.read().stuck_at(evaluation.id, uid_of(object)) {
            Some(at) => Action::requeue(Duration::try_from(at - now()).unwrap_or_default().max(Duration::from_secs(1))),
            None => Action::await_change(),
        },
        state if state.is_terminal() => Action::await_change(),
        _ => Action::requeue(Duration::from_secs(60)),
    };
    if previous.is_some_and(|previous| previous.same_as(&status)) {
        return Ok(next);
    }
    // A pod the job controller has ended and removed, seen before the Job's end (two watches): what it waited for
    // is still the latest news, and the end follows.
    let reason_lost = status.state == Some(State::Pending)
        && status.reason.is_none()
        && previous.is_some_and(|p| p.state == Some(State::Pending) && p.reason.is_some());
    if reason_lost && !ctx.index.read().has_pod(evaluation.id, uid_of(object)) {
        return Ok(next);
    }
    let before = previous.and_then(|s| s.state);
    let only_progress = before == Some(State::Running) && status.state == Some(State::Running);
    if only_progress
        && let Some(wait) = last.and_then(|w| STATUS_EVERY.checked_sub(w.at.elapsed())).filter(|w| !w.is_zero())
    {
        return Ok(Action::requeue(wait));
    }
    let ends = status.state.is_some_and(State::is_terminal) && !before.is_some_and(State::is_terminal);
    if ends {
        // Before the status that says so: a failed delete is tried again with the transition.
        delete_upload_secret(ctx, evaluation.id).await?;
    }
    let patch = json!({"apiVersion": API_VERSION, "kind": KIND, "status": status});
    let written =
        ctx.evaluations.patch_status(name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch)).await?;
    let version = written.metadata.resource_version.unwrap_or_default();
    remember(&ctx.written, name, Written { at: tokio::time::Instant::now(), version });
    if before != status.state {
        announce(ctx, object, evaluation).await;
    }
    Ok(next)
}

#[derive(Debug, Clone)]
struct Written {
    at: tokio::time::Instant,
    version: String,
}

fn remember(written: &Mutex<HashMap<String, Written>>, name: &str, write: Written) {
    let mut record = written.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if record.len() >= 1024 {
        // Only recent writes matter (the rate limit, a cache catching up).
        record.retain(|_, w| w.at.elapsed() < Duration::from_secs(60));
    }
    record.insert(name.to_string(), write);
}

/// Whether the object as cached (`seen`) predates the status write that made resourceVersion `written`.
/// resourceVersions are opaque to clients but etcd revisions in practice; when either is not a number,
/// the cache is trusted.
fn cache_is_behind(seen: Option<&str>, written: Option<&str>) -> bool {
    match (seen.and_then(|v| v.parse::<u64>().ok()), written.and_then(|v| v.parse::<u64>().ok())) {
        (Some(seen), Some(written)) => seen < written,
        _ => false,
    }
}

/// The Event of a state an evaluation has just reached.
async fn announce(ctx: &Context, object: &EvaluationObject, evaluation: &Evaluation) {
    let message = evaluation.message.clone().unwrap_or_default();
    let reason = evaluation.reason.map_or("", crate::model::Reason::as_str);
    let (kind, event, note) = match evaluation.state {
        State::Pending => return,
        State::Running => (EventType::Normal, "Started", "lm_eval is running".to_string()),
        State::Succeeded => {
            (EventType::Normal, "Succeeded", "the evaluation succeeded; its results are recorded".to_string())
        }
        State::Cancelled => (EventType::Normal, "Cancelled", message),
        State::Failed => (EventType::Warning, "Failed", format!("{reason}: {message}")),
    };
    publish(ctx, object, kind, event, note).await;
}

/// Publishes one Event about `object`. Each transition happens once, so there is nothing to aggregate into a
/// series and nothing is cached (kube's Recorder keeps every Event for six minutes to count repeats).
async fn publish(ctx: &Context, object: &EvaluationObject, type_: EventType, reason: &str, note: String) {
    let event = Event {
        metadata: ObjectMeta {
            name: Some(format!(
                "{}.{}",
                object.metadata.name.as_deref().unwrap_or("evaluation"),
                &Uuid::new_v4().simple().to_string()[..12]
            )),
            ..ObjectMeta::default()
        },
        event_time: Some(MicroTime(jiff::Timestamp::now())),
        type_: Some(type_.as_str().into()),
        reason: Some(reason.into()),
        action: Some("Reconcile".into()),
        note: Some(note.chars().take(1000).collect()),
        regarding: Some(object.object_ref(&())),
        reporting_controller: Some(REPORTING_CONTROLLER.into()),
        reporting_instance: Some(ctx.instance.chars().take(128).collect()),
        ..Event::default()
    };
    if let Err(e) = ctx.events.create(&PostParams::default(), &event).await {
        tracing::debug!(error = %e, "could not publish an event");
    }
}

/// Upgrade: Jobs made by a release without Evaluation objects get their Evaluation (from the evaluation their
/// annotation holds) and are adopted by it, so they are listed, read and deleted as before. Read a page at a
/// time: a new leader of a namespace with thousands of Jobs does not hold them all at once.
async fn adopt_orphans(ctx: &Context) {
    let mut params = kube::api::ListParams::default().labels(&managed_selector()).limit(500);
    loop {
        let Ok(page) = ctx.jobs.list(&params).await else { return };
        for job in page.items {
            let owned = job.owner_references().iter().any(|o| o.kind == KIND && o.api_version == API_VERSION);
            if !owned {
                adopt(ctx, &job).await;
            }
        }
        match page.metadata.continue_ {
            Some(token) if !token.is_empty() => params = params.continue_token(&token),
            _ => return,
        }
    }
}

/// Gives one Job of an earlier release its Evaluation and makes that the Job's owner.
async fn adopt(ctx: &Context, job: &Job) {
    let (namespace, evaluations) = (ctx.namespace.as_str(), &ctx.evaluations);
    let annotations = job.metadata.annotations.as_ref();
    let Some(evaluation) =
        annotations.and_then(|a| a.get(EVALUATION_ANNOTATION)).and_then(|e| serde_json::from_str::<Evaluation>(e).ok())
    else {
        return;
    };
    let Ok(mut object) = EvaluationObject::new(&evaluation, namespace) else { return };
    if let (Some(creator), Some(object_annotations)) =
        (annotations.and_then(|a| a.get(CREATOR_ANNOTATION)), object.metadata.annotations.as_mut())
    {
        object_annotations.insert(CREATOR_ANNOTATION.into(), creator.clone());
    }
    let created = match evaluations.create(&PostParams::default(), &object).await {
        Ok(created) => created,
        Err(kube::Error::Api(status)) if status.code == 409 => match evaluations.get(&object_name(evaluation.id)).await
        {
            Ok(existing) => existing,
            Err(_) => return,
        },
        Err(e) => {
            tracing::warn!(error = %e, job = %job.name_any(), "could not adopt a Job of an earlier release");
            return;
        }
    };
    let Some(owner) = created.owner_reference() else { return };
    let patch = json!({"metadata": {"ownerReferences": [owner]}});
    match ctx.jobs.patch(&job.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await {
        Ok(_) => tracing::info!(evaluation.id = %evaluation.id, "adopted a Job of an earlier release"),
        Err(e) => tracing::warn!(error = %e, job = %job.name_any(), "could not adopt a Job of an earlier release"),
    }
    // Its pods run as the evaluation's own identity and write its run record, which the reconciler makes only
    // with a Job it creates.
    let identity = job::build(&evaluation, None, &ctx.shared.config.runner, Provenance::default());
    let made = match identity {
        Ok(objects) => create_identity(ctx, objects.identity, objects.record, &created).await,
        Err(e) => Err(ReconcileError(e.to_string())),
    };
    match made {
        Ok(None) => {}
        Ok(Some(taken)) => tracing::warn!(evaluation.id = %evaluation.id, "adopted Job: {taken}"),
        Err(e) => tracing::warn!(evaluation.id = %evaluation.id, error = %e, "adopted Job: its identity was not made"),
    }
    ctx.shared.views.write().store(namespace, &created);
}

/// An Event's type.
#[derive(Debug, Clone, Copy)]
enum EventType {
    Normal,
    Warning,
}

impl EventType {
    fn as_str(self) -> &'static str {
        match self {
            Self::Normal => "Normal",
            Self::Warning => "Warning",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::cache_is_behind;

    #[test]
    fn a_cached_object_older_than_the_last_status_write_is_behind() {
        assert!(cache_is_behind(Some("7119"), Some("7135")));
        assert!(!cache_is_behind(Some("7135"), Some("7135")));
        assert!(!cache_is_behind(Some("8000"), Some("7135")), "changed since (a cancel annotation)");
        assert!(!cache_is_behind(Some("7119"), None), "nothing written yet");
        assert!(!cache_is_behind(Some("opaque"), Some("7135")), "not numbers: trusted");
    }
}
