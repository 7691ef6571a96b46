//! The CLI's client side, for people and CI pipelines: the subcommands (`commands`) over the REST API (`http`),
//! request files (`request`), gates on metrics (`gate`), reports (`report`) and the exit codes a pipeline
//! branches on.

pub mod commands;
pub mod gate;
pub mod http;
pub mod report;
pub mod request;

/// The CLI's exit codes: stable, documented, what a pipeline branches on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Every gate passed (or there were none) and the evaluation succeeded.
    Passed = 0,
    /// The evaluation succeeded but a gate failed.
    GateFailed = 1,
    /// The evaluation failed or was cancelled.
    EvaluationFailed = 2,
    /// Usage error, or the server refused the request (its problem printed with its field).
    Refused = 3,
    /// The server could not be reached, or waiting timed out.
    Unreachable = 4,
}

impl Exit {
    /// After a succeeded evaluation: passed unless a gate failed.
    pub fn of_gates(verdicts: &[gate::Verdict]) -> Self {
        if verdicts.iter().all(|v| v.passed) { Self::Passed } else { Self::GateFailed }
    }
}
