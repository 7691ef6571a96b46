//! What the local backend keeps on disk for one evaluation (`record.json`), and the facts of its end.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::lifecycle::admission::IdempotencyKey;
use crate::lifecycle::{self, Decision, Ending, Output};
use crate::model::{Evaluation, ExitStatus, Reason};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub evaluation: Evaluation,
    #[serde(flatten)]
    pub control: Control,
}

/// What the backend needs beyond the evaluation itself.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Control {
    pub idempotency: Option<IdempotencyKey>,
    /// Who submitted it (see `api::extract::creator`); counted against the pending limits.
    #[serde(default)]
    pub creator: Option<String>,
    pub process: Option<ProcessId>,
    /// Why we are stopping it, once we are.
    pub stopping: Option<StopReason>,
    pub results_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StopReason {
    Cancelled,
    Timeout,
}

/// A pid together with its start time, so a reused pid is never mistaken for ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessId {
    pub pid: u32,
    pub start_ticks: u64,
}

/// What a local run's end is known by: the service's own decision, the exit status the driver wrote,
/// whether lm-eval left a results file, and the end of its log.
pub fn ending(
    stopping: Option<StopReason>,
    exit: Option<ExitStatus>,
    results_found: bool,
    log_tail: &str,
) -> Ending<'_> {
    Ending {
        decision: stopping.map(|why| match why {
            StopReason::Cancelled => Decision::Cancelled,
            StopReason::Timeout => Decision::TimedOut,
        }),
        exit,
        output: Some(if results_found { Output::Found } else { Output::missing() }),
        log_tail,
        ..Ending::default()
    }
}

/// The facts of a run whose driver could not be started.
pub fn start_failure(error: &std::io::Error) -> Ending<'static> {
    Ending {
        decision: Some(Decision::Failed {
            reason: Reason::StartError,
            message: format!("cannot start the driver: {error}"),
        }),
        ..Ending::default()
    }
}

impl Record {
    /// Settles an ended run: its outcome from `ending`, and on success the results file it is served from.
    pub fn conclude(&mut self, ending: &Ending<'_>, results: Option<(PathBuf, &[u8])>, now: OffsetDateTime) {
        let outcome = lifecycle::outcome(ending, self.evaluation.request.timeout_seconds);
        let succeeded = outcome.state == crate::model::State::Succeeded;
        let (file, bytes) =
            results.filter(|_| succeeded).map_or((None, None), |(file, bytes)| (Some(file), Some(bytes)));
        self.control.results_file = file;
        lifecycle::conclude(&mut self.evaluation, outcome, Some(now), bytes);
    }

    /// Settles a pending run as cancelled before it ever started.
    pub fn cancel_unstarted(&mut self, now: OffsetDateTime) {
        self.control.stopping = Some(StopReason::Cancelled);
        self.conclude(&ending(self.control.stopping, None, false, ""), None, now);
    }
}
