//! The local backend's processes: starting the driver around lm-eval, following it to its end (progress,
//! timeout), stopping it, and reading the facts it leaves on disk.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nix::sys::signal::Signal;
use time::OffsetDateTime;
use uuid::Uuid;

use super::record::{self, ProcessId, Record, StopReason};
use super::{EXIT, LOG, POLL, PROGRESS, Shared};
use crate::driver;
use crate::driver::lock::{self, DriverState, TEST_CRASH_AT};
use crate::fsutil::process_start_ticks;
use crate::lifecycle;
use crate::model::{ExitStatus, Progress, now};
use crate::results::find_results;

fn test_crash_at(points: &[&str]) {
    if std::env::var(TEST_CRASH_AT).is_ok_and(|p| points.contains(&p.as_str())) {
        let _ = nix::sys::signal::raise(Signal::SIGKILL);
    }
}

/// How much of the log's end a failure's message is taken from.
const LOG_TAIL_BYTES: u64 = 64 * 1024;

impl ProcessId {
    pub(super) fn of(pid: u32) -> Option<Self> {
        Some(Self { pid, start_ticks: process_start_ticks(pid)? })
    }

    pub fn is_alive(self) -> bool {
        process_start_ticks(self.pid) == Some(self.start_ticks)
    }

    pub fn signal_group(self, signal: Signal) {
        if self.is_alive() {
            #[allow(clippy::cast_possible_wrap)]
            let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(self.pid as i32), signal);
        }
    }
}

impl Shared {
    /// Starts a claimed evaluation's driver in its own session, without a shell; the driver runs lm_eval under
    /// `lm-eval-aas sandbox` (see `crate::sandbox`). The claim is on disk and the driver lock taken before the
    /// spawn, so a service that dies at any point of this finds the driver again (see `driver::lock`).
    pub(super) fn start(self: &Arc<Self>, record: Record) {
        let id = record.evaluation.id;
        let dir = self.dir(id);
        let lock = match lock::Held::take(&dir) {
            Ok(Some(lock)) => lock,
            Ok(None) => {
                tracing::warn!(evaluation.id = %id, "a driver of this evaluation is already running: following it");
                tokio::spawn(Arc::clone(self).watch(id, None));
                return;
            }
            Err(e) => return self.fail_start(record, &e),
        };
        if let Err(e) = self.try_persist(&record) {
            return self.fail_start(record, &e);
        }
        test_crash_at(&["before-spawn"]);
        let mut command = self.driver_command(&record);
        let spawned = lock.for_driver().and_then(|stdin| command.stdin(stdin).spawn());
        drop(lock);
        let child = match spawned {
            Ok(child) => child,
            Err(e) => return self.fail_start(record, &e),
        };
        test_crash_at(&["after-spawn", "before-pid"]);
        let process = child.id().and_then(ProcessId::of);
        let snapshot = self.store.write().update(id, |r| r.control.process = process);
        tracing::info!(evaluation.id = %id, pid = ?process.map(|p| p.pid), "evaluation started");
        if let Some(snapshot) = &snapshot {
            self.persist(snapshot);
            test_crash_at(&["after-pid"]);
            if let Some(why) = snapshot.control.stopping {
                self.stop(id, why);
            }
        }
        tokio::spawn(Arc::clone(self).watch(id, Some(child)));
    }

    fn driver_command(&self, record: &Record) -> tokio::process::Command {
        let id = record.evaluation.id;
        let dir = self.dir(id);
        let request = &record.evaluation.request;
        let mut command = tokio::process::Command::new(&self.config.driver);
        command.arg("driver").arg("--new-session").arg("--lock-on-stdin");
        for (flag, file) in [("--log-file", LOG), ("--progress-file", PROGRESS), ("--exit-file", EXIT)] {
            command.arg(flag).arg(dir.join(file));
        }
        for var in &request.env {
            command.arg("--keep-env").arg(&var.name);
        }
        command.arg("--output-dir").arg(dir.join("output")).arg("--outputs-in-place").arg(&dir);
        command.arg("--request-file").arg(dir.join(super::REQUEST)).arg("--inline-tasks-dir").arg(dir.join("tasks"));
        // lm_eval runs confined to its directory (our binary's `sandbox`, which then becomes lm_eval).
        command.arg("--").arg(&self.config.driver).arg("sandbox").arg("--evaluation-dir").arg(&dir);
        for port in &self.config.service_ports {
            command.arg("--deny-connect-port").arg(port.to_string());
        }
        command.arg("--");
        command
            .args(&record.evaluation.command)
            .current_dir(&dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(false);
        // Nothing of the service's own environment but the process basics (see driver::SEALED_ENVIRONMENT).
        command.env_clear().envs(driver::sealed(std::env::vars_os(), &[]));
        command.env("LMEVAL_EVALUATION_ID", id.to_string());
        if let Some(point) = std::env::var_os(TEST_CRASH_AT) {
            command.env(TEST_CRASH_AT, point);
        }
        if !request.allow_online {
            command.env("HF_DATASETS_OFFLINE", "1").env("HF_HUB_OFFLINE", "1").env("TRANSFORMERS_OFFLINE", "1");
        }
        if request.allow_code_execution {
            command.env("HF_ALLOW_CODE_EVAL", "1");
        }
        for var in &request.env {
            if let Some(value) = &var.value {
                command.env(&var.name, value);
            }
        }
        command
    }

    fn fail_start(&self, mut record: Record, error: &std::io::Error) {
        record.conclude(&record::start_failure(error), None, now());
        self.persist(&record);
        self.store.write().replace(&record);
        self.release_slot();
    }

    /// Follows a running evaluation to its end: progress, timeout, and the final state.
    pub(super) async fn watch(self: Arc<Self>, id: Uuid, mut child: Option<tokio::process::Child>) {
        let progress_path = self.dir(id).join(PROGRESS);
        let mut last_progress: Option<Progress> = None;
        loop {
            let ended = match child.as_mut() {
                Some(child) => tokio::time::timeout(POLL, child.wait()).await.is_ok(),
                None => {
                    tokio::time::sleep(POLL).await;
                    !self.follow_adopted(id)
                }
            };
            let progress = std::fs::read(&progress_path).ok().and_then(|b| serde_json::from_slice::<Progress>(&b).ok());
            let Some(mut record) = self.store.read().record(id) else {
                self.release_slot();
                return;
            };
            if ended {
                record.evaluation.progress = progress.or(record.evaluation.progress);
                self.settle(&mut record);
                self.persist(&record);
                tracing::info!(evaluation.id = %id, state = record.evaluation.state.as_str(), reason = ?record.evaluation.reason, "evaluation ended");
                self.store.write().replace(&record);
                self.release_slot();
                return;
            }
            if progress != last_progress {
                last_progress = progress;
                self.store.write().update(id, |r| r.evaluation.progress = progress);
            }
            if lifecycle::is_overdue(&record.evaluation, now()) && record.control.stopping.is_none() {
                self.stop(id, StopReason::Timeout);
            }
        }
    }

    /// Whether the driver of an evaluation this service did not spawn still lives (it holds its lock); records
    /// its pid once the driver has written it, and stops it then if asked to meanwhile.
    fn follow_adopted(self: &Arc<Self>, id: Uuid) -> bool {
        let known = self.store.read().record(id).and_then(|r| r.control.process);
        let DriverState::Live(pid) = self.driver_state(id, known) else { return false };
        let Some(process) = pid.and_then(ProcessId::of).filter(|_| known.is_none()) else { return true };
        let snapshot = self.store.write().update(id, |r| r.control.process = Some(process));
        if let Some(snapshot) = snapshot {
            self.persist(&snapshot);
            tracing::info!(evaluation.id = %id, pid = process.pid, "the adopted driver's pid is known");
            if snapshot.control.stopping.is_some() {
                self.terminate(process);
            }
        }
        true
    }

    /// Stops the evaluation: recorded first, then its process group terminated (once its pid is known).
    pub(super) fn stop(self: &Arc<Self>, id: Uuid, why: StopReason) {
        let Some(snapshot) = self.store.write().update(id, |r| r.control.stopping = Some(why)) else { return };
        self.persist(&snapshot);
        if let Some(process) = snapshot.control.process {
            self.terminate(process);
        }
    }

    /// Terminates a process group: SIGTERM, then SIGKILL after the grace period.
    pub(super) fn terminate(&self, process: ProcessId) {
        process.signal_group(Signal::SIGTERM);
        let grace = self.config.kill_grace;
        tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            process.signal_group(Signal::SIGKILL);
        });
    }

    /// Settles an evaluation whose process has ended, from what it left on disk.
    pub(super) fn settle(&self, record: &mut Record) {
        RunFiles::read(&self.dir(record.evaluation.id)).settle(record, now());
    }
}

/// What a run left in its directory once its process has ended.
pub struct RunFiles {
    exit: Option<ExitStatus>,
    results_file: Option<PathBuf>,
    results: Option<Vec<u8>>,
    log_tail: String,
}

impl RunFiles {
    pub fn read(dir: &Path) -> Self {
        let results_file = find_results(&dir.join("output"));
        Self {
            exit: std::fs::read(dir.join(EXIT)).ok().and_then(|b| serde_json::from_slice(&b).ok()),
            results: results_file.as_ref().and_then(|path| std::fs::read(path).ok()),
            results_file,
            log_tail: read_tail(&dir.join(LOG)),
        }
    }

    /// Settles `record` from these files and what the service decided about it.
    pub fn settle(&self, record: &mut Record, now: OffsetDateTime) {
        let ending = record::ending(record.control.stopping, self.exit, self.results_file.is_some(), &self.log_tail);
        let results = self.results_file.clone().zip(self.results.as_deref());
        record.conclude(&ending, results, now);
    }
}

/// The last `LOG_TAIL_BYTES` of the file at `path` (empty if there is none).
fn read_tail(path: &Path) -> String {
    let mut bytes = Vec::new();
    if let Ok(mut file) = std::fs::File::open(path) {
        let length = file.metadata().map_or(0, |m| m.len());
        if file.seek(SeekFrom::Start(length.saturating_sub(LOG_TAIL_BYTES))).is_ok() {
            let _ = file.take(LOG_TAIL_BYTES).read_to_end(&mut bytes);
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}
