//! The index fed with watch events as the API server sends them, in every order, without a cluster.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::json;

use super::*;
use crate::k8s::job::{self, RunnerConfig};
use crate::k8s::{KIND_LABEL, MANAGED_BY, MANAGED_BY_LABEL, RUN_RECORD_KIND};
use crate::lifecycle::admission::{Submission, admit};
use crate::model::{ExitStatus, Progress};
use crate::validate::Policy;

const NOW: OffsetDateTime = time::macros::datetime!(2026-11-30 12:10 UTC);
const STUCK_AFTER: Duration = Duration::from_secs(120);

/// The Job of evaluation `n`, created `n` minutes after noon, with `status`.
fn job(n: u128, status: serde_json::Value) -> Job {
    let request = serde_json::from_value(json!({"model": "dummy", "tasks": ["t"], "labels": {"n": n.to_string()}}))
        .expect("request");
    let created = time::macros::datetime!(2026-11-30 12:00 UTC) + time::Duration::minutes(n as i64);
    let new = admit(
        Submission::anonymous(request),
        &Policy::default(),
        &job::site(&RunnerConfig::plain(), "ns"),
        Uuid::from_u128(n),
        created,
    )
    .expect("admitted");
    let mut job =
        job::build(&new.evaluation, None, &RunnerConfig::plain(), job::Provenance::default()).expect("job").job;
    job.status = serde_json::from_value(status).expect("status");
    job
}

fn pod(n: u128, name: &str, status: serde_json::Value) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "creationTimestamp": "2026-11-30T12:00:01Z",
                     "labels": {EVALUATION_ID_LABEL: Uuid::from_u128(n).to_string()}},
        "status": status,
    }))
    .expect("pod")
}

fn running(n: u128) -> Pod {
    pod(
        n,
        &format!("pod-{n}"),
        json!({"phase": "Running", "containerStatuses": [{"name": "lm-eval", "image": "i", "imageID": "", "ready": true,
               "restartCount": 0, "state": {"running": {"startedAt": "2026-11-30T12:00:03Z"}}}]}),
    )
}

fn record(n: u128, record: &RunRecord) -> ConfigMap {
    let labels = BTreeMap::from([
        (MANAGED_BY_LABEL.to_string(), MANAGED_BY.to_string()),
        (KIND_LABEL.to_string(), RUN_RECORD_KIND.to_string()),
        (EVALUATION_ID_LABEL.to_string(), Uuid::from_u128(n).to_string()),
    ]);
    let name = object_name(Uuid::from_u128(n));
    record.to_config_map(ObjectMeta { name: Some(name), labels: Some(labels), ..ObjectMeta::default() })
}

fn complete() -> serde_json::Value {
    json!({"completionTime": "2026-11-30T12:30:00Z", "conditions": [{"type": "Complete", "status": "True"}]})
}

fn succeeded_record() -> RunRecord {
    RunRecord {
        progress: Some(Progress { percent: 50.0, completed: 1, total: 2 }),
        exit: Some(ExitStatus::SUCCESS),
        results: Some(Bytes::from_static(br#"{"results": {"t": {"acc,none": 0.75}}}"#)),
        ..RunRecord::default()
    }
}

struct Fed {
    index: Index,
    relists: [Relist; 3],
}

impl Fed {
    fn new() -> Self {
        Self { index: Index::new(STUCK_AFTER), relists: Default::default() }
    }

    fn apply<K: Resource + Into<Stored>>(&mut self, kind: Kind, event: watcher::Event<K>) -> bool {
        self.index.apply(kind, event, &mut self.relists[kind as usize], NOW)
    }

    fn state(&self, n: u128) -> Option<(State, Option<Reason>)> {
        let view = self.index.view(Uuid::from_u128(n)).ok()?;
        Some((view.evaluation.state, view.evaluation.reason))
    }
}

#[test]
fn a_pod_seen_before_its_job_counts_once_the_job_arrives() {
    let mut fed = Fed::new();
    fed.apply(Kind::Pod, watcher::Event::Apply(running(1)));
    assert_eq!(fed.state(1), None, "no Job, no evaluation");
    assert!(fed.index.list(&ListQuery { page_size: 10, ..ListQuery::default() }).expect("list").items.is_empty());
    fed.apply(Kind::Job, watcher::Event::Apply(job(1, json!({"active": 1}))));
    assert_eq!(fed.state(1), Some((State::Running, None)));
    let source = fed.index.log_source(Uuid::from_u128(1)).expect("source");
    assert_eq!((source.pod.as_deref(), source.terminal), (Some("pod-1"), false));
}

#[test]
fn results_recorded_before_the_job_completes_are_there_when_it_does() {
    let mut fed = Fed::new();
    fed.apply(Kind::RunRecord, watcher::Event::Apply(record(1, &succeeded_record())));
    fed.apply(Kind::Job, watcher::Event::Apply(job(1, json!({"active": 1}))));
    assert_eq!(fed.state(1), Some((State::Pending, None)), "no pod seen yet");
    fed.apply(Kind::Job, watcher::Event::Apply(job(1, complete())));
    let view = fed.index.view(Uuid::from_u128(1)).expect("view");
    assert_eq!(view.evaluation.state, State::Succeeded);
    assert_eq!(view.evaluation.metrics.as_ref().map(|m| m[0].metric.as_str()), Some("acc"));
    assert_eq!(view.evaluation.progress.map(|p| p.percent), Some(100.0));
    assert_eq!(serde_json::from_slice::<Evaluation>(&view.json).expect("json"), view.evaluation);
    assert!(fed.index.results(Uuid::from_u128(1)).is_some());
}

#[test]
fn a_run_record_deleted_before_its_job_leaves_the_evaluation_until_the_job_goes() {
    let mut fed = Fed::new();
    let cm = record(1, &succeeded_record());
    fed.apply(Kind::Job, watcher::Event::Apply(job(1, complete())));
    fed.apply(Kind::Pod, watcher::Event::Apply(running(1)));
    fed.apply(Kind::RunRecord, watcher::Event::Apply(cm.clone()));
    fed.apply(Kind::RunRecord, watcher::Event::Delete(cm));
    assert_eq!(fed.state(1), Some((State::Succeeded, None)));
    assert!(fed.index.results(Uuid::from_u128(1)).is_none(), "the results went with the record");
    fed.apply(Kind::Job, watcher::Event::Delete(job(1, complete())));
    assert_eq!(fed.state(1), None, "without its Job it is gone, though its pod is not yet");
    assert!(fed.index.log_source(Uuid::from_u128(1)).is_some());
    fed.apply(Kind::Pod, watcher::Event::Delete(running(1)));
    assert!(fed.index.log_source(Uuid::from_u128(1)).is_none(), "nothing is left behind");
}

#[test]
fn a_relist_after_a_restart_adopts_what_exists_and_drops_what_does_not() {
    let mut fed = Fed::new();
    fed.apply(Kind::Job, watcher::Event::Apply(job(1, json!({"active": 1}))));
    fed.apply(Kind::Job, watcher::Event::Apply(job(2, json!({"active": 1}))));
    assert!(!fed.apply(Kind::Job, watcher::Event::<Job>::Init));
    fed.apply(Kind::Job, watcher::Event::InitApply(job(2, complete())));
    fed.apply(Kind::Job, watcher::Event::InitApply(job(3, json!({}))));
    assert_eq!(fed.state(2), Some((State::Succeeded, None)), "updated during the relist");
    assert!(fed.apply(Kind::Job, watcher::Event::<Job>::InitDone), "a finished relist means synced");
    assert_eq!(fed.state(1), None, "deleted while the watch was away");
    let ids: Vec<u128> = fed
        .index
        .list(&ListQuery { page_size: 10, ..ListQuery::default() })
        .expect("list")
        .items
        .iter()
        .map(|e| e.id.as_u128())
        .collect();
    assert_eq!(ids, [3, 2], "newest first");
    assert_eq!(crate::backend::count_by_state(fed.index.states())[&State::Pending], 1);
}

#[test]
fn a_pod_waiting_too_long_is_reported_stuck_once() {
    let mut fed = Fed::new();
    let waiting = pod(
        1,
        "pod-1",
        json!({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
               "message": "0/1 nodes are available", "lastTransitionTime": "2026-11-30T12:09:00Z"}]}),
    );
    fed.apply(Kind::Job, watcher::Event::Apply(job(1, json!({"active": 1}))));
    fed.apply(Kind::Pod, watcher::Event::Apply(waiting));
    assert_eq!(fed.state(1), Some((State::Pending, Some(Reason::Unschedulable))));
    assert!(fed.index.stuck(NOW).is_empty(), "one minute is not too long");
    let stuck = fed.index.stuck(NOW + time::Duration::minutes(5));
    assert_eq!(stuck.iter().map(|s| (s.id.as_u128(), s.reason)).collect::<Vec<_>>(), [(1, Reason::Unschedulable)]);
    assert!(stuck[0].message.contains("0/1 nodes are available"));
}

#[test]
fn forgetting_a_deleted_job_hides_it_at_once() {
    let mut fed = Fed::new();
    fed.apply(Kind::Job, watcher::Event::Apply(job(1, json!({}))));
    fed.index.forget_job(Uuid::from_u128(1), NOW);
    assert!(fed.index.view(Uuid::from_u128(1)).is_err());
}
