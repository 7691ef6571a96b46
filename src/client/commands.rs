//! The client subcommands: `submit`, `get`, `list`, `logs`, `results`, `cancel`, `delete`, `wait`. Each returns
//! the exit code a pipeline branches on (see `Exit`); reports go to stdout, progress and messages to stderr.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::Value;

use super::gate::{self, Requirement, Verdict};
use super::http::{Client, ClientArgs, Failure};
use super::report::{self, Format};
use super::{Exit, request};
use crate::model::MetricRow;

#[derive(Debug, Clone, clap::Args)]
pub struct GateArgs {
    /// A gate: `TASK/METRIC>=VALUE` or `TASK/METRIC,FILTER<=VALUE` (repeatable); a failed one exits 1.
    #[arg(long = "require", value_name = "GATE")]
    pub requirements: Vec<Requirement>,
    /// A file of gates, one per line (`#` starts a comment).
    #[arg(long)]
    pub thresholds: Option<PathBuf>,
    /// Compare with this evaluation: each of its metrics may drop by at most --max-drop.
    #[arg(long)]
    pub baseline: Option<String>,
    #[arg(long, default_value_t = 0.0)]
    pub max_drop: f64,
    /// The report on stdout once the evaluation succeeded.
    #[arg(long, value_enum, default_value = "table")]
    pub output: Format,
}

#[derive(Debug, Clone, clap::Args)]
pub struct WaitArgs {
    /// Give up waiting (exit 4, the evaluation goes on) after this many seconds.
    #[arg(long = "timeout")]
    pub timeout_seconds: Option<u64>,
    /// On Ctrl-C, cancel the evaluation (else Ctrl-C only stops waiting).
    #[arg(long)]
    pub cancel_on_interrupt: bool,
    #[command(flatten)]
    pub gates: GateArgs,
}

#[derive(Debug, Clone, clap::Args)]
pub struct SubmitArgs {
    /// The request: a JSON or YAML file, `-` for standard input.
    pub file: PathBuf,
    /// `key=value` (dotted keys, YAML values) over the file's request (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
    /// `k=v` added to the request's labels (repeatable).
    #[arg(long = "label", value_name = "K=V")]
    pub labels: Vec<String>,
    /// The Idempotency-Key; by default, in a CI run (GITHUB_RUN_ID, CI_PIPELINE_ID, …), one made from the run id and
    /// the request, so a retried step gets the evaluation its first attempt made.
    #[arg(long)]
    pub idempotency_key: Option<String>,
    /// Wait for the evaluation's end, showing its progress, then report and gate.
    #[arg(long)]
    pub wait: bool,
    #[command(flatten)]
    pub waiting: WaitArgs,
}

fn done(result: Result<Exit, Failure>) -> i32 {
    match result {
        Ok(exit) => exit as i32,
        Err(failure) => {
            eprintln!("error: {failure}");
            failure.exit as i32
        }
    }
}

pub async fn submit(client: &ClientArgs, args: SubmitArgs) -> i32 {
    done(submit_inner(client, args).await)
}

async fn submit_inner(client_args: &ClientArgs, args: SubmitArgs) -> Result<Exit, Failure> {
    let usage = |e: String| Failure::new(Exit::Refused, e);
    let text = if args.file.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin()).map_err(|e| usage(format!("standard input: {e}")))?
    } else {
        std::fs::read_to_string(&args.file).map_err(|e| usage(format!("{}: {e}", args.file.display())))?
    };
    let mut body = request::parse(&text).map_err(|e| usage(format!("{}: {e}", args.file.display())))?;
    for assignment in &args.sets {
        request::set(&mut body, assignment).map_err(usage)?;
    }
    for pair in &args.labels {
        request::label(&mut body, pair).map_err(usage)?;
    }
    let key = args.idempotency_key.clone().or_else(|| request::idempotency_key(&body, |name| std::env::var(name).ok()));
    let client = Client::new(client_args)?;
    // Gates are read (and a bad one refused) before anything is submitted; without --wait there is nothing to gate.
    let gates = &args.waiting.gates;
    let gated = !gates.requirements.is_empty() || gates.thresholds.is_some() || gates.baseline.is_some();
    if gated && !args.wait {
        return Err(usage("--require, --thresholds and --baseline gate the evaluation's end: add --wait".into()));
    }
    let requirements = if args.wait { requirements(&client, gates).await? } else { Vec::new() };
    let url = client.url("");
    let created = client
        .json(|http| {
            let request = http.post(&url).json(&body);
            match &key {
                Some(key) => request.header("Idempotency-Key", key),
                None => request,
            }
        })
        .await?;
    let id = created["id"].as_str().unwrap_or_default().to_string();
    eprintln!("submitted {id}");
    if !args.wait {
        println!("{id}");
        return Ok(Exit::Passed);
    }
    wait_for(&client, &id, &args.waiting, requirements).await
}

pub async fn wait(client: &ClientArgs, id: &str, args: WaitArgs) -> i32 {
    let result = async {
        let client = Client::new(client)?;
        let requirements = requirements(&client, &args.gates).await?;
        wait_for(&client, id, &args, requirements).await
    };
    done(result.await)
}

/// Polls the evaluation until it ends (progress on stderr), then reports and gates.
async fn wait_for(client: &Client, id: &str, args: &WaitArgs, requirements: Vec<Requirement>) -> Result<Exit, Failure> {
    let started = Instant::now();
    let deadline = args.timeout_seconds.map(|s| started + Duration::from_secs(s));
    let url = client.url(&format!("/{id}"));
    let tty = std::io::stderr().is_terminal();
    // Not on a terminal, a line per change of state or of the progress's tenth, not per poll.
    let mut last_seen = (String::new(), None);
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    let evaluation = loop {
        let evaluation = client.json(|http| http.get(&url)).await?;
        let state = evaluation["state"].as_str().unwrap_or_default().to_string();
        let line = progress_line(&evaluation, started.elapsed());
        let seen = (state.clone(), evaluation["progress"]["percent"].as_f64().map(|p| (p / 10.0).floor() as i64));
        if tty {
            eprint!("\r\x1b[2K{line}");
        } else if seen != last_seen {
            eprintln!("{line}");
        }
        last_seen = seen;
        if matches!(state.as_str(), "succeeded" | "failed" | "cancelled") {
            if tty {
                eprintln!();
            }
            break evaluation;
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(Failure::new(
                Exit::Unreachable,
                format!("still {state} after the --timeout; it goes on: {id}"),
            ));
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = &mut interrupted => {
                if args.cancel_on_interrupt {
                    let cancel = client.url(&format!("/{id}/cancel"));
                    client.send(|http| http.post(&cancel), None).await?;
                    eprintln!("\ncancelled {id}");
                    return Ok(Exit::EvaluationFailed);
                }
                eprintln!("\nstopped waiting; the evaluation goes on: {id}");
                return Ok(Exit::EvaluationFailed);
            }
        }
    };
    if evaluation["state"] != "succeeded" {
        let reason = evaluation["reason"].as_str().unwrap_or("-");
        let message = evaluation["message"].as_str().unwrap_or_default();
        eprintln!("evaluation {id} {}: {reason}\n{message}", evaluation["state"].as_str().unwrap_or_default());
        return Ok(Exit::EvaluationFailed);
    }
    let rows: Vec<MetricRow> = serde_json::from_value(evaluation["metrics"].clone()).unwrap_or_default();
    let verdicts = gate::judge(&requirements, &rows);
    print!("{}", report::render(args.gates.output, id, &rows, &verdicts));
    summarize(id, &rows, &verdicts);
    Ok(Exit::of_gates(&verdicts))
}

/// "running 45% (9/20) 12 s, about 15 s left".
fn progress_line(evaluation: &Value, elapsed: Duration) -> String {
    let state = evaluation["state"].as_str().unwrap_or_default();
    let progress = &evaluation["progress"];
    let Some(percent) = progress["percent"].as_f64() else { return format!("{state} {} s", elapsed.as_secs()) };
    let (completed, total) = (progress["completed"].as_u64().unwrap_or(0), progress["total"].as_u64().unwrap_or(0));
    let filled = ((percent / 5.0).round() as usize).min(20);
    let bar = format!("[{}{}]", "#".repeat(filled), " ".repeat(20 - filled));
    let eta = if percent > 0.0 && percent < 100.0 {
        let left = elapsed.as_secs_f64() * (100.0 - percent) / percent;
        format!(", about {left:.0} s left")
    } else {
        String::new()
    };
    format!("{state} {bar} {percent:.0}% ({completed}/{total}) {} s{eta}", elapsed.as_secs())
}

/// The gates of --require, --thresholds and --baseline.
async fn requirements(client: &Client, args: &GateArgs) -> Result<Vec<Requirement>, Failure> {
    let usage = |e: String| Failure::new(Exit::Refused, e);
    let mut requirements = args.requirements.clone();
    if let Some(path) = &args.thresholds {
        let text = std::fs::read_to_string(path).map_err(|e| usage(format!("{}: {e}", path.display())))?;
        for (number, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or_default().trim();
            if !line.is_empty() {
                requirements
                    .push(line.parse().map_err(|e| usage(format!("{} line {}: {e}", path.display(), number + 1)))?);
            }
        }
    }
    if let Some(baseline) = &args.baseline {
        let url = client.url(&format!("/{baseline}"));
        let evaluation = client.json(|http| http.get(&url)).await?;
        let rows: Vec<MetricRow> = serde_json::from_value(evaluation["metrics"].clone()).unwrap_or_default();
        if rows.is_empty() {
            return Err(usage(format!("baseline {baseline} has no metrics (is it succeeded?)")));
        }
        requirements.extend(gate::against_baseline(&rows, args.max_drop));
    }
    Ok(requirements)
}

/// With `GITHUB_STEP_SUMMARY` set (GitHub Actions), the Markdown report is appended to the job's summary.
fn summarize(id: &str, rows: &[MetricRow], verdicts: &[Verdict]) {
    let Some(path) = std::env::var_os("GITHUB_STEP_SUMMARY") else { return };
    let markdown = report::render(Format::Markdown, id, rows, verdicts);
    let written = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut f| f.write_all(markdown.as_bytes()));
    if let Err(e) = written {
        eprintln!("cannot write the job summary: {e}");
    }
}

/// `get`, `results`, `cancel`, `delete`: one request, the answer on stdout.
pub async fn simple(client: &ClientArgs, method: reqwest::Method, rest: String) -> i32 {
    let result = async {
        let client = Client::new(client)?;
        let url = client.url(&rest);
        let response = client.send(|http| http.request(method.clone(), &url), None).await?;
        let body = response.bytes().await.map_err(|e| Failure::new(Exit::Unreachable, e.to_string()))?;
        let mut stdout = std::io::stdout();
        let _ = stdout.write_all(&body);
        if !body.is_empty() && !body.ends_with(b"\n") {
            let _ = stdout.write_all(b"\n");
        }
        Ok(Exit::Passed)
    };
    done(result.await)
}

/// `logs [-f]`: the log as it comes.
pub async fn logs(client: &ClientArgs, id: &str, follow: bool) -> i32 {
    let result = async {
        let client = Client::new(client)?;
        let url = client.url(&format!("/{id}/logs?follow={follow}"));
        let timeout = follow.then(|| Duration::from_secs(7 * 24 * 3600));
        let response = client.send(|http| http.get(&url), timeout).await?;
        let mut body = response.bytes_stream();
        let mut stdout = std::io::stdout();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| Failure::new(Exit::Unreachable, e.to_string()))?;
            let _ = stdout.write_all(&chunk);
            let _ = stdout.flush();
        }
        Ok(Exit::Passed)
    };
    done(result.await)
}
