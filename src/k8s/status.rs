//! (Job, Pods, run record) → the evaluation as the API shows it. This module gathers the facts the
//! Kubernetes objects hold (the Job's conditions, the pod's waiting and termination states, the driver's
//! record) and leaves what they mean to the lifecycle core. Pure: the clock is an argument.

use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::run_record::RunRecord;
use super::{CANCELLED_AT_ANNOTATION, EVALUATION_ANNOTATION, FAILED_ANNOTATION};
use crate::lifecycle::{self, Decision, Ending, Output, PlatformKill};
use crate::model::{Evaluation, ExitStatus, Reason, State};

/// Waiting reasons that do not clear up by themselves; past the configured time they fail the evaluation.
pub const STUCK_REASONS: &[Reason] = &[
    Reason::Unschedulable,
    Reason::ImagePullBackOff,
    Reason::ErrImagePull,
    Reason::InvalidImageName,
    Reason::CreateContainerConfigError,
    Reason::CreateContainerError,
];

/// A failure the service decided and recorded on the Job (see `FAILED_ANNOTATION`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedFailure {
    pub reason: Reason,
    pub message: String,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
}

/// How long after its Job completed an evaluation's results may still be on their way to a watch cache.
const RECORD_LAG: time::Duration = time::Duration::seconds(30);

/// The evaluation `job` runs, as of `now`; `None` if the Job carries no evaluation of ours.
pub fn evaluation(
    job: &Job,
    pods: &[&Pod],
    record: Option<&RunRecord>,
    now: OffsetDateTime,
    stuck_after: Duration,
) -> Option<Evaluation> {
    let annotations = job.metadata.annotations.as_ref()?;
    let mut evaluation: Evaluation = serde_json::from_str(annotations.get(EVALUATION_ANNOTATION)?).ok()?;
    let pod = newest(pods);
    evaluation.progress = record.and_then(|r| r.progress);
    evaluation.started_at = pod.and_then(started_at);
    match phase(job, pod, record, now, stuck_after) {
        Phase::Waiting { reason, message } => {
            evaluation.reason = reason;
            evaluation.message = message;
        }
        Phase::Running => evaluation.state = State::Running,
        Phase::Ended { ending, finished_at } => {
            let outcome = lifecycle::outcome(&ending, evaluation.request.timeout_seconds);
            let results = record.and_then(|r| r.results.as_deref());
            lifecycle::conclude(&mut evaluation, outcome, finished_at, results);
        }
    }
    Some(evaluation)
}

enum Phase<'a> {
    /// Pending; with a reason while its pod waits for something.
    Waiting {
        reason: Option<Reason>,
        message: Option<String>,
    },
    Running,
    Ended {
        ending: Ending<'a>,
        finished_at: Option<OffsetDateTime>,
    },
}

fn phase<'a>(
    job: &Job,
    pod: Option<&'a Pod>,
    record: Option<&'a RunRecord>,
    now: OffsetDateTime,
    stuck_after: Duration,
) -> Phase<'a> {
    let annotations = job.metadata.annotations.as_ref();
    if let Some(failed) =
        annotations.and_then(|a| a.get(FAILED_ANNOTATION)).and_then(|f| serde_json::from_str::<RecordedFailure>(f).ok())
    {
        let decision = Decision::Failed { reason: failed.reason, message: failed.message };
        return Phase::Ended {
            ending: Ending { decision: Some(decision), ..Ending::default() },
            finished_at: Some(failed.at),
        };
    }
    if let Some(at) = annotations.and_then(|a| a.get(CANCELLED_AT_ANNOTATION)) {
        let at = OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339).ok();
        return Phase::Ended {
            ending: Ending { decision: Some(Decision::Cancelled), ..Ending::default() },
            finished_at: at,
        };
    }
    let status = job.status.as_ref();
    let condition = |kind: &str| {
        status
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == kind && c.status == "True"))
    };
    if let Some(complete) = condition("Complete") {
        // The driver exits 0 only once lm_eval did and its results are recorded: a view that shows the Job's end
        // but not the results has seen one watch before the other, and still calls it running for a while.
        let finished = status.and_then(|s| s.completion_time.as_ref()).or(complete.last_transition_time.as_ref());
        let recorded = record.is_some_and(|r| r.results.is_some() || r.stored_outputs);
        if !recorded && finished.is_some_and(|at| now - to_time(at) < RECORD_LAG) {
            return Phase::Running;
        }
        let ending = Ending { exit: Some(ExitStatus::SUCCESS), output: Some(Output::Found), ..Ending::default() };
        return Phase::Ended { ending, finished_at: finished.map(to_time) };
    }
    // FailureTarget: the job controller has decided the Job fails and is ending its pods (Failed follows, the
    // target stays). The decision's time is the end, so the evaluation's end does not move when Failed comes.
    let target = condition("FailureTarget");
    if let Some(failed) = condition("Failed").or(target) {
        let ending = failed_job(failed.reason.as_deref(), failed.message.as_deref(), pod, record);
        let finished_at = target.unwrap_or(failed).last_transition_time.as_ref().map(to_time);
        return Phase::Ended { ending, finished_at };
    }
    if let Some((reason, message, since)) = pod.and_then(waiting_problem) {
        let since = since.unwrap_or(now);
        if now - since >= stuck_after {
            let message = format!("{message} (waited {}s)", (now - since).whole_seconds());
            let decision = Decision::Failed { reason, message };
            return Phase::Ended {
                ending: Ending { decision: Some(decision), ..Ending::default() },
                finished_at: Some(now),
            };
        }
        return Phase::Waiting { reason: Some(reason), message: Some(message) };
    }
    if pod.is_some_and(has_started) { Phase::Running } else { Phase::Waiting { reason: None, message: None } }
}

/// The facts of a failed Job: its condition, its newest pod's end, and what the driver recorded.
pub fn failed_job<'a>(
    job_reason: Option<&str>,
    job_message: Option<&str>,
    pod: Option<&'a Pod>,
    record: Option<&'a RunRecord>,
) -> Ending<'a> {
    let pod_status = pod.and_then(|p| p.status.as_ref());
    let terminated = pod_status
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|c| c.first())
        .and_then(|c| c.state.as_ref())
        .and_then(|s| s.terminated.as_ref());
    let killed = if pod_status.and_then(|s| s.reason.as_deref()) == Some("Evicted") {
        let message = pod_status.and_then(|s| s.message.clone()).unwrap_or_else(|| "the pod was evicted".into());
        Some(PlatformKill::Evicted { message })
    } else if terminated.and_then(|t| t.reason.as_deref()) == Some("OOMKilled") {
        Some(PlatformKill::OutOfMemory)
    } else {
        None
    };
    Ending {
        decision: (job_reason == Some("DeadlineExceeded")).then_some(Decision::TimedOut),
        exit: record.and_then(|r| r.exit).or_else(|| terminated.map(|t| ExitStatus::code(t.exit_code))),
        output: record.and_then(|r| r.failure.clone()).map(|(reason, message)| Output::Failed { reason, message }),
        killed,
        log_tail: record
            .and_then(|r| r.log_tail.as_deref())
            .or(terminated.and_then(|t| t.message.as_deref()))
            .unwrap_or(""),
        platform_says: Some(format!(
            "the Job failed: {}: {}",
            job_reason.unwrap_or("BackoffLimitExceeded"),
            job_message.unwrap_or("no message")
        )),
    }
}

/// Whether a Job has ended or will run no more: complete, failed (or decided to fail), cancelled or failed by
/// the service (which suspends it).
pub fn job_is_over(job: &Job) -> bool {
    let annotations = job.metadata.annotations.as_ref();
    let decided =
        annotations.is_some_and(|a| a.contains_key(CANCELLED_AT_ANNOTATION) || a.contains_key(FAILED_ANNOTATION));
    let suspended = job.spec.as_ref().and_then(|s| s.suspend).unwrap_or(false);
    let conditions = job.status.as_ref().and_then(|s| s.conditions.as_ref());
    decided
        || suspended
        || conditions
            .into_iter()
            .flatten()
            .any(|c| c.status == "True" && matches!(c.type_.as_str(), "Complete" | "Failed" | "FailureTarget"))
}

/// A pod waiting for something that will not come by itself: `(reason, message, since)`. A pod the job
/// controller ended before it ever started still tells what it waited for, until the Job's end is seen.
pub fn waiting_problem(pod: &Pod) -> Option<(Reason, String, Option<OffsetDateTime>)> {
    let status = pod.status.as_ref()?;
    let ended_unstarted = status.phase.as_deref() == Some("Failed") && !has_started(pod);
    if status.phase.as_deref() != Some("Pending") && !ended_unstarted {
        return None;
    }
    let created = pod.metadata.creation_timestamp.as_ref().map(to_time);
    if let Some(unschedulable) = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "PodScheduled" && c.status == "False" && c.reason.as_deref() == Some("Unschedulable"))
    {
        let since = unschedulable.last_transition_time.as_ref().map(to_time).or(created);
        return Some((Reason::Unschedulable, unschedulable.message.clone().unwrap_or_default(), since));
    }
    let (reason, waiting) =
        status.container_statuses.iter().flatten().filter_map(|c| c.state.as_ref()?.waiting.as_ref()).find_map(
            |w| Some((w.reason.as_deref().and_then(Reason::parse).filter(|r| STUCK_REASONS.contains(r))?, w)),
        )?;
    Some((reason, waiting.message.clone().unwrap_or_default(), created))
}

/// Whether the pod's container has been started (so it has a log).
pub fn has_started(pod: &Pod) -> bool {
    let Some(status) = pod.status.as_ref() else { return false };
    match status.phase.as_deref() {
        Some("Running") => true,
        // A pod that never ran ends as Failed too (the job controller fails the pods it deletes, scheduled or
        // not): it started only if a container did.
        Some("Succeeded" | "Failed") => status.container_statuses.iter().flatten().any(|c| {
            c.state
                .as_ref()
                .is_some_and(|s| s.running.is_some() || s.terminated.as_ref().is_some_and(|t| t.started_at.is_some()))
        }),
        _ => false,
    }
}

/// When the newest pod, waiting on something that does not clear by itself, will have waited `stuck_after`
/// (and its evaluation fail); `None` while no pod is stuck that way.
pub fn stuck_at(pods: &[&Pod], stuck_after: Duration) -> Option<OffsetDateTime> {
    let (_, _, since) = waiting_problem(newest(pods)?)?;
    Some(since? + stuck_after)
}

/// The most recently created of `pods`: the Job's current attempt.
pub fn newest<'a>(pods: &[&'a Pod]) -> Option<&'a Pod> {
    pods.iter().copied().max_by_key(|p| p.metadata.creation_timestamp.as_ref().map(to_time))
}

fn started_at(pod: &Pod) -> Option<OffsetDateTime> {
    let status = pod.status.as_ref()?;
    let container = status.container_statuses.as_ref().and_then(|c| c.first()).and_then(|c| c.state.as_ref());
    container
        .and_then(|s| s.running.as_ref().and_then(|r| r.started_at.as_ref()))
        .or_else(|| container.and_then(|s| s.terminated.as_ref().and_then(|t| t.started_at.as_ref())))
        .map(to_time)
}

pub fn to_time(time: &Time) -> OffsetDateTime {
    let nanos = time.0.as_nanosecond();
    OffsetDateTime::from_unix_timestamp_nanos(nanos).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::EvaluationRequest;
    use serde_json::json;
    use uuid::Uuid;

    const NOW: OffsetDateTime = time::macros::datetime!(2026-11-28 12:10 UTC);
    const STUCK: Duration = Duration::from_secs(120);

    fn job(status: serde_json::Value, extra_annotations: serde_json::Value) -> Job {
        let id = Uuid::from_u128(7);
        let request: EvaluationRequest =
            serde_json::from_value(json!({"model": "dummy", "tasks": ["t"], "timeout_seconds": 60})).expect("request");
        let evaluation = Evaluation::pending(id, request, vec![], time::macros::datetime!(2026-11-28 12:00 UTC));
        let mut annotations = json!({ EVALUATION_ANNOTATION: serde_json::to_string(&evaluation).expect("json") });
        for (k, v) in extra_annotations.as_object().into_iter().flatten() {
            annotations[k] = v.clone();
        }
        serde_json::from_value(json!({"metadata": {"name": "lmeval-x", "annotations": annotations}, "status": status}))
            .expect("job")
    }

    fn pod(status: serde_json::Value) -> Pod {
        serde_json::from_value(
            json!({"metadata": {"name": "p", "creationTimestamp": "2026-11-28T12:00:01Z"}, "status": status}),
        )
        .expect("pod")
    }

    fn map(job: &Job, pods: &[Pod], record: Option<&RunRecord>) -> (State, Option<Reason>, Option<String>) {
        let pods: Vec<&Pod> = pods.iter().collect();
        let e = evaluation(job, &pods, record, NOW, STUCK).expect("evaluation");
        (e.state, e.reason, e.message)
    }

    fn failed(reason: &str) -> serde_json::Value {
        json!({"conditions": [{"type": "Failed", "status": "True", "reason": reason, "lastTransitionTime": "2026-11-28T12:05:00Z"}]})
    }

    fn waiting(reason: &str, message: &str) -> Pod {
        pod(
            json!({"phase": "Pending", "containerStatuses": [{"name": "lm-eval", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"waiting": {"reason": reason, "message": message}}}]}),
        )
    }

    fn terminated(reason: &str, code: i32) -> Pod {
        pod(
            json!({"phase": "Failed", "containerStatuses": [{"name": "lm-eval", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"terminated": {"reason": reason, "exitCode": code, "startedAt": "2026-11-28T12:00:02Z"}}}]}),
        )
    }

    #[test]
    fn pending_running_succeeded() {
        assert_eq!(map(&job(json!({}), json!({})), &[], None).0, State::Pending);
        let running = pod(
            json!({"phase": "Running", "containerStatuses": [{"name": "lm-eval", "image": "i", "imageID": "", "ready": true, "restartCount": 0,
            "state": {"running": {"startedAt": "2026-11-28T12:00:03Z"}}}]}),
        );
        let j = job(json!({"active": 1}), json!({}));
        let e = evaluation(&j, &[&running], None, NOW, STUCK).expect("evaluation");
        assert_eq!((e.state, e.started_at), (State::Running, Some(time::macros::datetime!(2026-11-28 12:00:03 UTC))));

        let done = job(
            json!({"completionTime": "2026-11-28T12:01:00Z", "conditions": [{"type": "Complete", "status": "True"}]}),
            json!({}),
        );
        let record = RunRecord {
            results: Some(bytes::Bytes::from_static(
                br#"{"results": {"t": {"acc,none": 0.5, "acc_stderr,none": 0.1}}}"#,
            )),
            ..RunRecord::default()
        };
        let e = evaluation(&done, &[], Some(&record), NOW, STUCK).expect("evaluation");
        assert_eq!(e.state, State::Succeeded);
        assert_eq!(e.finished_at, Some(time::macros::datetime!(2026-11-28 12:01 UTC)));
        assert_eq!(e.metrics.expect("metrics")[0].metric, "acc");

        // The Job's end seen before the record's results: running until they come, or for at most 30 s.
        let early = time::macros::datetime!(2026-11-28 12:01:10 UTC);
        assert_eq!(evaluation(&done, &[], None, early, STUCK).expect("evaluation").state, State::Running);
        assert_eq!(evaluation(&done, &[], Some(&record), early, STUCK).expect("evaluation").state, State::Succeeded);
        assert_eq!(evaluation(&done, &[], None, NOW, STUCK).expect("evaluation").state, State::Succeeded);
    }

    #[test]
    fn each_failure_names_its_reason() {
        let failing = json!({"conditions": [{"type": "FailureTarget", "status": "True", "reason": "DeadlineExceeded", "lastTransitionTime": "2026-11-28T12:05:00Z"}]});
        assert_eq!(
            map(&job(failing, json!({})), &[], None).1,
            Some(Reason::Timeout),
            "decided before its pods are gone"
        );
        let both = json!({"conditions": [
            {"type": "FailureTarget", "status": "True", "reason": "DeadlineExceeded", "lastTransitionTime": "2026-11-28T12:05:00Z"},
            {"type": "Failed", "status": "True", "reason": "DeadlineExceeded", "lastTransitionTime": "2026-11-28T12:05:05Z"}]});
        let e = evaluation(&job(both, json!({})), &[], None, NOW, STUCK).expect("evaluation");
        assert_eq!(e.finished_at, Some(time::macros::datetime!(2026-11-28 12:05 UTC)), "the end does not move");
        let deadline = map(&job(failed("DeadlineExceeded"), json!({})), &[], None);
        assert_eq!((deadline.0, deadline.1), (State::Failed, Some(Reason::Timeout)));
        assert!(deadline.2.expect("message").contains("timeout_seconds=60"));

        let record = RunRecord {
            exit: Some(ExitStatus::code(2)),
            log_tail: Some("loading\nKeyError: 'nope'\n".into()),
            ..RunRecord::default()
        };
        let lm_eval = map(&job(failed("BackoffLimitExceeded"), json!({})), &[terminated("Error", 2)], Some(&record));
        assert_eq!(lm_eval.1, Some(Reason::LmEvalError));
        assert!(lm_eval.2.expect("message").contains("code 2; last log lines:\nloading\nKeyError: 'nope'"));

        let oom = map(&job(failed("BackoffLimitExceeded"), json!({})), &[terminated("OOMKilled", 137)], None);
        assert_eq!(oom.1, Some(Reason::OomKilled));

        let evicted = pod(json!({"phase": "Failed", "reason": "Evicted", "message": "node low on memory"}));
        assert_eq!(map(&job(failed("BackoffLimitExceeded"), json!({})), &[evicted], None).1, Some(Reason::Evicted));

        let too_large = RunRecord {
            exit: Some(ExitStatus::SUCCESS),
            failure: Some((Reason::ResultsTooLarge, "big".into())),
            ..RunRecord::default()
        };
        let mapped = map(&job(failed("BackoffLimitExceeded"), json!({})), &[terminated("Error", 1)], Some(&too_large));
        assert_eq!(mapped.1, Some(Reason::ResultsTooLarge));

        let bare = map(&job(failed("BackoffLimitExceeded"), json!({})), &[], None);
        assert_eq!(bare.1, Some(Reason::Interrupted));
    }

    #[test]
    fn waiting_pods_are_pending_with_a_reason_until_they_have_waited_too_long() {
        let missing = waiting("CreateContainerConfigError", "secret \"llm\" not found");
        let young = evaluation(
            &job(json!({}), json!({})),
            &[&missing],
            None,
            time::macros::datetime!(2026-11-28 12:01 UTC),
            STUCK,
        )
        .expect("evaluation");
        assert_eq!((young.state, young.reason), (State::Pending, Some(Reason::CreateContainerConfigError)));
        assert!(young.message.expect("message").contains("secret \"llm\" not found"));
        let old = map(&job(json!({}), json!({})), &[missing], None);
        assert_eq!((old.0, old.1), (State::Failed, Some(Reason::CreateContainerConfigError)));

        let unschedulable = pod(
            json!({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
            "message": "0/1 nodes have enough nvidia.com/gpu", "lastTransitionTime": "2026-11-28T12:09:00Z"}]}),
        );
        let e = map(&job(json!({}), json!({})), &[unschedulable], None);
        assert_eq!((e.0, e.1), (State::Pending, Some(Reason::Unschedulable)));
        assert_eq!(
            map(&job(json!({}), json!({})), &[waiting("ImagePullBackOff", "")], None).1,
            Some(Reason::ImagePullBackOff)
        );
    }

    #[test]
    fn a_pod_failed_before_it_was_ever_scheduled_never_started() {
        let never_ran = pod(
            json!({"phase": "Failed", "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
            "lastTransitionTime": "2026-11-28T12:09:00Z"}]}),
        );
        assert!(!has_started(&never_ran));
        let (state, reason, _) = map(&job(json!({}), json!({})), &[never_ran], None);
        assert_eq!((state, reason), (State::Pending, Some(Reason::Unschedulable)), "as before it was ended");
        assert!(has_started(&terminated("Error", 1)));
        assert!(has_started(&pod(json!({"phase": "Running"}))));
    }

    #[test]
    fn a_pod_waiting_since_a_known_time_is_stuck_that_long_after_it() {
        let unschedulable = pod(
            json!({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
            "message": "0/1 nodes", "lastTransitionTime": "2026-11-28T12:09:00Z"}]}),
        );
        assert_eq!(
            stuck_at(&[&unschedulable], Duration::from_secs(60)),
            Some(time::macros::datetime!(2026-11-28 12:10 UTC))
        );
        assert_eq!(stuck_at(&[], Duration::from_secs(60)), None, "no pod yet");
        let running = pod(json!({"phase": "Running"}));
        assert_eq!(stuck_at(&[&running], Duration::from_secs(60)), None);
    }

    #[test]
    fn a_job_is_over_once_ended_or_decided() {
        assert!(!job_is_over(&job(json!({"active": 1}), json!({}))));
        assert!(job_is_over(&job(failed("DeadlineExceeded"), json!({}))));
        assert!(job_is_over(&job(json!({}), json!({ CANCELLED_AT_ANNOTATION: "2026-11-28T12:02:00Z" }))));
        let target = json!({"conditions": [{"type": "FailureTarget", "status": "True"}]});
        assert!(job_is_over(&job(target, json!({}))));
    }

    #[test]
    fn recorded_decisions_win() {
        let cancelled = job(json!({"active": 1}), json!({ CANCELLED_AT_ANNOTATION: "2026-11-28T12:02:00Z" }));
        let e = evaluation(&cancelled, &[], None, NOW, STUCK).expect("evaluation");
        assert_eq!((e.state, e.finished_at), (State::Cancelled, Some(time::macros::datetime!(2026-11-28 12:02 UTC))));
        let failure = RecordedFailure { reason: Reason::ImagePullBackOff, message: "m".into(), at: NOW };
        let stuck = job(json!({}), json!({ FAILED_ANNOTATION: serde_json::to_string(&failure).expect("json") }));
        assert_eq!(map(&stuck, &[], None).1, Some(Reason::ImagePullBackOff));
        assert!(evaluation(&Job::default(), &[], None, NOW, STUCK).is_none());
    }
}
