//! The embedded default: each evaluation is an `lm_eval` subprocess (under our driver, confined by Landlock to
//! its evaluation's directory: `crate::sandbox`) with its state in a directory. The in-memory store answers reads; every change is written to disk
//! first (atomically), so a restarted service picks up where the last one stopped.
//!
//! `record` is what is kept per evaluation and the facts of its end, `store` the in-memory index and
//! queue (pure), `process` the driver processes, `logs` the log streams.

mod logs;
pub(crate) mod process;
pub mod record;
pub mod store;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::Notify;
use uuid::Uuid;

use super::{
    Backend, Created, Guarded, ListQuery, Listable, LogOptions, LogStream, NewEvaluation, PendingLimits, Site, Stored,
    Waiting, count_by_state, ensure_cancellable, ensure_served, ensure_succeeded, replay,
};
use crate::driver::lock::{self, DriverState};
use crate::error::{ApiError, ApiResult};
use crate::fsutil::write_atomic;
use crate::lifecycle::CANCELLATION_REQUESTED;
use crate::lifecycle::admission::Workspace;
use crate::model::{Evaluation, EvaluationList, State, now};
use crate::outputs::OutputSet;
use crate::outputs::objects::Objects;
use crate::sandbox::Confinement;
use record::{Control, ProcessId, Record, StopReason};
use store::{Adopted, Store};

#[derive(Debug, Clone)]
pub struct LocalConfig {
    pub data_dir: PathBuf,
    /// The `lm_eval` executable.
    pub lm_eval: String,
    /// Our own binary, which runs as the driver around lm-eval.
    pub driver: PathBuf,
    /// Task directories always passed to lm-eval; a request's `include_path` must lie inside one.
    pub task_dirs: Vec<String>,
    pub max_running: usize,
    /// Between SIGTERM and SIGKILL when cancelling or timing out.
    pub kill_grace: Duration,
    pub pending_limits: PendingLimits,
    /// The one namespace it serves (the evaluations' `namespace`, and the namespaced routes').
    pub namespace: String,
    /// The service's own TCP ports, which lm_eval may not connect to (see `crate::sandbox`).
    pub service_ports: Vec<u16>,
}

pub struct LocalBackend {
    shared: Arc<Shared>,
}

struct Shared {
    config: LocalConfig,
    site: Site,
    namespaces: Vec<String>,
    store: Guarded<Store>,
    /// Creations one at a time, so creation order is queue order; readers never wait on it.
    admitting: std::sync::Mutex<()>,
    /// Wakes the scheduler: a slot freed or work arrived.
    wake: Notify,
}

const RECORD: &str = "record.json";
/// The request alone, for the run's manifest.
const REQUEST: &str = "request.json";
const LOG: &str = "log.txt";
const PROGRESS: &str = "progress.json";
const EXIT: &str = "exit.json";
const POLL: Duration = Duration::from_millis(200);

impl LocalBackend {
    /// Opens the data directory, reconciles what a previous run left, and starts the scheduler.
    pub async fn open(config: LocalConfig) -> anyhow::Result<Self> {
        let evaluations = config.data_dir.join("evaluations");
        std::fs::create_dir_all(&evaluations)?;
        let site = Site {
            backend: "local",
            program: config.lm_eval.clone(),
            task_dirs: config.task_dirs.clone(),
            workspace: Workspace::PerEvaluation(evaluations),
            secrets: false,
            volumes: false,
            resources: false,
            namespace: config.namespace.clone(),
            default_namespace: true,
            service_env: vec![],
            reserved: Default::default(),
        };
        let shared = Arc::new(Shared {
            namespaces: vec![config.namespace.clone()],
            config,
            site,
            store: Guarded::default(),
            admitting: std::sync::Mutex::new(()),
            wake: Notify::new(),
        });
        match crate::sandbox::probe_with(&shared.config.driver).await {
            Ok(Confinement::Enforced { abi, partial, network }) => {
                tracing::info!(landlock_abi = %abi, partial, "lm_eval runs confined by Landlock to its evaluation's directory");
                if !network {
                    tracing::warn!(landlock_abi = %abi, ports = ?shared.config.service_ports, "this kernel's Landlock has no network rules (ABI 4, Linux 6.7): lm_eval can connect to the service's own ports");
                }
            }
            Ok(Confinement::Unavailable { why }) => {
                tracing::warn!(why = %why, "Landlock is not available: lm_eval runs unconfined and can read and write other evaluations' directories");
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not learn whether Landlock is available; every evaluation's log says whether it was confined")
            }
        }
        let mut records = shared.load_records()?;
        records.sort_by_key(|r| r.evaluation.created_at);
        for record in records {
            shared.adopt(record);
        }
        tokio::spawn(Arc::clone(&shared).schedule());
        shared.wake.notify_one();
        Ok(Self { shared })
    }
}

impl Shared {
    fn dir(&self, id: Uuid) -> PathBuf {
        self.config.data_dir.join("evaluations").join(id.to_string())
    }

    fn load_records(&self) -> anyhow::Result<Vec<Record>> {
        let mut records = Vec::new();
        for entry in std::fs::read_dir(self.config.data_dir.join("evaluations"))? {
            let dir = entry?.path();
            if dir.file_name().is_some_and(|name| name.to_string_lossy().starts_with('.')) {
                // A creation that did not finish: never visible, never started.
                let _ = std::fs::remove_dir_all(&dir);
                continue;
            }
            let path = dir.join(RECORD);
            match std::fs::read(&path)
                .map_err(anyhow::Error::from)
                .and_then(|b| Ok(serde_json::from_slice::<Record>(&b)?))
            {
                Ok(record) => records.push(record),
                Err(e) if path.exists() => {
                    tracing::warn!(path = %path.display(), error = %e, "skipping unreadable record")
                }
                Err(_) => {}
            }
        }
        Ok(records)
    }

    /// Takes over a record found on disk at start-up, by what its driver lock says: a live driver is followed
    /// (never a second one started), a claim whose driver never ran is queued again.
    fn adopt(self: &Arc<Self>, mut record: Record) {
        let id = record.evaluation.id;
        let driver = self.driver_state(id, record.control.process);
        if let (DriverState::Live(Some(pid)), None) = (driver, record.control.process) {
            record.control.process = ProcessId::of(pid);
        }
        let adopted = self.store.write().adopt(&mut record, driver, now());
        match adopted {
            Adopted::Running => {
                tracing::info!(evaluation.id = %id, pid = ?record.control.process.map(|p| p.pid), "re-adopting a running evaluation");
                self.persist(&record);
                if let Some(process) = record.control.process.filter(|_| record.control.stopping.is_some()) {
                    self.terminate(process);
                }
                tokio::spawn(Arc::clone(self).watch(id, None));
            }
            Adopted::Ended => {
                self.settle(&mut record);
                self.persist(&record);
                self.store.write().replace(&record);
            }
            Adopted::Queued => self.persist(&record),
            Adopted::Finished => {}
        }
    }

    /// What the evaluation's driver lock says about its driver. A driver of a release before the lock (no lock, a
    /// recorded pid) is live while that process is.
    fn driver_state(&self, id: Uuid, recorded: Option<ProcessId>) -> DriverState {
        match lock::probe(&self.dir(id)) {
            Ok(DriverState::NeverStarted) => match recorded {
                Some(process) if process.is_alive() => DriverState::Live(Some(process.pid)),
                Some(_) => DriverState::Gone,
                None => DriverState::NeverStarted,
            },
            Ok(driver) => driver,
            Err(e) => {
                tracing::warn!(evaluation.id = %id, error = %e, "cannot read the driver lock; taking the driver for gone");
                DriverState::Gone
            }
        }
    }

    /// Writes a new evaluation's directory (inline tasks, config, record) aside, then moves it into place: no
    /// lock is held while its files are written, and a crash leaves nothing half made.
    fn write_new(&self, record: &Record, config_yaml: Option<&str>) -> std::io::Result<()> {
        let id = record.evaluation.id;
        let staging = self.config.data_dir.join("evaluations").join(format!(".new-{id}"));
        let _ = std::fs::remove_dir_all(&staging);
        std::fs::create_dir_all(staging.join("output"))?;
        let inline_tasks = &record.evaluation.request.inline_tasks;
        if !inline_tasks.is_empty() {
            std::fs::create_dir_all(staging.join("tasks"))?;
            for (name, text) in inline_tasks {
                std::fs::write(staging.join("tasks").join(name), text)?;
            }
        }
        if let Some(yaml) = config_yaml {
            std::fs::write(staging.join("config.yaml"), yaml)?;
        }
        let request = serde_json::to_vec_pretty(&record.evaluation.request).map_err(std::io::Error::other)?;
        std::fs::write(staging.join(REQUEST), request)?;
        write_atomic(&staging.join(RECORD), &serde_json::to_vec_pretty(record).map_err(std::io::Error::other)?)?;
        std::fs::rename(&staging, self.dir(id))
    }

    fn persist(&self, record: &Record) {
        if let Err(e) = self.try_persist(record) {
            tracing::error!(evaluation.id = %record.evaluation.id, error = %e, "cannot persist evaluation record");
        }
    }

    fn try_persist(&self, record: &Record) -> std::io::Result<()> {
        let path = self.dir(record.evaluation.id).join(RECORD);
        serde_json::to_vec_pretty(record).map_err(std::io::Error::other).and_then(|b| write_atomic(&path, &b))
    }

    async fn schedule(self: Arc<Self>) {
        loop {
            self.wake.notified().await;
            loop {
                // Claimed under the lock, so a concurrent cancel sees it running, not pending.
                let next = self.store.write().start_next(self.config.max_running, now());
                let Some(record) = next else { break };
                self.start(record);
            }
        }
    }

    fn release_slot(&self) {
        self.store.write().release();
        self.wake.notify_one();
    }

    fn record(&self, id: Uuid) -> ApiResult<Record> {
        self.store.read().record(id).ok_or_else(|| ApiError::NotFound(id.to_string()))
    }
}

#[async_trait]
impl Backend for LocalBackend {
    fn namespaces(&self) -> &[String] {
        &self.shared.namespaces
    }

    fn site(&self, namespace: &str) -> ApiResult<Site> {
        ensure_served(&self.shared.namespaces, namespace)?;
        Ok(self.shared.site.clone())
    }

    async fn create(&self, new: NewEvaluation) -> ApiResult<Created> {
        let shared = &self.shared;
        let id = new.evaluation.id;
        let _one_at_a_time = shared.admitting.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        {
            let store = shared.store.read();
            if let Some(key) = &new.idempotency
                && let Ok(existing) = store.slot(id)
            {
                let control = existing.control();
                let evaluation = Listable::evaluation(existing)?;
                let stored = Stored {
                    digest: control.idempotency.as_ref().map(|k| k.body_digest.as_str()),
                    creator: control.creator.as_deref(),
                    same_request: evaluation.request == new.evaluation.request,
                };
                return replay(key, stored, &new.creator, evaluation);
            }
            let (pending, of_creator) = store.pending(&new.creator);
            let waiting = Waiting { all: pending, of_creator, in_namespace: pending };
            shared.config.pending_limits.admit_one_more(waiting, &shared.config.namespace)?;
        }
        let mut evaluation = new.evaluation;
        evaluation.created_at = now();
        let control = Control { idempotency: new.idempotency, creator: Some(new.creator), ..Control::default() };
        let record = Record { evaluation, control };
        shared.write_new(&record, new.config_yaml.as_deref()).map_err(ApiError::internal)?;
        shared.store.write().enqueue(&record);
        shared.wake.notify_one();
        Ok(Created::New(record.evaluation))
    }

    fn get(&self, namespace: &str, id: Uuid) -> ApiResult<Evaluation> {
        ensure_served(&self.shared.namespaces, namespace)?;
        Listable::evaluation(self.shared.store.read().slot(id)?)
    }

    fn get_json(&self, namespace: &str, id: Uuid) -> ApiResult<Bytes> {
        ensure_served(&self.shared.namespaces, namespace)?;
        self.shared.store.read().slot(id).map(|slot| slot.json.clone())
    }

    async fn list(&self, namespace: &str, query: &ListQuery) -> ApiResult<EvaluationList> {
        ensure_served(&self.shared.namespaces, namespace)?;
        self.shared.store.read().list(query)
    }

    async fn logs(&self, namespace: &str, id: Uuid, options: LogOptions) -> ApiResult<LogStream> {
        ensure_served(&self.shared.namespaces, namespace)?;
        self.shared.store.read().slot(id)?;
        let path = self.shared.dir(id).join(LOG);
        Ok(logs::stream_lines(Arc::clone(&self.shared), id, path, options))
    }

    async fn outputs(&self, namespace: &str, id: Uuid) -> ApiResult<Option<OutputSet>> {
        ensure_served(&self.shared.namespaces, namespace)?;
        let evaluation = Listable::evaluation(self.shared.store.read().slot(id)?)?;
        Ok(Some(OutputSet {
            objects: Objects::Files { root: self.shared.config.data_dir.join("evaluations") },
            dir: id.to_string(),
            in_place: true,
            id,
            state: evaluation.state,
            log_samples: evaluation.request.log_samples,
        }))
    }

    async fn results(&self, namespace: &str, id: Uuid) -> ApiResult<Bytes> {
        ensure_served(&self.shared.namespaces, namespace)?;
        let record = self.shared.record(id)?;
        ensure_succeeded(id, record.evaluation.state)?;
        let path = record
            .control
            .results_file
            .ok_or_else(|| ApiError::internal("succeeded evaluation without a results file"))?;
        tokio::fs::read(&path).await.map(Bytes::from).map_err(ApiError::internal)
    }

    async fn cancel(&self, namespace: &str, id: Uuid) -> ApiResult<Evaluation> {
        ensure_served(&self.shared.namespaces, namespace)?;
        let shared = &self.shared;
        let state = shared.store.read().slot(id)?.state;
        ensure_cancellable(id, state)?;
        if state == State::Pending {
            let cancelled = shared.store.write().cancel_pending(id, now());
            if let Some(record) = cancelled {
                shared.persist(&record);
                return Ok(record.evaluation);
            }
            // It started meanwhile: stop the process.
            shared.stop(id, StopReason::Cancelled);
            return self.get(namespace, id);
        }
        shared.stop(id, StopReason::Cancelled);
        let mut evaluation = self.get(namespace, id)?;
        evaluation.message = Some(CANCELLATION_REQUESTED.into());
        Ok(evaluation)
    }

    async fn delete(&self, namespace: &str, id: Uuid) -> ApiResult<()> {
        if !self.get(namespace, id)?.state.is_terminal() {
            self.cancel(namespace, id).await?;
            let deadline = tokio::time::Instant::now() + self.shared.config.kill_grace + Duration::from_secs(5);
            while !self.get(namespace, id)?.state.is_terminal() {
                if tokio::time::Instant::now() > deadline {
                    return Err(ApiError::Unavailable {
                        detail: format!("evaluation {id} is still stopping"),
                        retry_after_seconds: 2,
                    });
                }
                tokio::time::sleep(POLL / 4).await;
            }
        }
        self.shared.store.write().remove(id);
        let dir = self.shared.dir(id);
        tokio::fs::remove_dir_all(&dir)
            .await
            .or_else(|e| if e.kind() == std::io::ErrorKind::NotFound { Ok(()) } else { Err(e) })
            .map_err(ApiError::internal)
    }

    async fn ready(&self) -> ApiResult<()> {
        let probe = self.shared.config.data_dir.join("evaluations");
        tokio::fs::metadata(&probe).await.map(|_| ()).map_err(|e| ApiError::Unavailable {
            detail: format!("data directory unavailable: {e}"),
            retry_after_seconds: 5,
        })
    }

    async fn count_by_state(&self) -> BTreeMap<State, u64> {
        count_by_state(self.shared.store.read().states())
    }
}

impl std::fmt::Debug for LocalBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalBackend").field("data_dir", &self.shared.config.data_dir).finish_non_exhaustive()
    }
}
