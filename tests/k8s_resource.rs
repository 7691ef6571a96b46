//! Evaluations as Kubernetes resources on the real test cluster: kubectl and the REST API act on the same
//! Evaluation objects; the admission webhook refuses with the validator's message; the controller refuses what
//! slipped past it; leader election hands over mid-run; 200 objects at once; Jobs of the previous release.

mod common;

use std::io::BufReader;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::cluster::TestNamespace;
use common::{client, submit, wait_for, wait_for_async, wait_terminal, wait_until};
use serde_json::{Value, json};

const LEADER: &str = "leader: this replica reconciles evaluations";

/// The leader test measures a handover and the 200-object test loads the API server: not at the same time.
static TIMING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn object_name(id: &str) -> String {
    format!("lmeval-{}", id.replace('-', ""))
}

/// An Evaluation manifest (JSON is YAML) whose spec is `spec`.
fn manifest(name: &str, spec: &Value) -> String {
    json!({"apiVersion": "lm-eval-aas.io/v1alpha1", "kind": "Evaluation", "metadata": {"name": name}, "spec": spec})
        .to_string()
}

fn stderr(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// `kubectl get lmeval NAME -o json`, or `None` once it is gone.
fn object(ns: &TestNamespace, name: &str) -> Option<Value> {
    let output = ns.kubectl(&["get", "lmeval", name, "-o", "json"]);
    if !output.status.success() {
        assert!(stderr(&output).contains("NotFound"), "kubectl get lmeval {name}: {}", stderr(&output));
        return None;
    }
    Some(serde_json::from_slice(&output.stdout).expect("JSON"))
}

/// Polls the object until `done` holds for it.
fn wait_object(ns: &TestNamespace, name: &str, timeout: Duration, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    wait_for(timeout, || object(ns, name).filter(|o| done(o)))
        .unwrap_or_else(|| panic!("Evaluation {name}: no {what} in {timeout:?}; last: {:?}", object(ns, name)))
}

fn terminal(object: &Value) -> bool {
    matches!(object["status"]["state"].as_str(), Some("succeeded" | "failed" | "cancelled"))
}

/// `kubectl get lmeval --watch -o json` of the namespace: every version of every Evaluation, as it is seen.
struct Watch {
    child: Child,
    seen: Arc<Mutex<Vec<(Instant, Value)>>>,
}

impl Watch {
    fn start(ns: &TestNamespace) -> Self {
        let mut child = Command::new(&ns.env["KUBECTL"])
            .env("KUBECONFIG", &ns.env["KUBECONFIG"])
            .args(["-n", &ns.name, "get", "lmeval", "--watch", "-o", "json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("kubectl get --watch");
        let stdout = child.stdout.take().expect("stdout");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&seen);
        std::thread::spawn(move || {
            let values = serde_json::Deserializer::from_reader(BufReader::new(stdout)).into_iter::<Value>();
            for value in values.map_while(Result::ok) {
                sink.lock().expect("watch log").push((Instant::now(), value));
            }
        });
        Self { child, seen }
    }

    /// The versions of object `name` seen so far, in order (the initial list included).
    fn versions(&self, name: &str) -> Vec<(Instant, Value)> {
        let seen = self.seen.lock().expect("watch log");
        seen.iter().filter(|(_, o)| o["metadata"]["name"] == name).cloned().collect()
    }

    fn all(&self) -> Vec<(Instant, Value)> {
        self.seen.lock().expect("watch log").clone()
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// kubectl apply → REST sees it (by its uid), runs it to `succeeded` (kubectl, REST GET, the web UI's list
/// agree; labels, links, conditions, Events); REST POST → kubectl sees it; cancel and delete from either
/// side are seen on the other.
#[tokio::test(flavor = "multi_thread")]
async fn kubectl_and_rest_act_on_the_same_evaluations() {
    let Some(ns) = TestNamespace::create("views") else { return };
    let service = ns.service_with_webhook(&[]);
    let spec = json!({"model": "dummy", "tasks": ["lmeval_aas_mc"], "limit": 2, "labels": {"team": "nlp"}});
    let applied = ns.kubectl_apply(&manifest("from-kubectl", &spec));
    assert!(applied.status.success(), "kubectl apply: {}", stderr(&applied));
    let uid = object(&ns, "from-kubectl").expect("created")["metadata"]["uid"].as_str().expect("uid").to_string();

    // REST knows it by its uid, on the un-namespaced and the namespaced routes.
    let done = wait_terminal(&service, &uid).await;
    assert_eq!(done["state"], "succeeded", "{done}\n{}", service.log_text());
    assert_eq!(done["request"], spec, "the spec is the request");
    assert_eq!(done["links"]["self"], format!("/api/v1/evaluations/{uid}"));
    let namespaced = client()
        .get(service.url(&format!("/api/v1/namespaces/{}/evaluations/{uid}", ns.name)))
        .send()
        .await
        .expect("GET");
    assert_eq!(namespaced.status(), 200);
    assert_eq!(namespaced.json::<Value>().await.expect("json")["state"], "succeeded");
    // The web UI's list is GET /api/v1/evaluations (ui/api.js), with a label filter here.
    let listed: Value = client()
        .get(service.url("/api/v1/evaluations?label=team=nlp"))
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    assert!(
        listed["items"].as_array().expect("items").iter().any(|e| e["id"] == uid.as_str() && e["state"] == "succeeded")
    );

    let seen = wait_object(&ns, "from-kubectl", Duration::from_secs(10), "succeeded status", |o| {
        o["status"]["state"] == "succeeded"
    });
    let status = &seen["status"];
    assert_eq!(status["observedGeneration"], seen["metadata"]["generation"]);
    assert_eq!(status["jobName"], object_name(&uid));
    assert_eq!(status["links"]["self"], format!("/api/v1/evaluations/{uid}"));
    assert_eq!(status["progress"]["percent"], 100.0);
    assert!(status["metrics"].as_array().is_some_and(|m| !m.is_empty()), "{status}");
    let condition = |type_: &str| {
        status["conditions"].as_array().and_then(|c| c.iter().find(|c| c["type"] == type_).cloned()).unwrap_or_default()
    };
    assert_eq!(condition("Accepted")["status"], "True", "{status}");
    assert_eq!(condition("Succeeded")["status"], "True", "{status}");
    assert_eq!(seen["metadata"]["labels"]["team"], "nlp", "the request's labels are the object's");
    assert_eq!(seen["metadata"]["labels"]["lm-eval-aas.io/evaluation-id"], uid.as_str());
    let by_label = ns.kubectl_json(&["get", "lmeval", "-l", "team=nlp"]);
    assert_eq!(by_label["items"].as_array().map(Vec::len), Some(1), "kubectl get -l team=nlp");
    let events = ns.kubectl_json(&["get", "events", "--field-selector", "involvedObject.name=from-kubectl"]);
    let reasons: Vec<&str> =
        events["items"].as_array().expect("events").iter().filter_map(|e| e["reason"].as_str()).collect();
    for reason in ["JobCreated", "Started", "Succeeded"] {
        assert!(reasons.contains(&reason), "Event {reason} among {reasons:?}");
    }
    let described = ns.kubectl(&["describe", "lmeval", "from-kubectl"]);
    let described = String::from_utf8_lossy(&described.stdout);
    assert!(described.contains("Conditions") && described.contains("JobCreated"), "{described}");

    // REST POST → an Evaluation named after the id; kubectl sees it with the same spec.
    let posted = submit(&service, json!({"model": "dummy", "tasks": ["lmeval_aas_mc"], "limit": 1})).await;
    let posted_id = posted["id"].as_str().expect("id").to_string();
    let made = object(&ns, &object_name(&posted_id)).expect("kubectl get the POSTed evaluation");
    assert_eq!(made["spec"], json!({"model": "dummy", "tasks": ["lmeval_aas_mc"], "limit": 1}));
    assert_eq!(made["metadata"]["labels"]["lm-eval-aas.io/evaluation-id"], posted_id.as_str());

    // Cancel from kubectl → REST says cancelled; cancel from REST → kubectl says cancelled.
    let slow = json!({"model": "dummy", "tasks": ["lmeval_aas_slow"], "limit": 2000});
    assert!(ns.kubectl_apply(&manifest("slow-kubectl", &slow)).status.success());
    let slow_uid = object(&ns, "slow-kubectl").expect("created")["metadata"]["uid"].as_str().expect("uid").to_string();
    wait_until(&service, &slow_uid, Duration::from_secs(120), "running", |e| e["state"] == "running").await;
    let annotated = ns.kubectl(&["annotate", "lmeval", "slow-kubectl", "lm-eval-aas.io/cancel=true"]);
    assert!(annotated.status.success(), "{}", stderr(&annotated));
    let cancelled = wait_terminal(&service, &slow_uid).await;
    assert_eq!(cancelled["state"], "cancelled", "{cancelled}");

    let slow_posted = submit(&service, slow.clone()).await;
    let slow_id = slow_posted["id"].as_str().expect("id").to_string();
    wait_until(&service, &slow_id, Duration::from_secs(120), "running", |e| e["state"] == "running").await;
    let response =
        client().post(service.url(&format!("/api/v1/evaluations/{slow_id}/cancel"))).send().await.expect("cancel");
    assert_eq!(response.status(), 202);
    wait_object(&ns, &object_name(&slow_id), Duration::from_secs(60), "cancelled status", |o| {
        o["status"]["state"] == "cancelled"
    });

    // Delete from kubectl → REST 404, and its Job goes with it; delete from REST → kubectl NotFound.
    let deleted = ns.kubectl(&["delete", "lmeval", "from-kubectl", "--wait=true"]);
    assert!(deleted.status.success(), "{}", stderr(&deleted));
    let gone = wait_for_async(Duration::from_secs(10), || async {
        let status = client().get(service.url(&format!("/api/v1/evaluations/{uid}"))).send().await.ok()?.status();
        (status == 404).then_some(())
    })
    .await;
    assert!(gone.is_some(), "REST still answers for an Evaluation deleted with kubectl");
    let job_gone = wait_for(Duration::from_secs(60), || {
        let output = ns.kubectl(&["get", "job", &object_name(&uid), "--ignore-not-found", "-o", "name"]);
        output.stdout.is_empty().then_some(())
    });
    assert!(job_gone.is_some(), "the Job is deleted with its Evaluation (owner reference)");
    let response =
        client().delete(service.url(&format!("/api/v1/evaluations/{posted_id}"))).send().await.expect("DELETE");
    assert_eq!(response.status(), 204);
    assert!(
        wait_for(Duration::from_secs(30), || object(&ns, &object_name(&posted_id)).is_none().then_some(())).is_some(),
        "kubectl still shows an Evaluation deleted with REST"
    );
}

/// A spec the REST API refuses is refused by `kubectl apply` with the same detail, and never stored; the spec
/// of a stored Evaluation cannot be changed.
#[tokio::test(flavor = "multi_thread")]
async fn kubectl_apply_of_a_spec_rest_refuses_fails_with_the_same_detail() {
    let Some(ns) = TestNamespace::create("admit") else { return };
    let service = ns.service_with_webhook(&[]);
    let invalid = [
        ("unknown-field", json!({"model": "dummy", "tasks": ["lmeval_aas_mc"], "temperature": 0.5})),
        ("bad-limit", json!({"model": "dummy", "tasks": ["lmeval_aas_mc"], "limit": -3})),
        (
            "secret-value",
            json!({"model": "dummy", "tasks": ["lmeval_aas_mc"], "env": [{"name": "HF_TOKEN", "value": "hf_s3cr3t"}]}),
        ),
    ];
    for (name, spec) in invalid {
        let response = client().post(service.url("/api/v1/evaluations")).json(&spec).send().await.expect("POST");
        let status = response.status().as_u16();
        assert!((400..500).contains(&status), "{name}: POST answered {status}");
        let problem: Value = response.json().await.expect("problem");
        let detail = problem["detail"].as_str().expect("detail");

        let applied = ns.kubectl_apply(&manifest(name, &spec));
        assert!(!applied.status.success(), "{name}: kubectl apply succeeded");
        let message = stderr(&applied);
        assert!(message.contains(detail), "{name}: kubectl said {message:?}; POST's detail is {detail:?}");
        assert!(!message.contains("hf_s3cr3t"), "{name}: the refusal repeats the secret value");
        assert!(object(&ns, name).is_none(), "{name}: a refused Evaluation was stored");
    }
    assert!(!service.log_text().contains("hf_s3cr3t"), "the service logged the secret value");

    let spec = json!({"model": "dummy", "tasks": ["lmeval_aas_mc"], "limit": 1});
    assert!(ns.kubectl_apply(&manifest("fixed", &spec)).status.success());
    let changed =
        ns.kubectl_apply(&manifest("fixed", &json!({"model": "dummy", "tasks": ["lmeval_aas_mc"], "limit": 2})));
    assert!(!changed.status.success(), "a stored spec was changed");
    assert!(stderr(&changed).contains("immutable"), "{}", stderr(&changed));
    // Annotations and labels may change (that is how kubectl cancels).
    let labelled = ns.kubectl(&["label", "lmeval", "fixed", "reviewed=yes"]);
    assert!(labelled.status.success(), "{}", stderr(&labelled));
}

/// With no webhook in the way (it is unreachable, or not installed), the controller refuses the object itself:
/// `failed`, reason `InvalidRequest`, the problem's detail in `status.message`; REST shows the same.
#[tokio::test(flavor = "multi_thread")]
async fn without_the_webhook_the_controller_fails_an_invalid_evaluation_with_its_problem() {
    let Some(ns) = TestNamespace::create("refuse") else { return };
    let service = ns.service(&[]);
    let spec = json!({"model": "dummy", "tasks": ["lmeval_aas_mc"], "limit": -3});
    let problem: Value = client()
        .post(service.url("/api/v1/evaluations"))
        .json(&spec)
        .send()
        .await
        .expect("POST")
        .json()
        .await
        .expect("json");
    let detail = problem["detail"].as_str().expect("detail").to_string();

    let applied = ns.kubectl_apply(&manifest("unchecked", &spec));
    assert!(applied.status.success(), "no webhook: stored ({})", stderr(&applied));
    let refused = wait_object(&ns, "unchecked", Duration::from_secs(30), "a verdict", terminal);
    assert_eq!(refused["status"]["state"], "failed", "{refused}");
    assert_eq!(refused["status"]["reason"], "InvalidRequest", "{refused}");
    assert_eq!(refused["status"]["message"], detail.as_str(), "{refused}");
    let uid = refused["metadata"]["uid"].as_str().expect("uid");
    let seen = common::evaluation(&service, uid).await;
    assert_eq!((seen["state"].as_str(), seen["reason"].as_str()), (Some("failed"), Some("InvalidRequest")));
    assert_eq!(seen["message"], detail.as_str());
    let jobs = ns.kubectl_json(&["get", "jobs"]);
    assert_eq!(jobs["items"].as_array().map(Vec::len), Some(0), "no Job for a refused spec");
}

/// Two replicas, the leader `kill -9`ed mid-run: the other takes over within the lease duration, the
/// evaluation finishes with its status still moving, nothing starts twice; while running, its status is
/// written at most once every 2 s.
#[tokio::test(flavor = "multi_thread")]
async fn when_the_leader_dies_mid_run_another_replica_finishes_the_evaluation() {
    let Some(ns) = TestNamespace::create("leader") else { return };
    let _alone = TIMING.lock().await;
    let lease = Duration::from_secs(4);
    let mut a = ns.service(&["--leader-lease-seconds", "4"]);
    let mut b = ns.service(&["--leader-lease-seconds", "4"]);
    let first = wait_for(Duration::from_secs(30), || {
        if a.logged(LEADER) { Some(true) } else { b.logged(LEADER).then_some(false) }
    })
    .expect("a leader within 30 s");
    let (leader, follower) = if first { (&mut a, &mut b) } else { (&mut b, &mut a) };
    assert!(!follower.logged(LEADER), "exactly one replica leads");

    let watch = Watch::start(&ns);
    let created = submit(follower, json!({"model": "dummy", "tasks": ["lmeval_aas_slow"], "limit": 300})).await;
    let id = created["id"].as_str().expect("id").to_string();
    let name = object_name(&id);
    let before = wait_until(follower, &id, Duration::from_secs(120), "progress", |e| {
        e["state"] == "running" && e["progress"]["completed"].as_u64().is_some_and(|n| n > 20)
    })
    .await;
    leader.kill9();
    let killed = Instant::now();
    let took_over = wait_for(lease * 3, || follower.logged(LEADER).then(Instant::now)).expect("a new leader");
    let handover = took_over - killed;
    assert!(handover <= lease + Duration::from_millis(1500), "took over {handover:?} after the leader died");

    let done = wait_terminal(follower, &id).await;
    assert_eq!(done["state"], "succeeded", "{done}\n{}", follower.log_text());
    let versions = watch.versions(&name);
    let percent = |o: &Value| o["status"]["progress"]["percent"].as_f64().unwrap_or(0.0);
    let last_before = versions.iter().filter(|(at, _)| *at < killed).map(|(_, o)| percent(o)).fold(0.0, f64::max);
    let moving_after = versions
        .iter()
        .filter(|(at, o)| *at > took_over && o["status"]["state"] == "running" && percent(o) > last_before)
        .count();
    assert!(moving_after >= 1, "no progress written after the handover (before: {before}; last seen {last_before}%)");
    // Status writes while running are at least 2 s apart (the watch sees them with some jitter).
    let running: Vec<Instant> = versions
        .iter()
        .filter(|(at, o)| o["status"]["state"] == "running" && (*at < killed || *at > took_over))
        .map(|(at, _)| *at)
        .collect();
    for pair in running.windows(2) {
        let gap = pair[1] - pair[0];
        let spans_handover = pair[0] < killed && pair[1] > took_over;
        assert!(spans_handover || gap >= Duration::from_millis(1500), "two running status writes {gap:?} apart");
    }
    let jobs = ns.kubectl_json(&["get", "jobs", "-l", &format!("lm-eval-aas.io/evaluation-id={id}")]);
    assert_eq!(jobs["items"].as_array().map(Vec::len), Some(1), "one Job");
    let pods = ns.kubectl_json(&["get", "pods", "-l", &format!("lm-eval-aas.io/evaluation-id={id}")]);
    assert_eq!(pods["items"].as_array().map(Vec::len), Some(1), "started once");
}

/// 200 Evaluations in one `kubectl apply`: every one gets its Job and reaches a terminal state, each with a
/// handful of status writes (runner pods are kept unschedulable so nothing runs: each fails on its deadline).
#[tokio::test(flavor = "multi_thread")]
async fn two_hundred_evaluations_applied_at_once_all_end() {
    let Some(ns) = TestNamespace::create("many") else { return };
    let _alone = TIMING.lock().await;
    let _service =
        ns.service(&["--runner-node-selector", "lm-eval-aas.io/test=never", "--stuck-after-seconds", "3600"]);
    let watch = Watch::start(&ns);
    let spec = json!({"model": "dummy", "tasks": ["lmeval_aas_mc"], "limit": 1, "timeout_seconds": 5});
    let manifests: Vec<String> = (0..200).map(|i| manifest(&format!("many-{i:03}"), &spec)).collect();
    let started = Instant::now();
    let applied = ns.kubectl_apply(&manifests.join("\n---\n"));
    assert!(applied.status.success(), "{}", stderr(&applied));

    let all_ended = wait_for(Duration::from_secs(300), || {
        let list = ns.kubectl_json(&["get", "lmeval"]);
        let items = list["items"].as_array()?.clone();
        (items.len() == 200 && items.iter().all(terminal)).then_some(items)
    });
    let elapsed = started.elapsed();
    let items = all_ended.unwrap_or_else(|| panic!("not all 200 ended in 300 s; {:?}", watch.all().len()));
    for item in &items {
        let status = &item["status"];
        assert_eq!((status["state"].as_str(), status["reason"].as_str()), (Some("failed"), Some("Timeout")), "{item}");
        assert!(status["jobName"].is_string(), "{item}");
    }
    let jobs = ns.kubectl_json(&["get", "jobs"]);
    assert_eq!(jobs["items"].as_array().map(Vec::len), Some(200));
    // Each object: created, labelled with its id, then a status per state the facts moved through
    // (pending, pending with the scheduler's reason, failed): no more.
    let mut most = 0;
    for i in 0..200 {
        let versions = watch.versions(&format!("many-{i:03}")).len();
        most = most.max(versions);
        if versions > 5 {
            let states: Vec<String> = watch
                .versions(&format!("many-{i:03}"))
                .iter()
                .map(|(_, o)| {
                    format!("{} {} {}", o["metadata"]["resourceVersion"], o["metadata"]["labels"], o["status"])
                })
                .collect();
            panic!("many-{i:03} was written {versions} times:\n{}", states.join("\n"));
        }
    }
    println!("200 Evaluations ended in {elapsed:?}; at most {most} versions of one object");
}

/// Upgrade: a Job made by the previous release (no Evaluation object; its evaluation, without the namespace
/// this release adds, in its annotation) is adopted: an Evaluation owns it, REST serves it, it finishes.
#[tokio::test(flavor = "multi_thread")]
async fn a_job_of_the_previous_release_is_adopted_and_served() {
    let Some(ns) = TestNamespace::create("upgrade") else { return };
    let body = json!({"model": "dummy", "tasks": ["lmeval_aas_mc"], "limit": 2});
    let dry_run: Value = {
        let service = ns.service(&["--leader-lease-seconds", "2"]);
        let response =
            client().post(service.url("/api/v1/evaluations?dry_run=true")).json(&body).send().await.expect("POST");
        assert_eq!(response.status(), 200);
        response.json().await.expect("json")
    };
    // The dry run shows the Evaluation and the Job it would create, and creates neither.
    let evaluation_object = &dry_run["objects"]["evaluation"];
    assert_eq!(evaluation_object["kind"], "Evaluation");
    assert_eq!(evaluation_object["spec"], body);
    let mut job = dry_run["objects"]["job"].clone();
    assert_eq!(job["kind"], "Job");
    assert!(ns.kubectl_json(&["get", "lmeval,jobs"])["items"].as_array().is_some_and(Vec::is_empty));

    // The Job as the previous release wrote it.
    let id = dry_run["id"].as_str().expect("id").to_string();
    let annotations = &mut job["metadata"]["annotations"];
    let mut recorded: Value =
        serde_json::from_str(annotations["lm-eval-aas.io/evaluation"].as_str().expect("annotation")).expect("JSON");
    recorded.as_object_mut().expect("object").remove("namespace");
    annotations["lm-eval-aas.io/evaluation"] = Value::String(recorded.to_string());
    assert!(job["metadata"].get("ownerReferences").is_none());
    let created = ns.kubectl_with_input(&["create", "-f", "-"], &job.to_string());
    assert!(created.status.success(), "kubectl create the old Job: {}", stderr(&created));

    let service = ns.service(&["--leader-lease-seconds", "2"]);
    let done = wait_terminal(&service, &id).await;
    assert_eq!(done["state"], "succeeded", "{done}\n{}", service.log_text());
    assert_eq!(done["request"], body);
    let adopted = wait_object(&ns, &object_name(&id), Duration::from_secs(30), "succeeded status", |o| {
        o["status"]["state"] == "succeeded"
    });
    let owners = ns.kubectl_json(&["get", "job", &object_name(&id)])["metadata"]["ownerReferences"].clone();
    assert_eq!(owners[0]["kind"], "Evaluation", "{owners}");
    assert_eq!(owners[0]["uid"], adopted["metadata"]["uid"]);
    let results =
        client().get(service.url(&format!("/api/v1/evaluations/{id}/results"))).send().await.expect("results");
    assert_eq!(results.status(), 200);
}
