//! The views fed with Evaluation watch events, as REST-made and kubectl-made objects arrive, change and go.

use serde_json::json;

use super::*;
use crate::backend::Waiting;
use crate::k8s::job::{self, RunnerConfig};
use crate::k8s::resource::EvaluationStatus;
use crate::model::{Progress, Reason};
use crate::validate::json::parse_json;
use serde_json::Value;

const T0: OffsetDateTime = time::macros::datetime!(2026-11-30 12:00 UTC);

fn views() -> Views {
    let mut team = job::site(&RunnerConfig::plain(), "team-a");
    team.default_namespace = true;
    let other = job::site(&RunnerConfig::plain(), "team-b");
    Views::new(HashMap::from([("team-a".to_string(), team), ("team-b".to_string(), other)]), Policy::default())
}

/// An Evaluation as POST makes it: evaluation `n`, accepted `n` minutes after noon.
fn posted(n: u128, extra: Value) -> EvaluationObject {
    let mut body = json!({"model": "dummy", "tasks": ["lmeval_aas_mc"], "labels": {"team": "nlp"}});
    body.as_object_mut().expect("object").extend(extra.as_object().expect("object").clone());
    let request = serde_json::from_value(body).expect("request");
    let created = T0 + time::Duration::minutes(n as i64);
    let evaluation = Evaluation::pending(Uuid::from_u128(n), request, vec![], created);
    let mut object = EvaluationObject::new(&evaluation, "team-a").expect("object");
    object.metadata.annotations.get_or_insert_default().insert(CREATOR_ANNOTATION.into(), "10.0.0.1".into());
    object
}

/// An Evaluation as `kubectl apply` makes it: no id label, a uid.
fn applied(uid: u128, spec: Value) -> EvaluationObject {
    serde_json::from_value(json!({
        "metadata": {"name": format!("mine-{uid}"), "namespace": "team-a", "uid": Uuid::from_u128(uid).to_string(),
                     "creationTimestamp": "2026-11-30T13:00:00Z", "labels": {"owner": "ana"}},
        "spec": spec,
    }))
    .expect("object")
}

fn apply(views: &mut Views, object: EvaluationObject) {
    views.apply("team-a", watcher::Event::Apply(object), &mut None);
}

#[test]
fn a_posted_evaluation_is_pending_with_its_command_until_the_controller_writes_its_status() {
    let mut views = views();
    apply(&mut views, posted(1, json!({"limit": 3})));
    let view = views.view("team-a", Uuid::from_u128(1)).expect("view").evaluation().expect("evaluation");
    assert_eq!((view.state, view.reason), (State::Pending, None));
    assert!(view.command.windows(2).any(|w| w == ["--limit", "3"]), "{:?}", view.command);
    assert_eq!(view.created_at, T0 + time::Duration::minutes(1));
    assert_eq!(view.links.self_, "/api/v1/evaluations/00000000-0000-0000-0000-000000000001");

    let mut running = posted(1, json!({"limit": 3}));
    let mut evaluation = view.clone();
    evaluation.state = State::Running;
    evaluation.progress = Some(Progress { percent: 50.0, completed: 1, total: 2 });
    running.status = Some(EvaluationStatus::of(&evaluation, "lmeval-x", Some(1), None, T0));
    apply(&mut views, running);
    let view = views.view("team-a", Uuid::from_u128(1)).expect("view");
    assert_eq!(view.state, State::Running);
    let view = view.evaluation().expect("evaluation");
    assert_eq!((view.state, view.progress.map(|p| p.completed)), (State::Running, Some(1)));
    assert_eq!(views.pending("10.0.0.1", "team-a"), Waiting::default());
}

#[test]
fn a_kubectl_applied_evaluation_is_known_by_its_uid_and_its_labels() {
    let mut views = views();
    apply(&mut views, applied(9, json!({"model": "dummy", "tasks": ["lmeval_aas_mc"]})));
    let view = views.view("team-a", Uuid::from_u128(9)).expect("known by its uid");
    assert_eq!(view.name, "mine-9");
    let evaluation = view.evaluation().expect("evaluation");
    assert_eq!(evaluation.labels.get("owner").map(String::as_str), Some("ana"), "its own labels count");
    let by_label = ListQuery { page_size: 10, labels: vec![("owner".into(), "ana".into())], ..ListQuery::default() };
    assert_eq!(views.list("team-a", &by_label).expect("list").items.len(), 1);
    assert_eq!(views.name_of("team-a", Uuid::from_u128(9)).as_deref(), Some("mine-9"));
}

#[test]
fn a_spec_the_validator_refuses_is_failed_with_the_same_problem_the_rest_api_gives() {
    let mut views = views();
    for (uid, spec, field) in [
        (1, json!({"model": "dummy", "tasks": ["lmeval_aas_mc"], "bogus": 1}), "bogus"),
        (2, json!({"model": "dummy", "tasks": ["lmeval_aas_mc"], "limit": 0}), "limit"),
        (3, json!({"model": "dummy", "tasks": ["t"], "env": [{"name": "HF_TOKEN", "value": "hf_x"}]}), "env[0].value"),
    ] {
        apply(&mut views, applied(uid, spec.clone()));
        let view = views.view("team-a", Uuid::from_u128(uid)).expect("view").evaluation().expect("evaluation");
        assert_eq!((view.state, view.reason), (State::Failed, Some(Reason::InvalidRequest)));
        let request = parse_json::<EvaluationRequest>(spec.to_string().as_bytes())
            .and_then(|r| crate::validate::ValidRequest::parse(r, &Policy::default()).map(|_| ()));
        let problem = request.expect_err("refused by REST too").problem();
        assert_eq!(view.message.as_deref(), Some(problem.detail.as_str()), "{field}");
        assert_eq!(
            view.request.tasks,
            spec["tasks"]
                .as_array()
                .expect("tasks")
                .iter()
                .map(|t| t.as_str().unwrap_or_default().to_string())
                .collect::<Vec<_>>()
        );
    }
}

#[test]
fn lists_pending_counts_deletions_and_relists() {
    let mut views = views();
    for n in 1..=3 {
        apply(&mut views, posted(n, json!({})));
    }
    let all = ListQuery { page_size: 10, ..ListQuery::default() };
    let ids: Vec<u128> = views.list("team-a", &all).expect("list").items.iter().map(|e| e.id.as_u128()).collect();
    assert_eq!(ids, [3, 2, 1], "newest first");
    assert_eq!(views.pending("10.0.0.1", "team-a"), Waiting { all: 3, of_creator: 3, in_namespace: 3 });
    assert_eq!(views.pending("10.0.0.2", "team-b"), Waiting { all: 3, of_creator: 0, in_namespace: 0 });
    views.apply("team-a", watcher::Event::Delete(posted(2, json!({}))), &mut None);
    assert!(views.view("team-a", Uuid::from_u128(2)).is_err());

    let mut relist = None;
    views.apply("team-a", watcher::Event::Init, &mut relist);
    views.apply("team-a", watcher::Event::InitApply(posted(3, json!({}))), &mut relist);
    assert!(views.apply("team-a", watcher::Event::InitDone, &mut relist), "a finished relist means synced");
    assert!(views.view("team-a", Uuid::from_u128(1)).is_err(), "gone while the watch was away");
    assert!(views.view("team-b", Uuid::from_u128(3)).is_err(), "each namespace its own");
    assert!(matches!(views.list("team-c", &all), Err(ApiError::NamespaceNotServed(_))));
    assert_eq!(crate::backend::count_by_state(views.states())[&State::Pending], 1);
}

#[test]
fn what_was_pending_before_an_evaluation_is_what_its_creation_is_judged_by() {
    let mut views = views();
    for n in 1..=3 {
        apply(&mut views, posted(n, json!({})));
    }
    let mut other = posted(4, json!({}));
    other.metadata.annotations.get_or_insert_default().insert(CREATOR_ANNOTATION.into(), "10.0.0.2".into());
    apply(&mut views, other);
    let ahead = |n| views.pending_ahead_of("team-a", Uuid::from_u128(n));
    assert_eq!(ahead(1), Some(Waiting::default()), "the first one had nothing ahead of it");
    assert_eq!(ahead(3), Some(Waiting { all: 2, of_creator: 2, in_namespace: 2 }));
    assert_eq!(ahead(4), Some(Waiting { all: 3, of_creator: 0, in_namespace: 3 }), "another creator's");
    assert_eq!(ahead(9), None, "not in the cache yet");
    let limits = crate::backend::PendingLimits { total: 10, per_creator: 2, per_namespace: 10 };
    assert!(limits.admit_one_more(ahead(2).expect("known"), "team-a").is_ok());
    assert!(limits.admit_one_more(ahead(3).expect("known"), "team-a").is_err(), "the third of one creator");
}
