//! The one lifecycle core. What an evaluation's end means (state, reason, message) is decided here from
//! facts; the executors (`backend::local`, `backend::kubernetes`) only gather those facts and do I/O. Pure.

pub mod admission;

use time::OffsetDateTime;

use crate::model::{Evaluation, ExitStatus, Reason, State};
use crate::results::metric_rows;

/// How many log lines a failure's message quotes.
pub const LAST_LOG_LINES: usize = 20;
/// The message of a running evaluation whose cancellation is under way.
pub const CANCELLATION_REQUESTED: &str = "cancellation requested";

/// What was decided about a run from outside it, which explains its end before anything it did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Cancelled by request.
    Cancelled,
    /// Stopped for running longer than its `timeout_seconds`.
    TimedOut,
    /// Failed before lm_eval could run: it could not be started, or its pod waited for what never came.
    Failed { reason: Reason, message: String },
}

/// What lm_eval left behind after exiting 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// The results file was found (and kept).
    Found,
    /// It was not, or it could not be kept: `NoResults` or `ResultsTooLarge`.
    Failed { reason: Reason, message: String },
}

impl Output {
    /// No results file where lm_eval writes it.
    pub fn missing() -> Self {
        Self::Failed { reason: Reason::NoResults, message: "lm_eval exited 0 but wrote no results file".into() }
    }

    pub fn unreadable(error: impl std::fmt::Display) -> Self {
        Self::Failed { reason: Reason::NoResults, message: format!("cannot read lm-eval's results: {error}") }
    }
}

/// The platform ended the run from outside (Kubernetes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlatformKill {
    OutOfMemory,
    Evicted { message: String },
}

/// Everything known about a run that has ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ending<'a> {
    pub decision: Option<Decision>,
    /// lm_eval's exit status, as recorded by the driver (or its container's exit code).
    pub exit: Option<ExitStatus>,
    /// Looked at only when lm_eval exited 0; `None` means not known to be missing.
    pub output: Option<Output>,
    pub killed: Option<PlatformKill>,
    /// The end of lm_eval's log, quoted by failures.
    pub log_tail: &'a str,
    /// What the platform says about an end nothing else explains (e.g. a Job's failure condition).
    pub platform_says: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub state: State,
    pub reason: Option<Reason>,
    pub message: Option<String>,
}

impl Outcome {
    pub fn failed(reason: Reason, message: String) -> Self {
        Self { state: State::Failed, reason: Some(reason), message: Some(message) }
    }
}

/// The state, reason and message of a run that ended as `ending` says. Decisions come first, then what
/// lm_eval's exit and output say, then what the platform did to it.
pub fn outcome(ending: &Ending<'_>, timeout_seconds: Option<u64>) -> Outcome {
    match &ending.decision {
        Some(Decision::Cancelled) => {
            return Outcome {
                state: State::Cancelled,
                reason: Some(Reason::Cancelled),
                message: Some("cancelled by request".into()),
            };
        }
        Some(Decision::TimedOut) => {
            let limit = timeout_seconds.unwrap_or_default();
            return Outcome::failed(Reason::Timeout, format!("exceeded timeout_seconds={limit}"));
        }
        Some(Decision::Failed { reason, message }) => return Outcome::failed(*reason, message.clone()),
        None => {}
    }
    if ending.exit == Some(ExitStatus::SUCCESS) {
        return match &ending.output {
            Some(Output::Found) | None => Outcome { state: State::Succeeded, reason: None, message: None },
            Some(Output::Failed { reason, message }) => Outcome::failed(*reason, message.clone()),
        };
    }
    match &ending.killed {
        Some(PlatformKill::OutOfMemory) => {
            return Outcome::failed(Reason::OomKilled, "the runner container exceeded its memory limit".into());
        }
        Some(PlatformKill::Evicted { message }) => return Outcome::failed(Reason::Evicted, message.clone()),
        None => {}
    }
    let lines = last_lines(ending.log_tail, LAST_LOG_LINES);
    match ending.exit {
        Some(ExitStatus { code: Some(code), .. }) => {
            Outcome::failed(Reason::LmEvalError, format!("lm_eval exited with code {code}; last log lines:\n{lines}"))
        }
        Some(ExitStatus { signal: Some(signal), .. }) => {
            Outcome::failed(Reason::Killed, format!("lm_eval was killed by signal {signal}; last log lines:\n{lines}"))
        }
        _ => {
            let mut message = "the evaluation's process ended without recording an exit status".to_string();
            if let Some(says) = &ending.platform_says {
                message = format!("{message} ({says})");
            }
            Outcome::failed(Reason::Interrupted, message)
        }
    }
}

/// Puts an ended run's outcome into its evaluation; a success gets its metrics from `results` and its
/// progress completed.
pub fn conclude(
    evaluation: &mut Evaluation,
    outcome: Outcome,
    finished_at: Option<OffsetDateTime>,
    results: Option<&[u8]>,
) {
    evaluation.state = outcome.state;
    evaluation.reason = outcome.reason;
    evaluation.message = outcome.message;
    evaluation.finished_at = finished_at;
    if outcome.state == State::Succeeded {
        if let Some(results) = results {
            evaluation.metrics = serde_json::from_slice(results).ok().map(|v| metric_rows(&v));
        }
        if let Some(p) = evaluation.progress.as_mut() {
            p.completed = p.total;
            p.percent = 100.0;
        }
    }
}

/// Whether a started evaluation has run past its `timeout_seconds` at `now`.
pub fn is_overdue(evaluation: &Evaluation, now: OffsetDateTime) -> bool {
    match (evaluation.request.timeout_seconds, evaluation.started_at) {
        (Some(limit), Some(started)) => {
            now - started > time::Duration::seconds(i64::try_from(limit).unwrap_or(i64::MAX))
        }
        _ => false,
    }
}

/// The last `n` lines of `log`.
pub fn last_lines(log: &str, n: usize) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason_of(ending: &Ending<'_>) -> (State, Option<Reason>) {
        let outcome = outcome(ending, Some(60));
        (outcome.state, outcome.reason)
    }

    #[test]
    fn decisions_come_before_what_the_process_did() {
        let exited = |code| Ending { exit: Some(ExitStatus::code(code)), ..Ending::default() };
        let cancelled = Ending { decision: Some(Decision::Cancelled), ..exited(0) };
        assert_eq!(reason_of(&cancelled), (State::Cancelled, Some(Reason::Cancelled)));
        let timed_out = Ending { decision: Some(Decision::TimedOut), ..exited(143) };
        assert_eq!(reason_of(&timed_out), (State::Failed, Some(Reason::Timeout)));
        assert_eq!(outcome(&timed_out, Some(60)).message.as_deref(), Some("exceeded timeout_seconds=60"));
        assert_eq!(reason_of(&exited(0)), (State::Succeeded, None));
        let oom = Ending { killed: Some(PlatformKill::OutOfMemory), ..exited(137) };
        assert_eq!(reason_of(&oom), (State::Failed, Some(Reason::OomKilled)));
    }

    #[test]
    fn failures_quote_the_end_of_the_log() {
        let log: String = (0..30).map(|i| format!("line {i}\n")).collect();
        let ending = Ending { exit: Some(ExitStatus::code(2)), log_tail: &log, ..Ending::default() };
        let message = outcome(&ending, None).message.expect("message");
        assert!(message.starts_with("lm_eval exited with code 2; last log lines:\nline 10\n"), "{message}");
        assert!(message.ends_with("line 29"));
        let killed = Ending { exit: Some(ExitStatus { code: None, signal: Some(9) }), ..Ending::default() };
        assert_eq!(reason_of(&killed), (State::Failed, Some(Reason::Killed)));
        let lost = Ending { platform_says: Some("the Job failed".into()), ..Ending::default() };
        let outcome = outcome(&lost, None);
        assert_eq!(outcome.reason, Some(Reason::Interrupted));
        assert!(outcome.message.expect("message").ends_with("(the Job failed)"));
    }

    #[test]
    fn success_completes_progress_and_reads_metrics() {
        let request = serde_json::from_value(serde_json::json!({"model": "dummy", "tasks": ["t"]})).expect("request");
        let mut evaluation = Evaluation::pending(uuid::Uuid::nil(), request, vec![], OffsetDateTime::UNIX_EPOCH);
        evaluation.progress = Some(crate::model::Progress { percent: 50.0, completed: 1, total: 2 });
        let done = Outcome { state: State::Succeeded, reason: None, message: None };
        conclude(&mut evaluation, done, None, Some(br#"{"results": {"t": {"acc,none": 0.5}}}"#));
        assert_eq!(evaluation.progress.map(|p| (p.completed, p.percent)), Some((2, 100.0)));
        assert_eq!(evaluation.metrics.expect("metrics")[0].metric, "acc");
    }
}
