//! The controller's index fed with watch events as the API server sends them, in every order, without a cluster.

use std::collections::BTreeMap;

use bytes::Bytes;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use serde_json::json;

use super::*;
use crate::k8s::job::{self, Provenance, RunnerConfig};
use crate::k8s::{EVALUATION_ID_LABEL, KIND_LABEL, MANAGED_BY, MANAGED_BY_LABEL, RUN_RECORD_KIND};
use crate::lifecycle::admission::{Submission, admit};
use crate::model::{ExitStatus, Progress, Reason, State};
use crate::validate::Policy;

const NOW: OffsetDateTime = time::macros::datetime!(2026-11-30 12:10 UTC);
const STUCK_AFTER: Duration = Duration::from_secs(120);

/// The Job of evaluation `n` with `status`.
fn job(n: u128, status: serde_json::Value) -> Job {
    let request = serde_json::from_value(json!({"model": "dummy", "tasks": ["t"]})).expect("request");
    let created = time::macros::datetime!(2026-11-30 12:00 UTC);
    let site = job::site(&RunnerConfig::plain(), "ns");
    let new = admit(Submission::anonymous(request), &Policy::default(), &site, Uuid::from_u128(n), created)
        .expect("admitted");
    let mut job = job::build(&new.evaluation, None, &RunnerConfig::plain(), Provenance::default()).expect("job").job;
    job.status = serde_json::from_value(status).expect("status");
    job.metadata.uid = Some(job_uid(n));
    job.metadata.owner_references = Some(vec![owner("lm-eval-aas.io/v1alpha1", "Evaluation", n, &evaluation_uid(n))]);
    job
}

/// The uid of evaluation `n`'s Evaluation object, and of its Job.
fn evaluation_uid(n: u128) -> String {
    format!("evaluation-{n}")
}

fn job_uid(n: u128) -> String {
    format!("job-{n}")
}

fn owner(api_version: &str, kind: &str, n: u128, uid: &str) -> OwnerReference {
    OwnerReference {
        api_version: api_version.into(),
        kind: kind.into(),
        name: object_name(Uuid::from_u128(n)),
        uid: uid.into(),
        controller: Some(true),
        block_owner_deletion: None,
    }
}

fn pod(n: u128, status: serde_json::Value) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": format!("pod-{n}"), "creationTimestamp": "2026-11-30T12:00:01Z",
                     "labels": {EVALUATION_ID_LABEL: Uuid::from_u128(n).to_string()},
                     "ownerReferences": [owner("batch/v1", "Job", n, &job_uid(n))]},
        "status": status,
    }))
    .expect("pod")
}

fn running(n: u128) -> Pod {
    pod(
        n,
        json!({"phase": "Running", "containerStatuses": [{"name": "lm-eval", "image": "i", "imageID": "", "ready": true,
               "restartCount": 0, "state": {"running": {"startedAt": "2026-11-30T12:00:03Z"}}}]}),
    )
}

/// Evaluation `n`'s run record, as the controller makes it (owned by the Evaluation).
fn record(n: u128, record: &RunRecord) -> ConfigMap {
    labelled_record(n, n, &evaluation_uid(n), record)
}

/// The record named after evaluation `n`, labelled with evaluation `labelled`'s id and owned by `owner_uid`.
fn labelled_record(n: u128, labelled: u128, owner_uid: &str, record: &RunRecord) -> ConfigMap {
    let labels = BTreeMap::from([
        (MANAGED_BY_LABEL.to_string(), MANAGED_BY.to_string()),
        (KIND_LABEL.to_string(), RUN_RECORD_KIND.to_string()),
        (EVALUATION_ID_LABEL.to_string(), Uuid::from_u128(labelled).to_string()),
    ]);
    record.to_config_map(ObjectMeta {
        name: Some(object_name(Uuid::from_u128(n))),
        labels: Some(labels),
        owner_references: Some(vec![owner("lm-eval-aas.io/v1alpha1", "Evaluation", n, owner_uid)]),
        ..ObjectMeta::default()
    })
}

fn complete() -> serde_json::Value {
    json!({"completionTime": "2026-11-30T12:05:00Z", "conditions": [{"type": "Complete", "status": "True"}]})
}

fn succeeded_record() -> RunRecord {
    RunRecord {
        progress: Some(Progress { percent: 50.0, completed: 1, total: 2 }),
        exit: Some(ExitStatus::SUCCESS),
        results: Some(Bytes::from_static(br#"{"results": {"t": {"acc,none": 0.75}}, "samples": {"t": ["big"]}}"#)),
        log_tail: Some((0..1000).map(|i| format!("line {i}\n")).collect()),
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

    fn apply<K: Resource + Into<Stored>>(&mut self, kind: Kind, event: watcher::Event<K>) -> Vec<Uuid> {
        self.index.apply(kind, event, &mut self.relists[kind as usize])
    }

    fn state(&self, n: u128) -> Option<(State, Option<Reason>)> {
        let evaluation = self.index.evaluation(Uuid::from_u128(n), &evaluation_uid(n), NOW)?;
        Some((evaluation.state, evaluation.reason))
    }
}

#[test]
fn a_pod_seen_before_its_job_counts_once_the_job_arrives() {
    let mut fed = Fed::new();
    assert_eq!(fed.apply(Kind::Pod, watcher::Event::Apply(running(1))), [Uuid::from_u128(1)]);
    assert_eq!(fed.state(1), None, "no Job, no evaluation");
    fed.apply(Kind::Job, watcher::Event::Apply(job(1, json!({"active": 1}))));
    assert_eq!(fed.state(1), Some((State::Running, None)));
}

#[test]
fn results_recorded_before_the_job_completes_are_there_when_it_does_and_only_a_summary_is_kept() {
    let mut fed = Fed::new();
    fed.apply(Kind::RunRecord, watcher::Event::Apply(record(1, &succeeded_record())));
    fed.apply(Kind::Job, watcher::Event::Apply(job(1, json!({"active": 1}))));
    assert_eq!(fed.state(1), Some((State::Pending, None)), "no pod seen yet");
    fed.apply(Kind::Job, watcher::Event::Apply(job(1, complete())));
    let evaluation = fed.index.evaluation(Uuid::from_u128(1), &evaluation_uid(1), NOW).expect("evaluation");
    assert_eq!(evaluation.state, State::Succeeded);
    assert_eq!(evaluation.metrics.as_ref().map(|m| m[0].metric.as_str()), Some("acc"));
    assert_eq!(evaluation.progress.map(|p| p.percent), Some(100.0));
    let kept = &fed.index.entries[&Uuid::from_u128(1)].record.as_ref().expect("record").object;
    assert_eq!(kept.log_tail.as_deref().map(|t| t.lines().count()), Some(crate::lifecycle::LAST_LOG_LINES));
    assert!(
        !String::from_utf8_lossy(kept.results.as_deref().expect("results")).contains("samples"),
        "only what metrics need"
    );
}

#[test]
fn a_run_record_deleted_before_its_job_and_then_everything_gone_leaves_nothing() {
    let mut fed = Fed::new();
    let cm = record(1, &succeeded_record());
    fed.apply(Kind::Job, watcher::Event::Apply(job(1, complete())));
    fed.apply(Kind::Pod, watcher::Event::Apply(running(1)));
    fed.apply(Kind::RunRecord, watcher::Event::Apply(cm.clone()));
    fed.apply(Kind::RunRecord, watcher::Event::Delete(cm));
    assert_eq!(fed.state(1), Some((State::Succeeded, None)));
    fed.apply(Kind::Job, watcher::Event::Delete(job(1, complete())));
    assert_eq!(fed.state(1), None, "without its Job there is no evaluation, though its pod is not gone yet");
    fed.apply(Kind::Pod, watcher::Event::Delete(running(1)));
    assert!(fed.index.entries.is_empty(), "nothing is left behind");
}

#[test]
fn a_relist_after_a_restart_adopts_what_exists_and_drops_what_does_not() {
    let mut fed = Fed::new();
    fed.apply(Kind::Job, watcher::Event::Apply(job(1, json!({"active": 1}))));
    fed.apply(Kind::Job, watcher::Event::Apply(job(2, json!({"active": 1}))));
    fed.apply(Kind::Job, watcher::Event::<Job>::Init);
    fed.apply(Kind::Job, watcher::Event::InitApply(job(2, complete())));
    fed.apply(Kind::Job, watcher::Event::InitApply(job(3, json!({}))));
    let touched = fed.apply(Kind::Job, watcher::Event::<Job>::InitDone);
    assert_eq!(touched, [Uuid::from_u128(1)], "the one deleted while the watch was away");
    assert_eq!(fed.state(1), None);
    assert_eq!(fed.state(2), Some((State::Succeeded, None)), "updated during the relist");
    assert_eq!(fed.state(3), Some((State::Pending, None)));
}

#[test]
fn a_pod_waiting_too_long_fails_its_evaluation_and_a_written_job_counts_at_once() {
    let mut fed = Fed::new();
    let waiting = pod(
        1,
        json!({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
               "message": "0/1 nodes are available", "lastTransitionTime": "2026-11-30T12:09:00Z"}]}),
    );
    fed.apply(Kind::Pod, watcher::Event::Apply(waiting));
    fed.index.job_written(job(1, json!({"active": 1})));
    assert_eq!(fed.state(1), Some((State::Pending, Some(Reason::Unschedulable))));
    let later = fed
        .index
        .evaluation(Uuid::from_u128(1), &evaluation_uid(1), NOW + time::Duration::minutes(5))
        .expect("evaluation");
    assert_eq!((later.state, later.reason), (State::Failed, Some(Reason::Unschedulable)));
    assert!(fed.index.job(Uuid::from_u128(1), &evaluation_uid(1)).is_some());
}

/// One watch event, of any kind.
#[derive(Clone)]
#[expect(clippy::large_enum_variant, reason = "a handful of test values")]
enum Fact {
    Job(Job),
    Pod(Pod),
    Record(ConfigMap),
}

impl Fed {
    fn feed(&mut self, fact: Fact) {
        match fact {
            Fact::Job(job) => self.apply(Kind::Job, watcher::Event::Apply(job)),
            Fact::Pod(pod) => self.apply(Kind::Pod, watcher::Event::Apply(pod)),
            Fact::Record(record) => self.apply(Kind::RunRecord, watcher::Event::Apply(record)),
        };
    }
}

/// Every order of `facts`.
fn orders(facts: &[Fact]) -> Vec<Vec<Fact>> {
    if facts.len() <= 1 {
        return vec![facts.to_vec()];
    }
    (0..facts.len())
        .flat_map(|i| {
            let mut rest = facts.to_vec();
            let first = rest.remove(i);
            orders(&rest).into_iter().map(move |mut order| {
                order.insert(0, first.clone());
                order
            })
        })
        .collect()
}

fn accuracy(fed: &Fed, n: u128) -> Option<f64> {
    let evaluation = fed.index.evaluation(Uuid::from_u128(n), &evaluation_uid(n), NOW)?;
    evaluation.metrics?.first()?.value.as_f64()
}

fn record_with_accuracy(accuracy: f64) -> RunRecord {
    let results = format!(r#"{{"results": {{"t": {{"acc,none": {accuracy}}}}}}}"#);
    RunRecord { exit: Some(ExitStatus::SUCCESS), results: Some(Bytes::from(results)), ..RunRecord::default() }
}

#[test]
fn a_record_relabelled_with_another_evaluations_id_changes_neither_in_any_order() {
    // Evaluation 2's runner relabels its record with evaluation 1's id (and, to be sure, names a different
    // state): each evaluation still reads the record named after it.
    let mut attacker = record_with_accuracy(0.01);
    attacker.exit = Some(ExitStatus::code(3));
    let facts = [
        Fact::Job(job(1, complete())),
        Fact::Pod(running(1)),
        Fact::Record(record(1, &record_with_accuracy(0.75))),
        Fact::Job(job(2, complete())),
        Fact::Record(labelled_record(2, 1, &evaluation_uid(2), &attacker)),
    ];
    for order in orders(&facts) {
        let mut fed = Fed::new();
        for fact in order {
            fed.feed(fact);
        }
        assert_eq!(fed.state(1), Some((State::Succeeded, None)));
        assert_eq!(accuracy(&fed, 1), Some(0.75), "the victim's metrics are its own");
        assert_eq!(accuracy(&fed, 2), Some(0.01), "the attacker's record is still its own");
    }
}

#[test]
fn a_record_the_evaluation_does_not_own_is_not_read_in_any_order() {
    let facts = [
        Fact::Job(job(1, complete())),
        Fact::Pod(running(1)),
        Fact::Record(labelled_record(1, 1, "somebody-else", &record_with_accuracy(0.99))),
    ];
    for order in orders(&facts) {
        let mut fed = Fed::new();
        for fact in order {
            fed.feed(fact);
        }
        assert!(fed.index.evaluation(Uuid::from_u128(1), &evaluation_uid(1), NOW).is_some());
        assert_eq!(accuracy(&fed, 1), None, "a record of that name owned by another is not this evaluation's");
    }
}

#[test]
fn a_record_of_an_earlier_release_owned_by_the_evaluations_job_is_read() {
    let mut fed = Fed::new();
    let mut legacy = record(1, &record_with_accuracy(0.5));
    legacy.metadata.owner_references = Some(vec![owner("batch/v1", "Job", 1, &job_uid(1))]);
    fed.feed(Fact::Record(legacy));
    fed.feed(Fact::Job(job(1, complete())));
    assert_eq!(accuracy(&fed, 1), Some(0.5));
}

#[test]
fn a_job_or_pod_of_the_evaluations_name_or_label_that_it_does_not_own_does_not_count() {
    let mut fed = Fed::new();
    let mut foreign = job(1, complete());
    foreign.metadata.owner_references = Some(vec![owner("lm-eval-aas.io/v1alpha1", "Evaluation", 1, "another")]);
    fed.feed(Fact::Job(foreign));
    assert_eq!(fed.state(1), None, "a Job of its name that another owns is not its Job");
    assert!(fed.index.job(Uuid::from_u128(1), &evaluation_uid(1)).is_none());

    let mut fed = Fed::new();
    let mut stray = running(1);
    stray.metadata.owner_references = Some(vec![owner("batch/v1", "Job", 1, "another-job")]);
    let mut unowned = running(1);
    unowned.metadata.name = Some("labelled-only".into());
    unowned.metadata.owner_references = None;
    for fact in [Fact::Pod(stray), Fact::Pod(unowned), Fact::Job(job(1, json!({"active": 1})))] {
        fed.feed(fact);
    }
    assert_eq!(fed.state(1), Some((State::Pending, None)), "pods the Job does not control are not its pods");
    assert!(!fed.index.has_pod(Uuid::from_u128(1), &evaluation_uid(1)));
    fed.feed(Fact::Pod(running(1)));
    assert_eq!(fed.state(1), Some((State::Running, None)));
}

#[test]
fn only_the_names_of_jobs_and_records_file_them() {
    let id = Uuid::from_u128(7);
    assert_eq!(named_id(&object_name(id)), Some(id));
    assert_eq!(named_id(&format!("lmeval-{id}")), None, "hyphenated: not the name the service gives");
    assert_eq!(named_id(&crate::k8s::input_name(id)), None);
    assert_eq!(named_id("lmeval-"), None);
    assert_eq!(named_id(&object_name(id).to_uppercase()), None);
}
