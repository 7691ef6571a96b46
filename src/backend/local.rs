//! The embedded default: each evaluation is an `lm_eval` subprocess (under our driver) with its
//! state in a directory. The in-memory index answers reads; every change is written to disk
//! first-class (atomically), so a restarted service picks up where the last one stopped.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use nix::sys::signal::Signal;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::Notify;
use uuid::Uuid;

use super::{
    Backend, Created, IdempotencyKey, ListQuery, Listable, LogOptions, LogStream, NewEvaluation, paginate, sort_key,
};
use crate::command::RunPlan;
use crate::driver::ExitStatus;
use crate::error::{ApiError, ApiResult};
use crate::fsutil::{process_start_ticks, write_atomic};
use crate::model::{Evaluation, EvaluationList, Progress, State, now};
use crate::results::{find_results, metric_rows};
use crate::validate::ValidRequest;

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
}

/// What the backend keeps on disk for one evaluation (`record.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    evaluation: Evaluation,
    #[serde(flatten)]
    control: Control,
}

/// What the backend needs beyond the evaluation itself.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Control {
    idempotency: Option<IdempotencyKey>,
    process: Option<ProcessId>,
    /// Why we are stopping it, once we are.
    stopping: Option<StopReason>,
    results_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
enum StopReason {
    Cancelled,
    Timeout,
}

/// One evaluation in memory: its JSON exactly as served (reads copy nothing), and the few fields
/// that listing and control look at. Compact, so a large history costs little memory.
struct Slot {
    json: Bytes,
    state: State,
    labels: Box<[(Box<str>, Box<str>)]>,
    control: Control,
}

impl Slot {
    fn new(record: &Record) -> Self {
        let evaluation = &record.evaluation;
        Self {
            json: serde_json::to_vec(evaluation).map(Bytes::from).unwrap_or_default(),
            state: evaluation.state,
            labels: evaluation.labels.iter().map(|(k, v)| (k.as_str().into(), v.as_str().into())).collect(),
            control: record.control.clone(),
        }
    }

    fn evaluation(&self) -> ApiResult<Evaluation> {
        serde_json::from_slice(&self.json).map_err(ApiError::internal)
    }

    fn record(&self) -> Option<Record> {
        Some(Record { evaluation: self.evaluation().ok()?, control: self.control.clone() })
    }
}

impl Listable for Slot {
    fn state(&self) -> State {
        self.state
    }

    fn has_label(&self, key: &str, value: &str) -> bool {
        self.labels.iter().any(|(k, v)| &**k == key && &**v == value)
    }

    fn evaluation(&self) -> ApiResult<Evaluation> {
        Slot::evaluation(self)
    }
}

/// A pid together with its start time, so a reused pid is never mistaken for ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct ProcessId {
    pid: u32,
    start_ticks: u64,
}

impl ProcessId {
    fn is_alive(self) -> bool {
        process_start_ticks(self.pid) == Some(self.start_ticks)
    }

    fn signal_group(self, signal: Signal) {
        if self.is_alive() {
            #[allow(clippy::cast_possible_wrap)]
            let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(self.pid as i32), signal);
        }
    }
}

#[derive(Default)]
struct Store {
    records: HashMap<Uuid, Slot>,
    order: BTreeMap<(std::cmp::Reverse<i128>, std::cmp::Reverse<Uuid>), Uuid>,
    idempotency: HashMap<String, Uuid>,
    queue: VecDeque<Uuid>,
    running: usize,
}

impl Store {
    fn insert(&mut self, record: &Record) {
        let id = record.evaluation.id;
        self.order.insert(sort_key(&record.evaluation), id);
        if let Some(key) = &record.control.idempotency {
            self.idempotency.insert(key.key.clone(), id);
        }
        self.records.insert(id, Slot::new(record));
    }

    fn record(&self, id: Uuid) -> Option<Record> {
        self.records.get(&id)?.record()
    }

    /// Applies `change` to the evaluation `id`; returns the updated record.
    fn update(&mut self, id: Uuid, change: impl FnOnce(&mut Record)) -> Option<Record> {
        let slot = self.records.get_mut(&id)?;
        let mut record = slot.record()?;
        change(&mut record);
        *slot = Slot::new(&record);
        Some(record)
    }

    fn remove(&mut self, id: Uuid) {
        let Some(slot) = self.records.remove(&id) else { return };
        if let Ok(evaluation) = slot.evaluation() {
            self.order.remove(&sort_key(&evaluation));
        }
        if let Some(key) = &slot.control.idempotency {
            self.idempotency.remove(&key.key);
        }
        self.queue.retain(|q| *q != id);
    }
}

pub struct LocalBackend {
    shared: Arc<Shared>,
}

struct Shared {
    config: LocalConfig,
    store: RwLock<Store>,
    /// Wakes the scheduler: a slot freed or work arrived.
    wake: Notify,
}

const RECORD: &str = "record.json";
const LOG: &str = "log.txt";
const PROGRESS: &str = "progress.json";
const EXIT: &str = "exit.json";
const POLL: Duration = Duration::from_millis(200);
const LAST_LOG_LINES_IN_MESSAGE: usize = 20;

impl LocalBackend {
    /// Opens the data directory, reconciles what a previous run left, and starts the scheduler.
    pub async fn open(config: LocalConfig) -> anyhow::Result<Self> {
        std::fs::create_dir_all(config.data_dir.join("evaluations"))?;
        let shared = Arc::new(Shared { config, store: RwLock::new(Store::default()), wake: Notify::new() });
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
            let path = entry?.path().join(RECORD);
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

    /// Takes over a record found on disk at start-up.
    fn adopt(self: &Arc<Self>, mut record: Record) {
        let id = record.evaluation.id;
        match record.evaluation.state {
            State::Pending => {
                let mut store = self.write();
                store.queue.push_back(id);
                store.insert(&record);
            }
            State::Running => match record.control.process.filter(|p| p.is_alive()) {
                Some(process) => {
                    tracing::info!(evaluation.id = %id, pid = process.pid, "re-adopting a running evaluation");
                    if record.control.stopping.is_some() {
                        process.signal_group(Signal::SIGTERM);
                    }
                    {
                        let mut store = self.write();
                        store.running += 1;
                        store.insert(&record);
                    }
                    tokio::spawn(Arc::clone(self).watch(id, None));
                }
                None => {
                    let exit = self.read_exit(id);
                    self.conclude(&mut record, exit);
                    self.persist(&record);
                    self.write().insert(&record);
                }
            },
            _ => self.write().insert(&record),
        }
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Store> {
        self.store.write().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Store> {
        self.store.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn persist(&self, record: &Record) {
        let path = self.dir(record.evaluation.id).join(RECORD);
        let result =
            serde_json::to_vec_pretty(record).map_err(std::io::Error::other).and_then(|b| write_atomic(&path, &b));
        if let Err(e) = result {
            tracing::error!(evaluation.id = %record.evaluation.id, error = %e, "cannot persist evaluation record");
        }
    }

    fn read_exit(&self, id: Uuid) -> Option<ExitStatus> {
        std::fs::read(self.dir(id).join(EXIT)).ok().and_then(|b| serde_json::from_slice(&b).ok())
    }

    async fn schedule(self: Arc<Self>) {
        loop {
            self.wake.notified().await;
            loop {
                let next = {
                    let mut store = self.write();
                    if store.running >= self.config.max_running {
                        None
                    } else {
                        let next = store.queue.pop_front();
                        if next.is_some() {
                            store.running += 1;
                        }
                        next
                    }
                };
                let Some(id) = next else { break };
                self.start(id);
            }
        }
    }

    fn start(self: &Arc<Self>, id: Uuid) {
        // Claim the evaluation under the lock, so a concurrent cancel sees it running, not pending.
        let claimed = {
            let mut store = self.write();
            match store.records.get(&id) {
                Some(slot) if slot.state == State::Pending => store.update(id, |record| {
                    record.evaluation.state = State::Running;
                    record.evaluation.started_at = Some(now());
                }),
                _ => None,
            }
        };
        let Some(record) = claimed else {
            self.release_slot();
            return;
        };
        let dir = self.dir(id);
        let mut command = tokio::process::Command::new(&self.config.driver);
        command
            .arg("driver")
            .arg("--log-file")
            .arg(dir.join(LOG))
            .arg("--progress-file")
            .arg(dir.join(PROGRESS))
            .arg("--exit-file")
            .arg(dir.join(EXIT))
            .arg("--")
            .args(&record.evaluation.command)
            .current_dir(&dir)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .process_group(0)
            .kill_on_drop(false);
        for (name, _) in std::env::vars_os().filter(|(n, _)| n.to_string_lossy().starts_with("LMEVAL_")) {
            command.env_remove(name);
        }
        let request = &record.evaluation.request;
        if !request.allow_online {
            command.env("HF_DATASETS_OFFLINE", "1").env("HF_HUB_OFFLINE", "1").env("TRANSFORMERS_OFFLINE", "1");
        }
        for var in &request.env {
            if let Some(value) = &var.value {
                command.env(&var.name, value);
            }
        }
        match command.spawn() {
            Ok(child) => {
                let process =
                    child.id().and_then(|pid| Some(ProcessId { pid, start_ticks: process_start_ticks(pid)? }));
                let snapshot = self.write().update(id, |r| r.control.process = process);
                tracing::info!(evaluation.id = %id, pid = ?process.map(|p| p.pid), "evaluation started");
                if let Some(snapshot) = &snapshot {
                    self.persist(snapshot);
                    if let Some(why) = snapshot.control.stopping {
                        self.stop(id, why);
                    }
                }
                tokio::spawn(Arc::clone(self).watch(id, Some(child)));
            }
            Err(e) => {
                let mut record = record;
                record.evaluation.state = State::Failed;
                record.evaluation.reason = Some("StartError".into());
                record.evaluation.message = Some(format!("cannot start the driver: {e}"));
                record.evaluation.finished_at = Some(now());
                self.persist(&record);
                self.replace(&record);
                self.release_slot();
            }
        }
    }

    /// Puts an updated record back, unless the evaluation was deleted meanwhile.
    fn replace(&self, record: &Record) -> bool {
        let mut store = self.write();
        match store.records.get_mut(&record.evaluation.id) {
            Some(slot) => {
                *slot = Slot::new(record);
                true
            }
            None => false,
        }
    }

    fn release_slot(&self) {
        let mut store = self.write();
        store.running = store.running.saturating_sub(1);
        drop(store);
        self.wake.notify_one();
    }

    /// Follows a running evaluation to its end: progress, timeout, and the final state.
    async fn watch(self: Arc<Self>, id: Uuid, mut child: Option<tokio::process::Child>) {
        let progress_path = self.dir(id).join(PROGRESS);
        let mut last_progress: Option<Progress> = None;
        loop {
            let ended = match child.as_mut() {
                Some(child) => tokio::time::timeout(POLL, child.wait()).await.is_ok(),
                None => {
                    tokio::time::sleep(POLL).await;
                    let process = self.read().records.get(&id).and_then(|slot| slot.control.process);
                    process.is_none_or(|p| !p.is_alive())
                }
            };
            let progress = std::fs::read(&progress_path).ok().and_then(|b| serde_json::from_slice::<Progress>(&b).ok());
            let Some(record) = self.read().record(id) else {
                self.release_slot();
                return;
            };
            if ended {
                let mut record = record;
                record.evaluation.progress = progress.or(record.evaluation.progress);
                let exit = self.read_exit(id);
                self.conclude(&mut record, exit);
                self.persist(&record);
                tracing::info!(evaluation.id = %id, state = record.evaluation.state.as_str(), reason = ?record.evaluation.reason, "evaluation ended");
                self.replace(&record);
                self.release_slot();
                return;
            }
            if progress != last_progress {
                last_progress = progress;
                self.write().update(id, |r| r.evaluation.progress = progress);
            }
            let overdue = match (record.evaluation.request.timeout_seconds, record.evaluation.started_at) {
                (Some(limit), Some(started)) => {
                    now() - started > time::Duration::seconds(i64::try_from(limit).unwrap_or(i64::MAX))
                }
                _ => false,
            };
            if overdue && record.control.stopping.is_none() {
                self.stop(id, StopReason::Timeout);
            }
        }
    }

    /// Terminates the evaluation's process group: SIGTERM, then SIGKILL after the grace period.
    fn stop(self: &Arc<Self>, id: Uuid, why: StopReason) {
        let Some(snapshot) = self.write().update(id, |r| r.control.stopping = Some(why)) else { return };
        self.persist(&snapshot);
        let process = snapshot.control.process;
        let Some(process) = process else { return };
        process.signal_group(Signal::SIGTERM);
        let grace = self.config.kill_grace;
        tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            process.signal_group(Signal::SIGKILL);
        });
    }

    /// The final state of an evaluation whose process has ended.
    fn conclude(&self, record: &mut Record, exit: Option<ExitStatus>) {
        let evaluation = &mut record.evaluation;
        evaluation.finished_at = Some(now());
        let (state, reason, message) = match (record.control.stopping, exit) {
            (Some(StopReason::Cancelled), _) => (State::Cancelled, "Cancelled", "cancelled by request".to_string()),
            (Some(StopReason::Timeout), _) => (
                State::Failed,
                "Timeout",
                format!("exceeded timeout_seconds={}", evaluation.request.timeout_seconds.unwrap_or_default()),
            ),
            (_, Some(ExitStatus { code: Some(0), .. })) => match find_results(&self.dir(evaluation.id).join("output")) {
                Some(path) => {
                    let metrics = std::fs::read(&path).ok().and_then(|b| serde_json::from_slice(&b).ok()).map(|v| metric_rows(&v));
                    record.control.results_file = Some(path);
                    evaluation.metrics = metrics;
                    evaluation.state = State::Succeeded;
                    evaluation.reason = None;
                    evaluation.message = None;
                    if let Some(p) = evaluation.progress.as_mut() {
                        p.completed = p.total;
                        p.percent = 100.0;
                    }
                    return;
                }
                None => (State::Failed, "NoResults", "lm_eval exited 0 but wrote no results file".to_string()),
            },
            (_, Some(ExitStatus { code: Some(code), .. })) => (
                State::Failed,
                "LmEvalError",
                format!("lm_eval exited with code {code}; last log lines:\n{}", self.last_log_lines(evaluation.id)),
            ),
            (_, Some(ExitStatus { signal: Some(signal), .. })) => (
                State::Failed,
                "Killed",
                format!("lm_eval was killed by signal {signal}; last log lines:\n{}", self.last_log_lines(evaluation.id)),
            ),
            (_, _) => (
                State::Failed,
                "Interrupted",
                "the evaluation's process ended while the service was not watching it, without recording an exit status".to_string(),
            ),
        };
        evaluation.state = state;
        evaluation.reason = Some(reason.to_string());
        evaluation.message = Some(message);
    }

    fn last_log_lines(&self, id: Uuid) -> String {
        let text =
            std::fs::read(self.dir(id).join(LOG)).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(LAST_LOG_LINES_IN_MESSAGE)..].join("\n")
    }

    /// Cancels an evaluation still waiting for a slot; `None` if it has left the queue.
    fn cancel_pending(&self, id: Uuid) -> Option<Evaluation> {
        let mut store = self.write();
        store.queue.retain(|q| *q != id);
        if store.records.get(&id)?.state != State::Pending {
            return None;
        }
        let snapshot = store.update(id, |record| {
            record.control.stopping = Some(StopReason::Cancelled);
            self.conclude(record, None);
        })?;
        drop(store);
        self.persist(&snapshot);
        Some(snapshot.evaluation)
    }

    fn get(&self, id: Uuid) -> ApiResult<Record> {
        self.read().record(id).ok_or_else(|| ApiError::NotFound(id.to_string()))
    }
}

#[async_trait]
impl Backend for LocalBackend {
    fn check_supported(&self, valid: &ValidRequest) -> ApiResult<()> {
        let request = valid.request();
        if let Some(i) = request.env.iter().position(|v| v.secret.is_some()) {
            return Err(ApiError::invalid(
                format!("env[{i}].secret"),
                "the local backend has no secret store; secret references need the kubernetes backend",
            ));
        }
        if !request.volumes.is_empty() {
            return Err(ApiError::invalid("volumes", "the local backend cannot mount PersistentVolumeClaims"));
        }
        if request.resources.is_some() {
            return Err(ApiError::invalid(
                "resources",
                "the local backend cannot reserve resources; use the kubernetes backend",
            ));
        }
        if let Some(path) = &request.include_path {
            let allowed = self.shared.config.task_dirs.iter().any(|dir| Path::new(path).starts_with(dir));
            if !allowed {
                return Err(ApiError::invalid("include_path", "must lie inside one of the server's task directories"));
            }
        }
        Ok(())
    }

    fn plan(&self, id: Uuid) -> RunPlan {
        let dir = self.shared.dir(id);
        let path = |name: &str| dir.join(name).to_string_lossy().into_owned();
        RunPlan {
            program: self.shared.config.lm_eval.clone(),
            output_path: path("output"),
            task_dirs: self.shared.config.task_dirs.clone(),
            inline_tasks_dir: path("tasks"),
            config_path: path("config.yaml"),
        }
    }

    async fn create(&self, new: NewEvaluation) -> ApiResult<Created> {
        let shared = &self.shared;
        let id = new.evaluation.id;
        let mut store = shared.write();
        if let Some(key) = &new.idempotency
            && let Some(existing) = store.idempotency.get(&key.key).and_then(|id| store.records.get(id))
        {
            return if existing.control.idempotency.as_ref().map(|k| &k.body_digest) == Some(&key.body_digest) {
                Ok(Created::Existing(existing.evaluation()?))
            } else {
                Err(ApiError::Conflict("Idempotency-Key was already used with a different request body".into()))
            };
        }
        let dir = shared.dir(id);
        let write_files = || -> std::io::Result<()> {
            std::fs::create_dir_all(dir.join("output"))?;
            let request = new.valid.request();
            if !request.inline_tasks.is_empty() {
                std::fs::create_dir_all(dir.join("tasks"))?;
                for (name, text) in &request.inline_tasks {
                    std::fs::write(dir.join("tasks").join(name), text)?;
                }
            }
            if let Some(yaml) = &new.command.config_yaml {
                std::fs::write(dir.join("config.yaml"), yaml)?;
            }
            Ok(())
        };
        write_files().map_err(ApiError::internal)?;
        // Stamped under the lock, so creation order is queue order (the list's order is start order).
        let mut evaluation = new.evaluation;
        evaluation.created_at = now();
        let record = Record {
            evaluation: evaluation.clone(),
            control: Control { idempotency: new.idempotency, ..Control::default() },
        };
        shared.persist(&record);
        store.queue.push_back(id);
        store.insert(&record);
        drop(store);
        shared.wake.notify_one();
        Ok(Created::New(evaluation))
    }

    async fn get(&self, id: Uuid) -> ApiResult<Evaluation> {
        self.shared.read().records.get(&id).ok_or_else(|| ApiError::NotFound(id.to_string()))?.evaluation()
    }

    async fn get_json(&self, id: Uuid) -> ApiResult<Bytes> {
        self.shared
            .read()
            .records
            .get(&id)
            .map(|slot| slot.json.clone())
            .ok_or_else(|| ApiError::NotFound(id.to_string()))
    }

    async fn list(&self, query: &ListQuery) -> ApiResult<EvaluationList> {
        let store = self.shared.read();
        paginate(store.order.iter().filter_map(|(key, id)| Some((key, store.records.get(id)?))), query)
    }

    async fn logs(&self, id: Uuid, options: LogOptions) -> ApiResult<LogStream> {
        self.shared.get(id)?;
        let shared = Arc::clone(&self.shared);
        let path = shared.dir(id).join(LOG);
        let stream = async_stream_lines(shared, id, path, options);
        Ok(stream)
    }

    async fn results(&self, id: Uuid) -> ApiResult<Bytes> {
        let record = self.shared.get(id)?;
        if record.evaluation.state != State::Succeeded {
            return Err(ApiError::Conflict(format!(
                "evaluation {id} is {}; results exist only once it has succeeded",
                record.evaluation.state.as_str()
            )));
        }
        let path = record
            .control
            .results_file
            .ok_or_else(|| ApiError::internal("succeeded evaluation without a results file"))?;
        tokio::fs::read(&path).await.map(Bytes::from).map_err(ApiError::internal)
    }

    async fn cancel(&self, id: Uuid) -> ApiResult<Evaluation> {
        let shared = &self.shared;
        let record = shared.get(id)?;
        match record.evaluation.state {
            state if state.is_terminal() => {
                Err(ApiError::Conflict(format!("evaluation {id} has already {}", state.as_str())))
            }
            State::Pending => match shared.cancel_pending(id) {
                Some(evaluation) => Ok(evaluation),
                // It started meanwhile: stop the process.
                None => {
                    shared.stop(id, StopReason::Cancelled);
                    self.get(id).await
                }
            },
            _ => {
                shared.stop(id, StopReason::Cancelled);
                let mut evaluation = self.get(id).await?;
                evaluation.message = Some("cancellation requested".into());
                Ok(evaluation)
            }
        }
    }

    async fn delete(&self, id: Uuid) -> ApiResult<()> {
        let record = self.shared.get(id)?;
        if !record.evaluation.state.is_terminal() {
            self.cancel(id).await?;
            let deadline = tokio::time::Instant::now() + self.shared.config.kill_grace + Duration::from_secs(5);
            while !self.get(id).await?.state.is_terminal() {
                if tokio::time::Instant::now() > deadline {
                    return Err(ApiError::Unavailable {
                        detail: format!("evaluation {id} is still stopping"),
                        retry_after_seconds: 2,
                    });
                }
                tokio::time::sleep(POLL / 4).await;
            }
        }
        self.shared.write().remove(id);
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
        let mut counts: BTreeMap<State, u64> = State::ALL.iter().map(|s| (*s, 0)).collect();
        for slot in self.shared.read().records.values() {
            *counts.entry(slot.state).or_default() += 1;
        }
        counts
    }
}

/// Streams the log file's lines; with `follow`, keeps reading until the evaluation has ended.
fn async_stream_lines(shared: Arc<Shared>, id: Uuid, path: PathBuf, options: LogOptions) -> LogStream {
    let (tx, rx) = tokio::sync::mpsc::channel::<String>(256);
    tokio::spawn(async move {
        let mut offset = 0u64;
        let mut partial = String::new();
        let mut first = true;
        loop {
            let ended = shared.read().records.get(&id).is_none_or(|slot| slot.state.is_terminal());
            let mut chunk = Vec::new();
            if let Ok(mut file) = tokio::fs::File::open(&path).await
                && file.seek(std::io::SeekFrom::Start(offset)).await.is_ok()
            {
                let _ = file.read_to_end(&mut chunk).await;
            }
            offset += chunk.len() as u64;
            partial.push_str(&String::from_utf8_lossy(&chunk));
            let mut lines: Vec<String> = Vec::new();
            while let Some(end) = partial.find('\n') {
                lines.push(partial[..end].to_string());
                partial.drain(..=end);
            }
            if first {
                first = false;
                if let Some(n) = options.tail_lines {
                    lines.drain(..lines.len().saturating_sub(n));
                }
            }
            for line in lines {
                if tx.send(line).await.is_err() {
                    return;
                }
            }
            if !options.follow || ended {
                if !partial.is_empty() {
                    let _ = tx.send(std::mem::take(&mut partial)).await;
                }
                return;
            }
            tokio::select! {
                () = tokio::time::sleep(POLL) => {}
                () = tx.closed() => return,
            }
        }
    });
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}

impl std::fmt::Debug for LocalBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalBackend").field("data_dir", &self.shared.config.data_dir).finish_non_exhaustive()
    }
}
