//! The same stop situations through both executors' fact gathering into the lifecycle core: each must
//! end in the same state with the same reason, whichever backend ran it.
//!
//! A situation is what the run left behind (its exit status, its log, lm-eval's output directory) and
//! what was decided about it (cancel, timeout). The local backend reads those from the evaluation's
//! directory; on Kubernetes the driver turns them into the run record and the Job and its pod say the rest.

use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use serde_json::json;
use time::OffsetDateTime;
use uuid::Uuid;

use super::local::process::RunFiles;
use super::local::record::{Control, Record, StopReason};
use crate::driver::final_record;
use crate::k8s::job::{self, RunnerConfig};
use crate::k8s::{CANCELLED_AT_ANNOTATION, status};
use crate::lifecycle::admission::{Submission, Workspace, admit};
use crate::model::{Evaluation, ExitStatus, Reason, State};
use crate::validate::Policy;

const STARTED: OffsetDateTime = time::macros::datetime!(2026-11-30 12:00 UTC);
const NOW: OffsetDateTime = time::macros::datetime!(2026-11-30 12:05 UTC);

#[derive(Debug, Clone, Copy)]
enum Situation {
    TimedOut,
    Cancelled,
    LmEvalFailed,
    NoResultsFile,
    ResultsFound,
}

impl Situation {
    const ALL: [Situation; 5] =
        [Self::TimedOut, Self::Cancelled, Self::LmEvalFailed, Self::NoResultsFile, Self::ResultsFound];

    /// lm_eval's exit: SIGTERMed when stopped from outside, else by itself.
    fn exit(self) -> ExitStatus {
        match self {
            Self::TimedOut | Self::Cancelled => ExitStatus { code: None, signal: Some(15) },
            Self::LmEvalFailed => ExitStatus::code(1),
            Self::NoResultsFile | Self::ResultsFound => ExitStatus::SUCCESS,
        }
    }

    fn expected(self) -> (State, Option<Reason>) {
        match self {
            Self::TimedOut => (State::Failed, Some(Reason::Timeout)),
            Self::Cancelled => (State::Cancelled, Some(Reason::Cancelled)),
            Self::LmEvalFailed => (State::Failed, Some(Reason::LmEvalError)),
            Self::NoResultsFile => (State::Failed, Some(Reason::NoResults)),
            Self::ResultsFound => (State::Succeeded, None),
        }
    }

    /// The files the run leaves in `dir`, laid out as the driver and lm-eval write them.
    fn leave_files(self, dir: &Path) {
        std::fs::create_dir_all(dir.join("output/dummy")).expect("output dir");
        std::fs::write(dir.join("exit.json"), serde_json::to_vec(&self.exit()).expect("json")).expect("exit");
        std::fs::write(dir.join("log.txt"), "Building contexts\nTraceback: boom\n").expect("log");
        if matches!(self, Self::ResultsFound) {
            let results = br#"{"results": {"t": {"acc,none": 0.25}}}"#;
            std::fs::write(dir.join("output/dummy/results_2026-11-30T12-05-00.json"), results).expect("results");
        }
    }
}

fn accepted() -> Evaluation {
    let site = crate::lifecycle::admission::Site {
        backend: "test",
        program: "lm_eval".into(),
        task_dirs: vec![],
        workspace: Workspace::PerEvaluation("/data".into()),
        secrets: true,
        volumes: true,
        resources: true,
        namespace: "ns".into(),
        default_namespace: true,
        service_env: vec![],
        reserved: Default::default(),
    };
    let request =
        serde_json::from_value(json!({"model": "dummy", "tasks": ["t"], "timeout_seconds": 60})).expect("request");
    let mut evaluation = admit(Submission::anonymous(request), &Policy::default(), &site, Uuid::from_u128(9), STARTED)
        .expect("admitted")
        .evaluation;
    evaluation.state = State::Running;
    evaluation.started_at = Some(STARTED);
    evaluation
}

/// The local backend: its record says what it decided; the directory says the rest.
fn local(situation: Situation, dir: &Path) -> (State, Option<Reason>) {
    let stopping = match situation {
        Situation::TimedOut => Some(StopReason::Timeout),
        Situation::Cancelled => Some(StopReason::Cancelled),
        _ => None,
    };
    let mut record = Record { evaluation: accepted(), control: Control { stopping, ..Control::default() } };
    RunFiles::read(dir).settle(&mut record, NOW);
    (record.evaluation.state, record.evaluation.reason)
}

/// Kubernetes: the driver's run record from the same directory, and the Job and pod as the controllers
/// leave them.
fn kubernetes(situation: Situation, dir: &Path) -> (State, Option<Reason>) {
    let record = final_record(situation.exit(), None, Some(&dir.join("output")));
    let runner = RunnerConfig::plain();
    let mut job: Job = job::build(&accepted(), None, &runner, job::Provenance::default()).expect("job").job;
    let failed = |reason: &str| json!({"conditions": [{"type": "Failed", "status": "True", "reason": reason}]});
    // The driver exits with lm_eval's code, or 1 when lm_eval's 0 came without results.
    let (job_status, container_exit) = match situation {
        Situation::TimedOut => (failed("DeadlineExceeded"), 143),
        Situation::Cancelled => {
            job.metadata
                .annotations
                .get_or_insert_default()
                .insert(CANCELLED_AT_ANNOTATION.into(), "2026-11-30T12:04:00Z".into());
            (json!({"active": 1}), 143)
        }
        Situation::LmEvalFailed => (failed("BackoffLimitExceeded"), 1),
        Situation::NoResultsFile => (failed("BackoffLimitExceeded"), 1),
        Situation::ResultsFound => (json!({"conditions": [{"type": "Complete", "status": "True"}]}), 0),
    };
    job.status = serde_json::from_value(job_status).expect("job status");
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "p", "creationTimestamp": "2026-11-30T12:00:00Z"},
        "status": {"phase": if container_exit == 0 { "Succeeded" } else { "Failed" },
                   "containerStatuses": [{"name": "lm-eval", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
                       "state": {"terminated": {"exitCode": container_exit, "startedAt": "2026-11-30T12:00:01Z"}}}]},
    }))
    .expect("pod");
    let evaluation =
        status::evaluation(&job, &[&pod], Some(&record), NOW, Duration::from_secs(300)).expect("evaluation");
    (evaluation.state, evaluation.reason)
}

#[test]
fn both_backends_reach_the_same_state_and_reason() {
    for situation in Situation::ALL {
        let dir = tempfile::tempdir().expect("tempdir");
        situation.leave_files(dir.path());
        let (local, kubernetes) = (local(situation, dir.path()), kubernetes(situation, dir.path()));
        assert_eq!(local, situation.expected(), "local backend, {situation:?}");
        assert_eq!(kubernetes, situation.expected(), "kubernetes backend, {situation:?}");
    }
}
