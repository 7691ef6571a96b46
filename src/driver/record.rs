//! The driver's side of the run record: inside the runner pod it keeps the evaluation's ConfigMap up to
//! date through the Kubernetes API (progress while lm-eval runs; results, exit status and log tail at the end).

use std::collections::VecDeque;
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use tokio::sync::watch;

use crate::k8s::run_record::{LOG_TAIL_BYTES, RunRecord, failure_in};
use crate::model::{Progress, Reason};

/// How often progress is written at most (the issue asks for at least every 5 s).
const PROGRESS_EVERY: Duration = Duration::from_secs(2);
/// How long the final write keeps retrying, e.g. through an API server restart.
const FINAL_WRITE_PATIENCE: Duration = Duration::from_secs(300);
const FIELD_MANAGER: &str = "lm-eval-aas-driver";

/// Where the record goes; all of it comes from the pod's environment (see the Job builder).
#[derive(Debug, Clone, clap::Args)]
pub struct RecordTarget {
    /// Keep the run record in this ConfigMap (inside a runner pod).
    #[arg(long = "run-record", env = "LMEVAL_RUN_RECORD", requires = "namespace")]
    pub name: Option<String>,
    #[arg(long, env = "LMEVAL_NAMESPACE")]
    pub namespace: Option<String>,
    /// lm-eval's `--output_path`, where the results file is found at the end.
    #[arg(long, env = "LMEVAL_OUTPUT_DIR")]
    pub output_dir: Option<std::path::PathBuf>,
}

pub struct RecordWriter {
    api: Api<ConfigMap>,
    meta: ObjectMeta,
    progress: watch::Sender<Option<Progress>>,
    progress_task: tokio::task::JoinHandle<()>,
    log: LogTail,
}

impl RecordWriter {
    pub async fn connect(target: &RecordTarget) -> anyhow::Result<Option<Self>> {
        let (Some(name), Some(namespace)) = (&target.name, &target.namespace) else { return Ok(None) };
        let config = if std::env::var_os("KUBERNETES_SERVICE_HOST").is_some() {
            kube::Config::incluster()?
        } else {
            kube::Config::infer().await?
        };
        let api: Api<ConfigMap> = Api::namespaced(Client::try_from(config)?, namespace);
        // Only the data: the record's labels and owner are the controller's, made with it, and the runner's
        // identity may change nothing else (k8s/base/admission-run-records.yaml).
        let meta = ObjectMeta { name: Some(name.clone()), namespace: Some(namespace.clone()), ..ObjectMeta::default() };
        let (progress, mut updates) = watch::channel(None);
        let (task_api, task_meta) = (api.clone(), meta.clone());
        let progress_task = tokio::spawn(async move {
            while updates.changed().await.is_ok() {
                let progress = *updates.borrow_and_update();
                let record = RunRecord { progress, ..RunRecord::default() };
                if let Err(e) = apply(&task_api, &record.to_config_map(task_meta.clone())).await {
                    eprintln!("lm-eval-aas driver: could not record progress: {e}");
                }
                tokio::time::sleep(PROGRESS_EVERY).await;
            }
        });
        Ok(Some(Self { api, meta, progress, progress_task, log: LogTail::default() }))
    }

    pub fn line(&mut self, line: &[u8]) {
        self.log.push(&String::from_utf8_lossy(line));
    }

    pub fn progress(&self, progress: Option<Progress>) {
        if progress.is_some() {
            self.progress.send_if_modified(|current| {
                let changed = *current != progress;
                *current = progress;
                changed
            });
        }
    }

    /// Writes the final record, retrying for a while; returns the failure it recorded, if any.
    pub async fn finish(self, mut record: RunRecord) -> anyhow::Result<Option<(Reason, String)>> {
        self.progress_task.abort();
        let _ = self.progress_task.await;
        record.progress = record.progress.or(*self.progress.borrow());
        record.log_tail = Some(self.log.text());
        let config_map = record.to_config_map(self.meta);
        let deadline = tokio::time::Instant::now() + FINAL_WRITE_PATIENCE;
        let mut pause = Duration::from_millis(250);
        loop {
            match apply(&self.api, &config_map).await {
                Ok(()) => return Ok(failure_in(&config_map)),
                Err(e) if tokio::time::Instant::now() < deadline => {
                    eprintln!("lm-eval-aas driver: could not record the outcome, retrying: {e}");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(5));
                }
                Err(e) => anyhow::bail!("could not record the outcome: {e}"),
            }
        }
    }
}

/// Server-side apply: the driver owns its record's data.
async fn apply(api: &Api<ConfigMap>, config_map: &ConfigMap) -> kube::Result<()> {
    let name = config_map.metadata.name.as_deref().unwrap_or_default();
    api.patch(name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(config_map)).await?;
    Ok(())
}

/// The last `LOG_TAIL_BYTES` of the log, whole lines.
#[derive(Default)]
struct LogTail {
    lines: VecDeque<String>,
    bytes: usize,
}

impl LogTail {
    fn push(&mut self, line: &str) {
        let mut start = line.len().saturating_sub(LOG_TAIL_BYTES / 2);
        while !line.is_char_boundary(start) {
            start += 1;
        }
        let line = line[start..].to_string();
        self.bytes += line.len() + 1;
        self.lines.push_back(line);
        while self.bytes > LOG_TAIL_BYTES {
            let Some(old) = self.lines.pop_front() else { break };
            self.bytes -= old.len() + 1;
        }
    }

    fn text(&self) -> String {
        let mut text = String::with_capacity(self.bytes);
        for line in &self.lines {
            text.push_str(line);
            text.push('\n');
        }
        text
    }
}
