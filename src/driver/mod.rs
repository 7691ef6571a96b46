//! `lm-eval-aas driver -- lm_eval run …`: runs lm-eval as a child, turns its output into a
//! line-based log, records progress and the exit status. It outlives the service, so a
//! restarted service can re-adopt a running evaluation and still learn how it ended.
//!
//! The steps of a run: start the child (`run`), follow its output (`lines`, progress), wait for it
//! (signals forwarded), and write what it left: the exit file, and in a pod the final run record (`record`).

mod lines;
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
    #[command(flatten)]
    pub record: RecordTarget,
    /// The command to run, after `--`.
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

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
    follow_output(&mut child, &mut sink, &mut progress, &mut signals).await?;
    let status = wait(&mut child, &mut signals).await?;
    sink.sync_log().await?;
    write_exit(args.exit_file.as_deref(), status)?;
    let code = status.process_exit_code();
    let Some(recorder) = sink.recorder else { return Ok(code) };
    let record = final_record(status, progress.latest, args.record.output_dir.as_deref());
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
