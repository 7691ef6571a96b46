//! `lm-eval-aas driver -- lm_eval run …`: runs lm-eval as a child, turns its output into a
//! line-based log, records progress and the exit status. It outlives the service, so a
//! restarted service can re-adopt a running evaluation and still learn how it ended.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::fsutil::write_atomic;
use crate::k8s::run_record::RunRecord;
use crate::model::Progress;
use crate::progress::parse_tqdm_line;
use crate::record_writer::{RecordTarget, RecordWriter};
use crate::results::find_results;

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
    #[command(flatten)]
    pub record: RecordTarget,
    /// The command to run, after `--`.
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

/// How the child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitStatus {
    pub code: Option<i32>,
    pub signal: Option<i32>,
}

impl ExitStatus {
    pub fn process_exit_code(self) -> i32 {
        self.code.unwrap_or_else(|| 128 + self.signal.unwrap_or(0))
    }
}

const PROGRESS_INTERVAL: Duration = Duration::from_millis(500);

pub async fn run(args: DriverArgs) -> anyhow::Result<i32> {
    use std::os::unix::process::ExitStatusExt;

    let (program, rest) = args.command.split_first().ok_or_else(|| anyhow::anyhow!("no command given after --"))?;
    let recorder = RecordWriter::connect(&args.record).await?;
    let mut child = tokio::process::Command::new(program)
        .args(rest)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut log = match &args.log_file {
        Some(path) => Some(tokio::fs::OpenOptions::new().create(true).append(true).open(path).await?),
        None => None,
    };
    let child = match child.as_mut() {
        Ok(child) => child,
        Err(e) => {
            let line = format!("lm-eval-aas driver: cannot start {program}: {e}\n");
            if let Some(log) = log.as_mut() {
                log.write_all(line.as_bytes()).await?;
            }
            eprint!("{line}");
            let status = ExitStatus { code: Some(127), signal: None };
            write_exit(&args, status)?;
            if let Some(mut recorder) = recorder {
                recorder.line(line.trim_end().as_bytes());
                recorder.finish(RunRecord { exit: Some(status), ..RunRecord::default() }).await?;
            }
            return Ok(127);
        }
    };
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

    let mut signals = Signals::new()?;
    let mut partial: [Vec<u8>; 2] = [Vec::new(), Vec::new()];
    let mut progress: Option<Progress> = None;
    let mut progress_written: Option<(Progress, Instant)> = None;
    let mut sink = LineSink { log, echo: args.echo.then(tokio::io::stdout), recorder };
    loop {
        tokio::select! {
            chunk = rx.recv() => {
                let Some((index, bytes)) = chunk else { break };
                let mut lines = Vec::new();
                for byte in bytes {
                    if byte == b'\n' || byte == b'\r' {
                        let line = std::mem::take(&mut partial[index]);
                        if !line.is_empty() {
                            lines.push(line);
                        }
                    } else {
                        partial[index].push(byte);
                    }
                }
                for line in &lines {
                    progress = parse_tqdm_line(&String::from_utf8_lossy(line)).or(progress);
                    sink.write_line(line).await?;
                }
                if !lines.is_empty() {
                    sink.flush_echo().await?;
                }
                progress = parse_tqdm_line(&String::from_utf8_lossy(&partial[index])).or(progress);
                maybe_write_progress(&args, progress, &mut progress_written, false)?;
                if let Some(recorder) = sink.recorder.as_ref() {
                    recorder.progress(progress);
                }
            }
            signal = signals.recv() => {
                if let (Some(signal), Some(pid)) = (signal, child.id()) {
                    forward(pid, signal);
                }
            }
        }
    }
    for line in partial.iter().filter(|l| !l.is_empty()) {
        sink.write_line(line).await?;
    }
    sink.flush_echo().await?;
    maybe_write_progress(&args, progress, &mut progress_written, true)?;
    let status = loop {
        tokio::select! {
            status = child.wait() => break status?,
            signal = signals.recv() => {
                if let (Some(signal), Some(pid)) = (signal, child.id()) {
                    forward(pid, signal);
                }
            }
        }
    };
    if let Some(log) = sink.log.as_mut() {
        log.flush().await?;
        log.sync_data().await?;
    }
    let status = ExitStatus { code: status.code(), signal: status.signal() };
    write_exit(&args, status)?;
    let code = status.process_exit_code();
    let Some(recorder) = sink.recorder else { return Ok(code) };
    let mut record = RunRecord { exit: Some(status), progress, ..RunRecord::default() };
    if code == 0 {
        let found = args.record.output_dir.as_deref().and_then(find_results);
        match found.map(std::fs::read) {
            Some(Ok(results)) => record.results = Some(results.into()),
            Some(Err(e)) => record.failure = Some(("NoResults".into(), format!("cannot read lm-eval's results: {e}"))),
            None => record.failure = Some(("NoResults".into(), "lm_eval exited 0 but wrote no results file".into())),
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

/// Where each complete output line goes: the log file, with `--echo` standard output, and in a pod the run
/// record's log tail.
struct LineSink {
    log: Option<tokio::fs::File>,
    echo: Option<tokio::io::Stdout>,
    recorder: Option<RecordWriter>,
}

impl LineSink {
    async fn write_line(&mut self, line: &[u8]) -> std::io::Result<()> {
        let mut with_newline = Vec::with_capacity(line.len() + 1);
        with_newline.extend_from_slice(line);
        with_newline.push(b'\n');
        if let Some(log) = self.log.as_mut() {
            log.write_all(&with_newline).await?;
        }
        if let Some(out) = self.echo.as_mut() {
            out.write_all(&with_newline).await?;
        }
        if let Some(recorder) = self.recorder.as_mut() {
            recorder.line(line);
        }
        Ok(())
    }

    async fn flush_echo(&mut self) -> std::io::Result<()> {
        match self.echo.as_mut() {
            Some(out) => out.flush().await,
            None => Ok(()),
        }
    }
}

fn write_exit(args: &DriverArgs, status: ExitStatus) -> anyhow::Result<()> {
    if let Some(path) = &args.exit_file {
        write_atomic(path, &serde_json::to_vec(&status)?)?;
    }
    Ok(())
}

fn maybe_write_progress(
    args: &DriverArgs,
    progress: Option<Progress>,
    written: &mut Option<(Progress, Instant)>,
    force: bool,
) -> anyhow::Result<()> {
    let (Some(path), Some(progress)) = (&args.progress_file, progress) else { return Ok(()) };
    let due = match written {
        None => true,
        Some((last, at)) => *last != progress && (force || at.elapsed() >= PROGRESS_INTERVAL),
    };
    if due {
        write_atomic(path, &serde_json::to_vec(&progress)?)?;
        *written = Some((progress, Instant::now()));
    }
    Ok(())
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

fn forward(pid: u32, signal: nix::sys::signal::Signal) {
    #[allow(clippy::cast_possible_wrap)]
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal);
}
