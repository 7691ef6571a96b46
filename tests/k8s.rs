//! The Kubernetes backend on the real test cluster: real API server, job controller, scheduler and a node
//! agent that runs the runner pod's command (our driver, then the pinned lm_eval with the dummy model on
//! our shipped tasks). The service and the driver run under the Roles of k8s/base only.

mod common;

use std::time::{Duration, Instant};

use common::cluster::TestNamespace;
use common::{client, evaluation, evaluation_status, submit, wait_for_async, wait_terminal, wait_until};
use futures::StreamExt;
use serde_json::{Value, json};

fn job_name(id: &str) -> String {
    format!("lmeval-{}", id.replace('-', ""))
}

/// Processes on this machine that belong to evaluation `id` (the node agent runs pods as local processes).
fn processes_of(id: &str) -> Vec<u32> {
    let needle = format!("LMEVAL_EVALUATION_ID={id}");
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.split(|b| *b == 0).any(|var| var == needle.as_bytes()))
        })
        .collect()
}

/// Submit → the Job we expect → succeeded with metrics and lm-eval's own results file; a second replica
/// sees it within 1 s; live logs; a restart of the service mid-run loses nothing; logs outlive the pod;
/// DELETE removes Job, Pods and ConfigMaps.
#[tokio::test(flavor = "multi_thread")]
async fn an_evaluation_runs_as_a_job_from_submit_to_delete() {
    let Some(ns) = TestNamespace::create("life") else { return };
    let mut first = ns.service(&[]);
    let second = ns.service(&[]);
    // The inline task reuses a shipped one under a new name: it only runs if its ConfigMap is mounted and included.
    let inline = format!(
        "include: {}/tasks/lmeval_aas/lmeval_aas_mc.yaml\ntask: lmeval_aas_inline\n",
        env!("CARGO_MANIFEST_DIR")
    );
    let body = json!({
        "model": "dummy", "tasks": ["lmeval_aas_slow", "lmeval_aas_inline"], "limit": 60, "timeout_seconds": 600,
        "labels": {"team": "nlp"}, "inline_tasks": {"inline.yaml": inline},
    });
    let created = submit(&first, body).await;
    let id = created["id"].as_str().expect("id").to_string();

    let seen_by_second = Instant::now();
    let visible = wait_for_async(Duration::from_secs(5), || async {
        (evaluation_status(&second, &id).await.0 == 200).then_some(())
    })
    .await;
    let lag = seen_by_second.elapsed();
    assert!(visible.is_some() && lag < Duration::from_secs(1), "second replica saw it after {lag:?}");

    // The leader creates the Job after the evaluation's identity and run record: it may not be there yet.
    let job = wait_for_async(Duration::from_secs(30), || async {
        let output = ns.kubectl(&["get", "job", &job_name(&id), "-o", "json"]);
        output.status.success().then(|| serde_json::from_slice::<Value>(&output.stdout).expect("kubectl JSON"))
    })
    .await
    .unwrap_or_else(|| panic!("no Job within 30 s; service log:\n{}", first.log_text()));
    assert_eq!(job["metadata"]["labels"]["app.kubernetes.io/managed-by"], "lm-eval-aas");
    assert_eq!(job["metadata"]["labels"]["lm-eval-aas.io/evaluation-id"], id.as_str());
    assert_eq!(job["metadata"]["labels"]["team"], "nlp");
    assert_eq!(job["spec"]["backoffLimit"], 0);
    assert_eq!(job["spec"]["activeDeadlineSeconds"], 600);
    let stored: Value =
        serde_json::from_str(job["metadata"]["annotations"]["lm-eval-aas.io/evaluation"].as_str().expect("annotation"))
            .expect("evaluation JSON");
    assert_eq!(stored["request"], created["request"]);
    let pod = &job["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], job_name(&id), "an identity of its own");
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    let container = &pod["containers"][0];
    assert_eq!(container["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(container["securityContext"]["capabilities"]["drop"], json!(["ALL"]));
    assert_eq!(container["securityContext"]["seccompProfile"]["type"], "RuntimeDefault");
    let command: Vec<String> = serde_json::from_value(container["command"].clone()).expect("command");
    assert_eq!(&command[1..4], ["driver", "--echo", "--"]);
    assert_eq!(command[4..], serde_json::from_value::<Vec<String>>(created["command"].clone()).expect("argv")[..]);

    // Follow the log live from the moment the pod starts.
    let mut follow = client()
        .get(second.url(&format!("/api/v1/evaluations/{id}/logs?follow=true")))
        .send()
        .await
        .expect("follow")
        .bytes_stream();
    let first_chunk = tokio::time::timeout(Duration::from_secs(120), follow.next()).await.expect("a log line in time");
    assert!(first_chunk.is_some_and(|c| c.is_ok_and(|c| !c.is_empty())));
    let first_line_at = Instant::now();

    wait_until(&first, &id, Duration::from_secs(120), "progress", |e| {
        e["state"] == "running" && e["progress"]["completed"].as_u64().is_some_and(|n| n > 0)
    })
    .await;
    first = first.restart_after_kill9();
    let mut rest = Vec::new();
    while let Some(chunk) = follow.next().await {
        rest.extend_from_slice(&chunk.expect("log chunk"));
    }
    let done = wait_terminal(&first, &id).await;
    assert_eq!(done["state"], "succeeded", "{done}\n{}", first.log_text());
    let ended = Instant::now();
    assert!(ended - first_line_at >= Duration::from_secs(1), "the log was live, not replayed at the end");
    assert!(String::from_utf8_lossy(&rest).contains("lmeval_aas_inline"), "the followed log reaches the results table");
    let metrics = done["metrics"].as_array().expect("metrics");
    assert!(metrics.iter().any(|m| m["task"] == "lmeval_aas_inline" && m["metric"] == "acc"), "{done}");
    assert_eq!(done["progress"]["percent"], 100.0);

    // The results are byte for byte the file lm-eval wrote into the pod's output volume.
    let results = client().get(first.url(&format!("/api/v1/evaluations/{id}/results"))).send().await.expect("results");
    assert_eq!(results.status(), 200);
    let served = results.bytes().await.expect("body");
    let pods = ns.kubectl_json(&["get", "pods", "-l", &format!("lm-eval-aas.io/evaluation-id={id}")]);
    let pod_uid = pods["items"][0]["metadata"]["uid"].as_str().expect("pod uid").to_string();
    let pod_dir = std::path::Path::new(&ns.env["LMEVAL_CLUSTER_DIR"]).join("node/pods").join(&pod_uid);
    let written =
        find_file(&pod_dir, "results_").unwrap_or_else(|| panic!("no results file under {}", pod_dir.display()));
    assert_eq!(served, std::fs::read(&written).expect("read results"));

    // Logs outlive the pod.
    let pod_name = pods["items"][0]["metadata"]["name"].as_str().expect("pod name").to_string();
    assert!(ns.kubectl(&["delete", "pod", &pod_name, "--wait=true"]).status.success());
    let gone = wait_for_async(Duration::from_secs(30), || async {
        let text = client()
            .get(second.url(&format!("/api/v1/evaluations/{id}/logs?tail_lines=5")))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        let pods = ns.kubectl_json(&["get", "pods", "-l", &format!("lm-eval-aas.io/evaluation-id={id}")]);
        (pods["items"].as_array()?.is_empty() && text.contains("lmeval_aas_inline")).then_some(text)
    })
    .await;
    let tail = gone.expect("the log's tail from the run record once the pod is gone");
    assert!(tail.lines().count() <= 5, "{tail}");

    // DELETE: 204, then 404 on both replicas, and the Job with everything that hangs off it is gone.
    let deleted = client().delete(first.url(&format!("/api/v1/evaluations/{id}"))).send().await.expect("DELETE");
    assert_eq!(deleted.status(), 204);
    assert_eq!(evaluation_status(&first, &id).await.0, 404);
    let cleaned = wait_for_async(Duration::from_secs(30), || async {
        let left =
            ns.kubectl_json(&["get", "jobs,pods,configmaps", "-l", &format!("lm-eval-aas.io/evaluation-id={id}")]);
        (left["items"].as_array()?.is_empty() && evaluation_status(&second, &id).await.0 == 404).then_some(())
    })
    .await;
    assert!(cleaned.is_some(), "Job, Pods and ConfigMaps deleted");
}

fn find_file(dir: &std::path::Path, prefix: &str) -> Option<std::path::PathBuf> {
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        if path.is_dir() {
            if let Some(found) = find_file(&path, prefix) {
                return Some(found);
            }
        } else if entry.file_name().to_string_lossy().starts_with(prefix) {
            return Some(path);
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_lm_eval_run_fails_with_its_reason_and_log_lines() {
    let Some(ns) = TestNamespace::create("fail") else { return };
    let service = ns.service(&[]);
    let created = submit(&service, json!({"model": "dummy", "tasks": ["lmeval_aas_broken"]})).await;
    let done = wait_terminal(&service, created["id"].as_str().expect("id")).await;
    assert_eq!((done["state"].as_str(), done["reason"].as_str()), (Some("failed"), Some("LmEvalError")), "{done}");
    let message = done["message"].as_str().expect("message");
    assert!(message.starts_with("lm_eval exited with code "), "{message}");
    assert!(message.lines().count() > 3, "the message carries the log's last lines: {message}");
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_suspends_the_job_and_ends_the_pod_process() {
    let Some(ns) = TestNamespace::create("cancel") else { return };
    let service = ns.service(&[]);
    let created = submit(&service, json!({"model": "dummy", "tasks": ["lmeval_aas_slow"], "limit": 2000})).await;
    let id = created["id"].as_str().expect("id").to_string();
    wait_until(&service, &id, Duration::from_secs(120), "running", |e| e["state"] == "running").await;
    let running = common::wait_for(Duration::from_secs(10), || (!processes_of(&id).is_empty()).then_some(()));
    assert!(running.is_some(), "the driver runs as a local process: {}", service.log_text());
    // The pod's environment (the run record's name, the API server's address) stays with the driver.
    let sealed = common::wait_for(Duration::from_secs(30), || {
        processes_of(&id).into_iter().find_map(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let is_lm_eval = cmdline.split(|b| *b == 0).any(|arg| arg.ends_with(b"lm_eval"))
                && !cmdline.split(|b| *b == 0).any(|arg| arg == b"driver");
            is_lm_eval.then(|| std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default())
        })
    })
    .expect("lm_eval runs under the driver");
    let names: Vec<String> = sealed
        .split(|b| *b == 0)
        .filter_map(|var| Some(String::from_utf8_lossy(var.split(|b| *b == b'=').next()?).into_owned()))
        .collect();
    assert!(
        !names.iter().any(|n| n == "LMEVAL_RUN_RECORD" || n == "LMEVAL_JOB_UID" || n.starts_with("KUBERNETES_")),
        "lm_eval got the driver's environment: {names:?}"
    );

    let response =
        client().post(service.url(&format!("/api/v1/evaluations/{id}/cancel"))).send().await.expect("cancel");
    assert_eq!(response.status(), 202);
    let done = wait_terminal(&service, &id).await;
    assert_eq!(done["state"], "cancelled");
    let job = ns.kubectl_json(&["get", "job", &job_name(&id)]);
    assert_eq!(job["spec"]["suspend"], true);
    let stopped = common::wait_for(Duration::from_secs(30), || processes_of(&id).is_empty().then_some(()));
    assert!(stopped.is_some(), "processes of the cancelled pod still running: {:?}", processes_of(&id));
    let again = client().post(service.url(&format!("/api/v1/evaluations/{id}/cancel"))).send().await.expect("cancel");
    assert_eq!(again.status(), 409);
    assert_eq!(evaluation(&service, &id).await["state"], "cancelled", "stays visible until DELETE");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_secret_is_reported_then_fails_the_evaluation() {
    let Some(ns) = TestNamespace::create("secret") else { return };
    let service = ns.service(&["--stuck-after-seconds", "6"]);
    let created = submit(
        &service,
        json!({"model": "dummy", "tasks": ["lmeval_aas_mc"], "env": [{"name": "API_TOKEN", "secret": {"name": "absent", "key": "token"}}]}),
    )
    .await;
    let id = created["id"].as_str().expect("id").to_string();
    let waiting = wait_until(&service, &id, Duration::from_secs(30), "a waiting reason", |e| {
        e["reason"] == "CreateContainerConfigError"
    })
    .await;
    assert_eq!(waiting["state"], "pending", "{waiting}");
    assert!(waiting["message"].as_str().is_some_and(|m| m.contains("absent")), "{waiting}");
    let done = wait_terminal(&service, &id).await;
    assert_eq!((done["state"].as_str(), done["reason"].as_str()), (Some("failed"), Some("CreateContainerConfigError")));
    assert!(!format!("{done}").contains("token\":\"s3cr"), "no secret value anywhere");
    // The failure is recorded on the Job, which is suspended: final, whatever the pod does next.
    let recorded = common::wait_for(Duration::from_secs(30), || {
        let job = ns.kubectl_json(&["get", "job", &job_name(&id)]);
        let failed = job["metadata"]["annotations"]["lm-eval-aas.io/failed"].as_str().map(str::to_string);
        failed.filter(|_| job["spec"]["suspend"] == true)
    });
    let recorded = recorded.expect("the stuck failure recorded on a suspended Job");
    assert!(recorded.contains("CreateContainerConfigError"), "{recorded}");
}

#[tokio::test(flavor = "multi_thread")]
async fn timeout_seconds_becomes_the_jobs_deadline() {
    let Some(ns) = TestNamespace::create("deadline") else { return };
    let service = ns.service(&[]);
    let created = submit(&service, json!({"model": "dummy", "tasks": ["lmeval_aas_slow"], "timeout_seconds": 3})).await;
    let id = created["id"].as_str().expect("id").to_string();
    let done = wait_terminal(&service, &id).await;
    assert_eq!((done["state"].as_str(), done["reason"].as_str()), (Some("failed"), Some("Timeout")), "{done}");
    let stopped = common::wait_for(Duration::from_secs(30), || processes_of(&id).is_empty().then_some(()));
    assert!(stopped.is_some(), "the deadline ended the pod's processes");
}

/// 100 submissions at once: none lost, and the 25 keys sent twice each make exactly one evaluation each.
/// Runner pods are kept unschedulable so nothing runs; what counts here is the API and the Jobs.
#[tokio::test(flavor = "multi_thread")]
async fn a_hundred_concurrent_submissions_lose_nothing_and_keys_dedupe() {
    let Some(ns) = TestNamespace::create("burst") else { return };
    let service = ns.service(&["--runner-node-selector", "lm-eval-aas.io/test=never", "--stuck-after-seconds", "3600"]);
    let body = json!({"model": "dummy", "tasks": ["lmeval_aas_mc"], "limit": 1});
    let requests = (0..100).map(|i| {
        let url = service.url("/api/v1/evaluations");
        let body = body.clone();
        async move {
            let mut request = client().post(url).json(&body);
            if i % 2 == 0 {
                request = request.header("Idempotency-Key", format!("key-{}", i / 4));
            }
            let response = request.send().await.expect("POST");
            let status = response.status().as_u16();
            let value: Value = response.json().await.expect("json");
            (i, status, value["id"].as_str().map(str::to_string))
        }
    });
    let results = futures::future::join_all(requests).await;
    for (i, status, id) in &results {
        assert!(*status == 202 && id.is_some(), "request {i}: {status}");
    }
    let ids: std::collections::BTreeSet<&str> = results.iter().filter_map(|(_, _, id)| id.as_deref()).collect();
    assert_eq!(ids.len(), 75, "50 without a key + 25 keys");
    for key in 0..25 {
        let same: std::collections::BTreeSet<_> =
            results.iter().filter(|(i, _, _)| i % 2 == 0 && i / 4 == key).map(|(_, _, id)| id.clone()).collect();
        assert_eq!(same.len(), 1, "key-{key} made {same:?}");
    }
    // The leader creates the Jobs as it reconciles the Evaluations.
    let jobs = common::wait_for(Duration::from_secs(60), || {
        let jobs = ns.kubectl_json(&["get", "jobs", "-l", "app.kubernetes.io/managed-by=lm-eval-aas"]);
        let count = jobs["items"].as_array().map_or(0, Vec::len);
        (count >= 75).then_some(count)
    });
    assert_eq!(jobs, Some(75), "one Job per evaluation");
    let some_id = ids.iter().next().expect("an id").to_string();
    let waiting = wait_until(&service, &some_id, Duration::from_secs(30), "the scheduler's verdict", |e| {
        e["reason"] == "Unschedulable"
    })
    .await;
    assert_eq!(waiting["state"], "pending", "Unschedulable waits (until --stuck-after-seconds): {waiting}");

    // Every one is listed, across pages.
    let mut listed = std::collections::BTreeSet::new();
    let mut token: Option<String> = None;
    loop {
        let mut url = service.url("/api/v1/evaluations?page_size=20");
        if let Some(t) = &token {
            url.push_str(&format!("&page_token={t}"));
        }
        let page: Value = client().get(url).send().await.expect("list").json().await.expect("json");
        for item in page["items"].as_array().expect("items") {
            listed.insert(item["id"].as_str().expect("id").to_string());
        }
        match page["next_page_token"].as_str() {
            Some(next) => token = Some(next.to_string()),
            None => break,
        }
    }
    assert_eq!(listed.len(), 75);

    let reused = client()
        .post(service.url("/api/v1/evaluations"))
        .header("Idempotency-Key", "key-0")
        .json(&json!({"model": "dummy", "tasks": ["lmeval_aas_mc"], "limit": 2}))
        .send()
        .await
        .expect("POST");
    assert_eq!(reused.status(), 409, "a key reused with another body");
}

/// The service holds only what k8s/base grants (each runner's own identity is tested in k8s_hostile.rs).
#[tokio::test(flavor = "multi_thread")]
async fn the_service_holds_only_its_role() {
    let Some(ns) = TestNamespace::create("rbac") else { return };
    let can = |who: &str, verb: &str, what: &str| {
        let user = format!("system:serviceaccount:{}:{who}", ns.name);
        let output = ns.kubectl(&["auth", "can-i", verb, what, "--as", &user]);
        String::from_utf8_lossy(&output.stdout).trim() == "yes"
    };
    for (verb, what) in [("create", "jobs.batch"), ("watch", "pods"), ("get", "pods/log"), ("patch", "configmaps")] {
        assert!(can("lm-eval-aas", verb, what), "service may {verb} {what}");
    }
    assert!(can("lm-eval-aas", "create", "secrets"), "service may create secrets (the upload URLs of runs)");
    assert!(can("lm-eval-aas", "delete", "secrets"), "and delete them by name when their run ends");
    for (verb, what) in [
        ("get", "secrets"),
        ("list", "secrets"),
        ("watch", "secrets"),
        ("create", "pods"),
        ("delete", "namespaces"),
        ("update", "jobs.batch"),
    ] {
        assert!(!can("lm-eval-aas", verb, what), "service may not {verb} {what}");
    }
    for (verb, what) in [("create", "serviceaccounts"), ("create", "roles"), ("create", "rolebindings")] {
        assert!(can("lm-eval-aas", verb, what), "service may {verb} {what} (each runner's identity)");
    }
    assert!(!can("lm-eval-aas", "create", "clusterrolebindings"), "service may not bind cluster-wide");
}
