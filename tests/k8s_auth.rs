//! Who may do what, on the real cluster: users are ServiceAccount tokens (`scripts/k8s-dev user`) bound to the
//! shipped ClusterRoles in two tenant namespaces served by one service with `--auth kubernetes`; the service asks
//! the API server (TokenReview, SubjectAccessReview) and answers 401, 403 or 404 as RBAC says.

mod common;

use std::time::Duration;

use common::cluster::TestNamespace;
use common::{client, wait_for_async};
use serde_json::{Value, json};

struct Call<'a> {
    who: &'a str,
    token: Option<&'a str>,
    method: reqwest::Method,
    path: String,
    body: Option<Value>,
}

async fn call(service: &common::Service, call: &Call<'_>) -> (u16, Value) {
    let mut request = client().request(call.method.clone(), service.url(&call.path));
    if let Some(token) = call.token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = &call.body {
        request = request.json(body);
    }
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    let text = response.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

/// SubjectAccessReviews the service has sent, by its `lmeval_kube_api_requests_total` (on `--metrics-listen`).
async fn reviews(service: &common::Service) -> u64 {
    let port = common::wait_for(Duration::from_secs(10), || service.logged_port("metrics listening"))
        .expect("a metrics listener");
    let text = client().get(format!("http://127.0.0.1:{port}/metrics")).send().await.expect("GET /metrics");
    let text = text.text().await.expect("metrics");
    text.lines()
        .find_map(|l| {
            l.strip_prefix(r#"lmeval_kube_api_requests_total{verb="create",resource="subjectaccessreviews"} "#)
        })
        .map_or(0, |n| n.trim().parse().expect("a count"))
}

#[tokio::test(flavor = "multi_thread")]
async fn rbac_decides_every_request_and_tenants_stay_apart() {
    let Some(a) = TestNamespace::create("team-a") else { return };
    let b = TestNamespace::create("team-b").expect("second namespace");
    a.k8s_dev(&["serve-in", &b.name, &a.name]);
    let service = a.service(&[
        "--auth",
        "kubernetes",
        "--namespaces",
        &b.name,
        "--auth-token-cache-seconds",
        "2",
        "--auth-decision-cache-seconds",
        "2",
        "--metrics-listen",
        "127.0.0.1:0",
    ]);
    let tag = &a.name[a.name.len() - 6..];
    let user = |name: &str, namespace: &str, role: &str| {
        let name = format!("{name}-{tag}");
        let token = a.k8s_dev(&["user", &name, namespace, role]);
        assert!(token.len() > 20 && !token.contains('\n'), "one token on stdout: {token:?}");
        (format!("system:serviceaccount:lm-eval-aas-users:{name}"), token)
    };
    let (_, alice) = user("alice", &a.name, "editor");
    let (vera_name, vera) = user("vera", &a.name, "viewer");
    let (_, bob) = user("bob", &b.name, "editor");
    let (_, ada) = user("ada", &a.name, "admin");
    let leak = |token: String| -> &'static str { Box::leak(token.into_boxed_str()) };
    let (alice, vera, bob, ada) = (leak(alice), leak(vera), leak(bob), leak(ada));
    let (_, ada_again) = user("ada", &b.name, "viewer");
    assert!(!ada_again.is_empty());

    let spec = json!({"model": "dummy", "tasks": ["lmeval_aas_mc"], "limit": 1});
    let in_a = format!("/api/v1/namespaces/{}/evaluations", a.name);
    let in_b = format!("/api/v1/namespaces/{}/evaluations", b.name);
    let create = |who: &'static str, token: &'static str, at: &str| Call {
        who,
        token: Some(token),
        method: reqwest::Method::POST,
        path: at.to_string(),
        body: Some(spec.clone()),
    };
    let (status, evaluation_a) = call(&service, &create("alice", alice, &in_a)).await;
    assert_eq!(status, 202, "{evaluation_a}");
    assert_eq!(evaluation_a["created_by"], format!("system:serviceaccount:lm-eval-aas-users:alice-{tag}"));
    let (status, evaluation_b) = call(&service, &create("bob", bob, &in_b)).await;
    assert_eq!(status, 202, "{evaluation_b}");
    let (ea, eb) = (evaluation_a["id"].as_str().expect("id"), evaluation_b["id"].as_str().expect("id"));

    use reqwest::Method as M;
    let get = |who: &'static str, token: Option<&'static str>, path: String| Call {
        who,
        token,
        method: M::GET,
        path,
        body: None,
    };
    let cases: Vec<(Call, u16)> = vec![
        (get("nobody", None, in_a.clone()), 401),
        (get("garbage", Some("not-a-token"), in_a.clone()), 401),
        (get("garbage", Some("eyJhbGciOiJSUzI1NiJ9.e30.c2ln"), format!("{in_a}/{ea}")), 401),
        (Call { token: None, ..create("nobody", "", &in_a) }, 401),
        (get("nobody", None, "/list_jobs".into()), 401),
        (get("nobody", None, "/metrics".into()), 401),
        (get("nobody", None, "/healthz".into()), 200),
        (get("alice", Some(alice), in_a.clone()), 200),
        (get("alice", Some(alice), format!("{in_a}/{ea}")), 200),
        (get("alice", Some(alice), format!("{in_a}/{ea}/results")), 409),
        (get("alice", Some(alice), in_b.clone()), 403),
        (get("alice", Some(alice), format!("{in_b}/{eb}")), 403),
        (get("alice", Some(alice), format!("{in_a}/{eb}")), 404),
        (get("alice", Some(alice), format!("/api/v1/evaluations/{eb}")), 404),
        (get("alice", Some(alice), format!("{in_b}/{eb}/logs")), 403),
        (create("alice", alice, &in_b), 403),
        (get("alice", Some(alice), "/list_jobs".into()), 200),
        (get("alice", Some(alice), "/metrics".into()), 403),
        (get("vera", Some(vera), in_a.clone()), 200),
        (get("vera", Some(vera), format!("{in_a}/{ea}")), 200),
        (get("vera", Some(vera), format!("/api/v1/evaluations/{ea}")), 200),
        (get("vera", Some(vera), format!("{in_a}/{ea}/results")), 409),
        (create("vera", vera, &in_a), 403),
        (Call { method: M::POST, ..get("vera", Some(vera), format!("{in_a}/{ea}/cancel")) }, 403),
        (Call { method: M::DELETE, ..get("vera", Some(vera), format!("{in_a}/{ea}")) }, 403),
        (Call { method: M::DELETE, ..get("vera", Some(vera), format!("/cancel_job?task_id={ea}")) }, 403),
        (get("bob", Some(bob), format!("{in_b}/{eb}")), 200),
        (get("bob", Some(bob), in_a.clone()), 403),
        (get("bob", Some(bob), format!("{in_a}/{ea}")), 403),
        (Call { method: M::POST, ..get("bob", Some(bob), format!("{in_a}/{ea}/cancel")) }, 403),
        (get("bob", Some(bob), "/list_jobs".into()), 403),
        (get("ada", Some(ada), in_b.clone()), 200),
        (get("ada", Some(ada), format!("{in_b}/{eb}")), 200),
        (create("ada", ada, &in_b), 403),
        (create("ada", ada, &in_a), 202),
    ];
    assert!(cases.len() >= 25);
    let mut wrong = Vec::new();
    for (case, expected) in &cases {
        let (status, body) = call(&service, case).await;
        if status != *expected {
            wrong.push(format!("{} {} {} → {status}, want {expected}: {body}", case.who, case.method, case.path));
        }
        if status == 401 {
            assert_eq!(body["type"], "urn:lm-eval-aas:problem:unauthenticated", "{body}");
        }
    }
    assert!(wrong.is_empty(), "{} of {} cases wrong:\n{}", wrong.len(), cases.len(), wrong.join("\n"));

    // A namespace the service does not serve is 404 before anything is reviewed: made-up namespaces cost the
    // API server no SubjectAccessReview (authentication still comes first).
    let before = reviews(&service).await;
    let (status, _) = call(&service, &get("alice", Some(alice), format!("{in_b}/{eb}/results"))).await;
    assert_eq!(status, 403);
    let reviewed = reviews(&service).await;
    assert!(reviewed > before, "a new question is a SubjectAccessReview, counted ({before} → {reviewed})");
    for i in 0..5 {
        let unserved = format!("/api/v1/namespaces/not-served-{tag}-{i}/evaluations");
        for (case, expected) in [
            (get("alice", Some(alice), unserved.clone()), 404),
            (get("alice", Some(alice), format!("{unserved}/{ea}")), 404),
            (Call { method: M::DELETE, ..get("alice", Some(alice), format!("{unserved}/{ea}")) }, 404),
            (create("alice", alice, &unserved), 404),
            (get("nobody", None, unserved.clone()), 401),
        ] {
            let (status, problem) = call(&service, &case).await;
            assert_eq!(status, expected, "{} {} {}: {problem}", case.who, case.method, case.path);
            if status == 404 {
                assert_eq!(problem["type"], "urn:lm-eval-aas:problem:namespace-not-served", "{problem}");
            }
        }
    }
    assert_eq!(reviews(&service).await, reviewed, "no SubjectAccessReview for a namespace not served");

    // The Flask list is what the caller may list: alice, editor in the default namespace only, sees its
    // evaluations and none of the other namespace's; bob, who may list only there, is refused (above).
    let (status, jobs) = call(&service, &get("alice", Some(alice), "/list_jobs".into())).await;
    assert_eq!(status, 200, "{jobs}");
    let listed: Vec<&str> = jobs.as_array().expect("a list").iter().filter_map(|j| j["task_id"].as_str()).collect();
    assert!(listed.contains(&ea) && !listed.contains(&eb), "alice's /list_jobs: {listed:?} (hers {ea}, bob's {eb})");

    // Behind OpenShift's oauth-proxy the user's token comes in X-Forwarded-Access-Token, reviewed the same way.
    let forwarded = |token: &str, path: &str| {
        client().get(service.url(path)).header("X-Forwarded-Access-Token", token.to_string()).send()
    };
    assert_eq!(forwarded(vera, &in_a).await.expect("GET").status(), 200);
    assert_eq!(forwarded(vera, &in_b).await.expect("GET").status(), 403);
    assert_eq!(forwarded("not-a-token", &in_a).await.expect("GET").status(), 401);

    // A list over every served namespace holds only the namespaces the caller may list.
    let namespaces_seen = |token: &'static str| {
        let service = &service;
        async move {
            let list = get("lister", Some(token), "/api/v1/evaluations?all_namespaces=true&page_size=500".into());
            let (status, page) = call(service, &list).await;
            assert_eq!(status, 200, "{page}");
            let mut seen: Vec<String> = page["items"]
                .as_array()
                .expect("items")
                .iter()
                .map(|e| e["namespace"].as_str().expect("namespace").to_string())
                .collect();
            seen.sort();
            seen.dedup();
            seen
        }
    };
    assert_eq!(namespaces_seen(alice).await, vec![a.name.clone()]);
    assert_eq!(namespaces_seen(bob).await, vec![b.name.clone()]);
    let mut both = vec![a.name.clone(), b.name.clone()];
    both.sort();
    assert_eq!(namespaces_seen(ada).await, both, "ada may list in both");

    // A denial names who, what and where; it is audited.
    let (status, problem) = call(&service, &create("vera", vera, &in_a)).await;
    assert_eq!(status, 403);
    assert_eq!(
        problem["detail"],
        format!("user {vera_name} cannot create evaluations.lm-eval-aas.io in namespace {}", a.name)
    );
    let audited = common::wait_for(Duration::from_secs(5), || {
        service
            .log_text()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .any(|l| l["message"] == "audit" && l["user"] == vera_name.as_str() && l["outcome"] == "denied")
            .then_some(())
    });
    assert!(audited.is_some(), "no audit line for the denial:\n{}", service.log_text());

    // The writes the roles allow.
    let (status, _) =
        call(&service, &Call { method: M::POST, ..get("alice", Some(alice), format!("{in_a}/{ea}/cancel")) }).await;
    assert_eq!(status, 202);
    let (status, _) =
        call(&service, &Call { method: M::DELETE, ..get("bob", Some(bob), format!("{in_b}/{eb}")) }).await;
    assert_eq!(status, 204);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_secret_is_used_only_by_callers_who_may_read_it_and_a_revoked_token_stops_working() {
    let Some(ns) = TestNamespace::create("secrets") else { return };
    let service =
        ns.service(&["--auth", "kubernetes", "--auth-token-cache-seconds", "2", "--auth-decision-cache-seconds", "2"]);
    let tag = &ns.name[ns.name.len() - 6..];
    let name = format!("carol-{tag}");
    let carol = ns.k8s_dev(&["user", &name, &ns.name, "editor"]);
    let created = ns.kubectl(&["create", "secret", "generic", "llm-key", "--from-literal=key=not-for-carol"]);
    assert!(created.status.success());
    let body = json!({"model": "dummy", "tasks": ["lmeval_aas_mc"], "limit": 1,
        "env": [{"name": "OPENAI_API_KEY", "secret": {"name": "llm-key", "key": "key"}}]});
    let path = format!("/api/v1/namespaces/{}/evaluations", ns.name);
    let submit =
        Call { who: "carol", token: Some(&carol), method: reqwest::Method::POST, path: path.clone(), body: Some(body) };
    let (status, problem) = call(&service, &submit).await;
    assert_eq!((status, problem["field"].as_str()), (403, Some("env[0].secret")), "{problem}");
    assert!(problem["detail"].as_str().is_some_and(|d| d.contains("cannot get secrets \"llm-key\"")), "{problem}");

    // Allowed to read that Secret, the same request is accepted and runs to the end.
    let subject = format!("lm-eval-aas-users:{name}");
    for args in [
        vec!["create", "role", "read-llm-key", "--verb=get", "--resource=secrets", "--resource-name=llm-key"],
        vec!["create", "rolebinding", "carol-reads-llm-key", "--role=read-llm-key", "--serviceaccount", &subject],
    ] {
        let output = ns.kubectl(&args);
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    }
    let accepted = wait_for_async(Duration::from_secs(10), || async {
        let (status, evaluation) = call(&service, &submit).await;
        (status == 202).then_some(evaluation)
    })
    .await
    .expect("accepted once the decision cache has let go of the denial");
    let id = accepted["id"].as_str().expect("id");
    let ended = wait_for_async(Duration::from_secs(240), || async {
        let (_, e) =
            call(&service, &Call { method: reqwest::Method::GET, body: None, path: format!("{path}/{id}"), ..submit })
                .await;
        matches!(e["state"].as_str(), Some("succeeded" | "failed" | "cancelled")).then_some(e)
    })
    .await
    .expect("the evaluation ends");
    assert_eq!(ended["state"], "succeeded", "{ended}");

    // A token whose ServiceAccount is gone is refused within the token cache's time.
    let deleted = ns.kubectl(&["delete", "serviceaccount", &name, "-n", "lm-eval-aas-users"]);
    assert!(deleted.status.success());
    let list = Call { method: reqwest::Method::GET, body: None, path: path.clone(), ..submit };
    let refused =
        wait_for_async(Duration::from_secs(10), || async { (call(&service, &list).await.0 == 401).then_some(()) })
            .await;
    assert!(refused.is_some(), "the revoked token still works");
}

/// One namespace cannot take every slot: at most N of its evaluations run at once (the rest wait, pending, saying
/// why) and at most M are pending (a started one whose pod waits for a node counts); beyond that a submission is
/// refused 429 with Retry-After, naming the limit.
#[tokio::test(flavor = "multi_thread")]
async fn a_namespace_runs_and_queues_at_most_its_limits() {
    let Some(ns) = TestNamespace::create("limits") else { return };
    let service = ns.service(&[
        "--max-running-per-namespace",
        "1",
        "--max-pending-per-namespace",
        "2",
        "--runner-node-selector",
        "lm-eval-aas.io/test=never",
    ]);
    let spec = json!({"model": "dummy", "tasks": ["lmeval_aas_mc"], "limit": 1});
    let first = common::submit(&service, spec.clone()).await["id"].as_str().expect("id").to_string();
    let job_of = |id: &str| format!("lmeval-{}", id.replace('-', ""));
    let has_job = |id: &str| ns.kubectl(&["get", "job", &job_of(id)]).status.success();
    assert!(common::wait_for(Duration::from_secs(30), || has_job(&first).then_some(())).is_some(), "the first runs");

    let second = common::submit(&service, spec.clone()).await["id"].as_str().expect("id").to_string();
    let waiting = common::wait_until(&service, &second, Duration::from_secs(30), "waiting for a slot", |e| {
        e["message"].as_str().is_some_and(|m| m.contains("--max-running-per-namespace"))
    })
    .await;
    assert_eq!(waiting["state"], "pending");
    assert!(!has_job(&second), "no Job while the namespace's one slot is taken");

    let refused = client().post(service.url("/api/v1/evaluations")).json(&spec).send().await.expect("POST");
    assert_eq!(refused.status(), 429);
    assert!(refused.headers().contains_key("retry-after"));
    let problem: Value = refused.json().await.expect("problem");
    assert!(problem["detail"].as_str().is_some_and(|d| d.contains("--max-pending-per-namespace")), "{problem}");

    let cancelled =
        client().post(service.url(&format!("/api/v1/evaluations/{first}/cancel"))).send().await.expect("cancel");
    assert_eq!(cancelled.status(), 202);
    assert!(
        common::wait_for(Duration::from_secs(30), || has_job(&second).then_some(())).is_some(),
        "the slot the first freed goes to the second"
    );
}
