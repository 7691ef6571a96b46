//! `lm-eval-aas driver -- lm_eval run …`: runs lm-eval as a child, turns its output into a
//! line-based log, records progress and the exit status. It outlives the service, so a
//! restarted service can re-adopt a running evaluation and still learn how it ended.
//!
//! The steps of a run: start the child (`run`), follow its output (`lines`, progress), wait for it
//! (signals forwarded), and write what it left: the exit file, and in a pod the final run record (`record`).

mod lines;
pub mod lock;
pub mod record;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Child;
use tokio::sync::mpsc;

use crate::fsutil::write_atomic;
use crate::k8s::run_record::RunRecord;
use crate::lifecycle::Output;
use crate::model::{ExitStatus, Progress};
use crate::outputs::manifest;
use crate::outputs::upload::{self, Body, Destination, Gathered};
use crate::progress::parse_tqdm_line;
use crate::results::find_results;
use lines::{LineSink, LineSplitter};
use record::{RecordTarget, RecordWriter};

#[derive(Debug, Clone, clap::Args)]
pub struct DriverArgs {
    /// Append lm-eval's output here, one line per line (tqdm's `\r` updates become lines).
    #[arg(long)]
    pub log_file: Option<PathBuf>,
    /// Keep the latest progress here (JSON, replaced atomically).
    #[arg(long)]
    pub progress_file: Option<PathBuf>,
    /// Write the exit status here (JSON) when lm-eval ends.
    #[arg(long)]
    pub exit_file: Option<PathBuf>,
    /// Also copy each line to standard output (the pod log, in Kubernetes).
    #[arg(long)]
    pub echo: bool,
    /// Pass this variable of the driver's environment on to the command (the request's `env`); the command
    /// otherwise starts from the sealed basics only (see `SEALED_ENVIRONMENT`).
    #[arg(long = "keep-env", value_name = "NAME")]
    pub keep_env: Vec<String>,
    /// Start a new session first: no controlling terminal, for the driver or the command (the local backend).
    #[arg(long)]
    pub new_session: bool,
    /// Hold the evaluation's driver lock, handed over as standard input, for the driver's whole life (see `lock`).
    #[arg(long)]
    pub lock_on_stdin: bool,
    #[command(flatten)]
    pub record: RecordTarget,
    #[command(flatten)]
    pub outputs: OutputArgs,
    /// The command to run, after `--`.
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

/// Where the output set goes (see `crate::outputs`); all of it from the pod's environment on Kubernetes.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct OutputArgs {
    /// Index the output set where it lies, in this directory (the local backend's evaluation directory).
    #[arg(long, env = "LMEVAL_OUTPUTS_IN_PLACE", value_name = "DIR")]
    pub outputs_in_place: Option<PathBuf>,
    /// Write the output set into this directory (the evaluation's directory of a claim).
    #[arg(long, env = "LMEVAL_UPLOAD_DIR", value_name = "DIR")]
    pub upload_dir: Option<PathBuf>,
    /// Upload the output set with the presigned URLs in this directory (a file per object).
    #[arg(long, env = "LMEVAL_UPLOAD_URLS", value_name = "DIR")]
    pub upload_urls: Option<PathBuf>,
    /// How long writes of the output set are retried before the evaluation fails `OutputUploadFailed`.
    #[arg(long, env = "LMEVAL_UPLOAD_PATIENCE_SECONDS", default_value_t = 300)]
    pub upload_patience_seconds: u64,
    /// The evaluation's request (JSON), for the manifest.
    #[arg(long, env = "LMEVAL_REQUEST_FILE")]
    pub request_file: Option<PathBuf>,
    /// The runner image, for the manifest.
    #[arg(long, env = "LMEVAL_RUNNER_IMAGE")]
    pub runner_image: Option<String>,
    /// The inline task files, hashed into the manifest.
    #[arg(long, env = "LMEVAL_INLINE_TASKS_DIR")]
    pub inline_tasks_dir: Option<PathBuf>,
}

impl OutputArgs {
    fn destination(&self) -> anyhow::Result<Option<Destination>> {
        Ok(if let Some(dir) = &self.outputs_in_place {
            Some(Destination::InPlace { dir: dir.clone() })
        } else if let Some(dir) = &self.upload_dir {
            Some(Destination::Directory(dir.clone()))
        } else if let Some(dir) = &self.upload_urls {
            Some(Destination::presigned(dir)?)
        } else {
            None
        })
    }
}

/// How often the log is uploaded while it grows, so a pod that dies still leaves it.
const LOG_UPLOAD_EVERY: Duration = Duration::from_secs(5);

/// What lm_eval's environment starts from, whatever the driver's own holds (a service's credentials, the
/// pod's API-server address, the driver's run-record settings): the process basics, the switches the
/// service sets, and the evaluation's id.
pub const SEALED_ENVIRONMENT: &[&str] = &[
    "PATH",
    "HOME",
    "TMPDIR",
    "LANG",
    "LANGUAGE",
    "LC_ALL",
    "LC_CTYPE",
    "TZ",
    "HF_HOME",
    "HF_DATASETS_OFFLINE",
    "HF_HUB_OFFLINE",
    "TRANSFORMERS_OFFLINE",
    "HF_ALLOW_CODE_EVAL",
    "LMEVAL_EVALUATION_ID",
];

/// The command's environment: of `environment`, only the sealed basics and the variables named in `keep`.
pub fn sealed<K: AsRef<std::ffi::OsStr>, V>(
    environment: impl IntoIterator<Item = (K, V)>,
    keep: &[String],
) -> Vec<(K, V)> {
    environment
        .into_iter()
        .filter(|(name, _)| {
            let name = name.as_ref();
            SEALED_ENVIRONMENT.iter().any(|kept| name == *kept) || keep.iter().any(|kept| name == kept.as_str())
        })
        .collect()
}

/// The driver's exit code when it could not start the command (as a shell's).
const CANNOT_START: i32 = 127;
const PROGRESS_INTERVAL: Duration = Duration::from_millis(500);

pub async fn run(args: DriverArgs) -> anyhow::Result<i32> {
    let (program, rest) = args.command.split_first().ok_or_else(|| anyhow::anyhow!("no command given after --"))?;
    if args.new_session {
        nix::unistd::setsid()?;
    }
    let _lock = if args.lock_on_stdin {
        let lock = lock::hold_from_stdin()?;
        if std::env::var(lock::TEST_CRASH_AT).is_ok_and(|point| point == "before-pid") {
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1())?.recv().await;
        }
        lock::write_pid(&lock)?;
        Some(lock)
    } else {
        None
    };
    let started_at = crate::model::now();
    let destination = args.outputs.destination()?.map(std::sync::Arc::new);
    let recorder = RecordWriter::connect(&args.record).await?;
    let log = match &args.log_file {
        Some(path) => Some(tokio::fs::OpenOptions::new().create(true).append(true).open(path).await?),
        None => None,
    };
    let mut sink = LineSink { log, echo: args.echo.then(tokio::io::stdout), recorder };
    let spawned = tokio::process::Command::new(program)
        .args(rest)
        .env_clear()
        .envs(sealed(std::env::vars_os(), &args.keep_env))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) => {
            let line = format!("lm-eval-aas driver: cannot start {program}: {e}");
            eprintln!("{line}");
            sink.echo = None;
            sink.write_line(line.as_bytes()).await?;
            sink.sync_log().await?;
            let status = ExitStatus::code(CANNOT_START);
            write_exit(args.exit_file.as_deref(), status)?;
            if let Some(recorder) = sink.recorder {
                recorder.finish(RunRecord { exit: Some(status), ..RunRecord::default() }).await?;
            }
            return Ok(CANNOT_START);
        }
    };
    let mut signals = Signals::new()?;
    let mut progress = ProgressFile { path: args.progress_file.clone(), latest: None, written: None };
    let log_uploads = match (&destination, &args.log_file) {
        (Some(destination), Some(log)) if !destination.keeps_files_in_place() => {
            Some(tokio::spawn(upload_log_while_it_grows(std::sync::Arc::clone(destination), log.clone())))
        }
        _ => None,
    };
    follow_output(&mut child, &mut sink, &mut progress, &mut signals).await?;
    let status = wait(&mut child, &mut signals).await?;
    sink.sync_log().await?;
    if let Some(uploads) = log_uploads {
        uploads.abort();
        let _ = uploads.await;
    }
    let written = match &destination {
        Some(destination) => Some(write_outputs(&args, destination, status, started_at).await),
        None => None,
    };
    if let Some(Err(e)) = &written {
        eprintln!("lm-eval-aas driver: the output set was not written: {e}");
    }
    write_exit(args.exit_file.as_deref(), status)?;
    let code = status.process_exit_code();
    let Some(recorder) = sink.recorder else { return Ok(code) };
    let mut record = final_record(status, progress.latest, args.record.output_dir.as_deref());
    if let Some(written) = written {
        // The whole results are (or were to be) in the store; the record keeps what the metrics are read from.
        record.results = record.results.as_deref().and_then(crate::k8s::run_record::results_summary);
        match written {
            Ok(()) => record.stored_outputs = true,
            Err(e) => record.failure = Some((crate::model::Reason::OutputUploadFailed, e)),
        }
    }
    match recorder.finish(record).await {
        Ok(Some((reason, message))) => {
            eprintln!("lm-eval-aas driver: {reason}: {message}");
            Ok(if code == 0 { 1 } else { code })
        }
        Ok(None) => Ok(code),
        Err(e) => {
            eprintln!("lm-eval-aas driver: {e}");
            Ok(if code == 0 { 1 } else { code })
        }
    }
}

/// Copies the child's stdout and stderr, line by line, to the sink until both end, reading progress
/// from the lines (and from the bar being redrawn); signals are forwarded meanwhile.
async fn follow_output(
    child: &mut Child,
    sink: &mut LineSink,
    progress: &mut ProgressFile,
    signals: &mut Signals,
) -> anyhow::Result<()> {
    let (tx, mut rx) = mpsc::channel::<(usize, Vec<u8>)>(64);
    for (index, stream) in [
        child.stdout.take().map(|s| Box::new(s) as Box<dyn AsyncRead + Unpin + Send>),
        child.stderr.take().map(|s| Box::new(s) as Box<dyn AsyncRead + Unpin + Send>),
    ]
    .into_iter()
    .enumerate()
    {
        if let Some(stream) = stream {
            tokio::spawn(pump(index, stream, tx.clone()));
        }
    }
    drop(tx);
    let mut splitters = [LineSplitter::default(), LineSplitter::default()];
    loop {
        tokio::select! {
            chunk = rx.recv() => {
                let Some((index, bytes)) = chunk else { break };
                let lines = splitters[index].push(&bytes);
                for line in &lines {
                    progress.read(line);
                    sink.write_line(line).await?;
                }
                if !lines.is_empty() {
                    sink.flush_echo().await?;
                }
                progress.read(splitters[index].pending());
                progress.write(false)?;
                if let Some(recorder) = sink.recorder.as_ref() {
                    recorder.progress(progress.latest);
                }
            }
            signal = signals.recv() => forward(child, signal),
        }
    }
    for line in splitters.iter_mut().filter_map(LineSplitter::finish) {
        sink.write_line(&line).await?;
    }
    sink.flush_echo().await?;
    progress.write(true)?;
    Ok(())
}

async fn wait(child: &mut Child, signals: &mut Signals) -> std::io::Result<ExitStatus> {
    use std::os::unix::process::ExitStatusExt;
    loop {
        tokio::select! {
            status = child.wait() => {
                let status = status?;
                return Ok(ExitStatus { code: status.code(), signal: status.signal() });
            }
            signal = signals.recv() => forward(child, signal),
        }
    }
}

/// What the run record says at the end: the exit status, and after a clean exit the results or why
/// there are none.
pub(crate) fn final_record(status: ExitStatus, progress: Option<Progress>, output_dir: Option<&Path>) -> RunRecord {
    let mut record = RunRecord { exit: Some(status), progress, ..RunRecord::default() };
    if status == ExitStatus::SUCCESS {
        let output = match output_dir.and_then(find_results).map(std::fs::read) {
            Some(Ok(results)) => {
                record.results = Some(results.into());
                Output::Found
            }
            Some(Err(e)) => Output::unreadable(e),
            None => Output::missing(),
        };
        if let Output::Failed { reason, message } = output {
            record.failure = Some((reason, message));
        }
    }
    record
}

/// Uploads the log every `LOG_UPLOAD_EVERY` while it grows; each upload is the whole log, so a long log waits a
/// second more per MiB (about 1 MiB/s at most goes out). A failed upload is tried again next time.
async fn upload_log_while_it_grows(destination: std::sync::Arc<Destination>, log: PathBuf) {
    let mut uploaded = 0;
    loop {
        tokio::time::sleep(LOG_UPLOAD_EVERY + Duration::from_secs(uploaded / (1024 * 1024))).await;
        let Ok(size) = tokio::fs::metadata(&log).await.map(|m| m.len()) else { continue };
        if size == uploaded {
            continue;
        }
        match destination.put(crate::outputs::index::LOG, Body::Files(vec![(log.clone(), size)])).await {
            Ok(()) => uploaded = size,
            Err(e) => eprintln!("lm-eval-aas driver: {e}; trying again in {} s", LOG_UPLOAD_EVERY.as_secs()),
        }
    }
}

/// Names, hashes and writes what the run left, with its manifest.
async fn write_outputs(
    args: &DriverArgs,
    destination: &Destination,
    status: ExitStatus,
    started_at: time::OffsetDateTime,
) -> Result<(), String> {
    let output_dir = args.record.output_dir.clone();
    let log_file = args.log_file.clone();
    let gathered = tokio::task::spawn_blocking(move || -> std::io::Result<_> {
        let files = match &output_dir {
            Some(dir) => upload::gather(dir)?,
            None => Vec::new(),
        };
        let log = match log_file {
            Some(path) => {
                Some(Gathered { artifact: upload::hashed(&path, crate::outputs::index::LOG, None)?, source: path })
            }
            None => None,
        };
        Ok((files, log))
    })
    .await
    .map_err(|e| e.to_string())?;
    let (files, log) = gathered.map_err(|e| format!("reading the run's outputs: {e}"))?;
    let results: Option<serde_json::Value> = files
        .iter()
        .find(|f| f.artifact.path == crate::outputs::index::RESULTS)
        .and_then(|f| std::fs::read(&f.source).ok())
        .and_then(|bytes| serde_json::from_slice(&bytes).ok());
    let outputs = &args.outputs;
    let request =
        outputs.request_file.as_ref().and_then(|p| std::fs::read(p).ok()).and_then(|b| serde_json::from_slice(&b).ok());
    let argv = lm_eval_argv(&args.command);
    let facts = manifest::RunFacts {
        argv,
        runner_image: outputs.runner_image.as_deref(),
        request,
        results: results.as_ref(),
        inline_tasks: outputs.inline_tasks_dir.as_deref().map(upload::hashes_of_files_in).unwrap_or_default(),
        started_at,
        finished_at: crate::model::now(),
        exit: status,
    };
    let manifest = serde_json::to_vec_pretty(&manifest::manifest(&facts)).map_err(|e| e.to_string())?;
    let patience = Duration::from_secs(outputs.upload_patience_seconds);
    destination.write_set(&files, log.as_ref(), manifest.into(), patience).await
}

/// lm_eval's own argv: the command without the sandbox that wraps it on the local backend.
fn lm_eval_argv(command: &[String]) -> &[String] {
    if command.get(1).is_some_and(|c| c == "sandbox")
        && let Some(separator) = command.iter().position(|a| a == "--")
    {
        return &command[separator + 1..];
    }
    command
}

fn write_exit(path: Option<&Path>, status: ExitStatus) -> anyhow::Result<()> {
    if let Some(path) = path {
        write_atomic(path, &serde_json::to_vec(&status)?)?;
    }
    Ok(())
}

/// The latest progress, kept in a file (local backend) at most every `PROGRESS_INTERVAL` while it changes.
struct ProgressFile {
    path: Option<PathBuf>,
    latest: Option<Progress>,
    written: Option<(Progress, Instant)>,
}

impl ProgressFile {
    fn read(&mut self, line: &[u8]) {
        self.latest = parse_tqdm_line(&String::from_utf8_lossy(line)).or(self.latest);
    }

    fn write(&mut self, force: bool) -> anyhow::Result<()> {
        let (Some(path), Some(progress)) = (&self.path, self.latest) else { return Ok(()) };
        let due = match self.written {
            None => true,
            Some((last, at)) => last != progress && (force || at.elapsed() >= PROGRESS_INTERVAL),
        };
        if due {
            write_atomic(path, &serde_json::to_vec(&progress)?)?;
            self.written = Some((progress, Instant::now()));
        }
        Ok(())
    }
}

async fn pump(index: usize, mut stream: Box<dyn AsyncRead + Unpin + Send>, tx: mpsc::Sender<(usize, Vec<u8>)>) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if tx.send((index, buf[..n].to_vec())).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// SIGTERM and SIGINT, caught so the driver outlives its child long enough to record how it ended.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> std::io::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self { term: signal(SignalKind::terminate())?, int: signal(SignalKind::interrupt())? })
    }

    async fn recv(&mut self) -> Option<nix::sys::signal::Signal> {
        use nix::sys::signal::Signal;
        tokio::select! {
            s = self.term.recv() => s.map(|()| Signal::SIGTERM),
            s = self.int.recv() => s.map(|()| Signal::SIGINT),
        }
    }
}

fn forward(child: &Child, signal: Option<nix::sys::signal::Signal>) {
    if let (Some(signal), Some(pid)) = (signal, child.id()) {
        #[allow(clippy::cast_possible_wrap)]
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Reason;

    #[test]
    fn the_command_gets_the_basics_and_the_named_variables_only() {
        let environment = [
            ("PATH", "/usr/bin"),
            ("HOME", "/lmeval/cache"),
            ("OPENAI_API_KEY", "canary"),
            ("LMEVAL_RUN_RECORD", "lmeval-1"),
            ("KUBERNETES_SERVICE_HOST", "10.0.0.1"),
            ("MODE", "x"),
            ("LMEVAL_EVALUATION_ID", "1"),
        ];
        let names: Vec<&str> = sealed(environment, &["MODE".into()]).into_iter().map(|(name, _)| name).collect();
        assert_eq!(names, ["PATH", "HOME", "MODE", "LMEVAL_EVALUATION_ID"]);
    }

    #[test]
    fn the_final_record_says_why_a_clean_exit_has_no_results() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = final_record(ExitStatus::SUCCESS, None, Some(dir.path()));
        assert_eq!(missing.failure.map(|f| f.0), Some(Reason::NoResults));
        let model_dir = dir.path().join("dummy");
        std::fs::create_dir_all(&model_dir).expect("mkdir");
        std::fs::write(model_dir.join("results_2026-11-30T12-00-00.json"), b"{\"results\": {}}").expect("write");
        let found = final_record(ExitStatus::SUCCESS, None, Some(dir.path()));
        assert_eq!((found.failure, found.results.as_deref()), (None, Some(&b"{\"results\": {}}"[..])));
        let failed = final_record(ExitStatus::code(2), None, Some(dir.path()));
        assert_eq!((failed.exit, failed.results, failed.failure), (Some(ExitStatus::code(2)), None, None));
    }
}
