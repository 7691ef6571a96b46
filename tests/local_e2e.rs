//! End to end through HTTP against the real binary running the pinned, real `lm_eval`
//! on our shipped offline tasks (dummy model). scripts/test provides LMEVAL_LM_EVAL.

mod common;

use std::time::{Duration, Instant, SystemTime};

use common::{Service, client, evaluation, submit, wait_for_async, wait_terminal, wait_until};
use futures::StreamExt;
use serde_json::{Value, json};

async fn get_json(service: &Service, path: &str) -> Value {
    client().get(service.url(path)).send().await.expect("GET").json().await.expect("JSON body")
}

/// Processes whose process group is `pgid`, from /proc.
fn processes_in_group(pgid: u32) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else { continue };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // fields[0] is the state, fields[2] the process group.
        if fields.get(2).and_then(|g| g.parse::<u32>().ok()) == Some(pgid) && fields.first() != Some(&"Z") {
            found.push(pid);
        }
    }
    found
}

fn recorded_pid(service: &Service, id: &str) -> Option<u32> {
    let record = std::fs::read(service.data_dir.join("evaluations").join(id).join("record.json")).ok()?;
    let record: Value = serde_json::from_slice(&record).ok()?;
    record["process"]["pid"].as_u64().and_then(|p| u32::try_from(p).ok())
}

#[tokio::test]
async fn succeeds_with_metrics_live_logs_and_verbatim_results() {
    let dir = tempfile::tempdir().expect("tempdir");
    let service = Service::start(&dir.path().join("data"), &[]);
    let created = submit(
        &service,
        json!({"model": "dummy", "tasks": ["lmeval_aas_mc", "lmeval_aas_gen"], "limit": 5, "log_samples": true}),
    )
    .await;
    let id = created["id"].as_str().expect("id").to_string();

    let response =
        client().get(service.url(&format!("/api/v1/evaluations/{id}/logs?follow=true"))).send().await.expect("follow");
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"].to_str().expect("ct").starts_with("text/plain"));
    let mut received = Vec::new();
    let mut body = response.bytes_stream();
    let mut text = String::new();
    while let Some(chunk) = body.next().await {
        text.push_str(&String::from_utf8_lossy(&chunk.expect("chunk")));
        received.push(SystemTime::now());
    }
    let done = evaluation(&service, &id).await;
    assert_eq!(done["state"], "succeeded", "the follow stream ends when the evaluation does: {done}");
    let finished: SystemTime = time::OffsetDateTime::parse(
        done["finished_at"].as_str().expect("finished_at"),
        &time::format_description::well_known::Rfc3339,
    )
    .expect("rfc3339")
    .into();
    let first = received.first().copied().expect("some log arrived");
    assert!(
        finished.duration_since(first).unwrap_or_default() >= Duration::from_secs(1),
        "log lines arrive while the evaluation runs, not only at its end"
    );
    assert!(text.contains("lmeval_aas_mc"), "the log is lm-eval's output");

    let metrics = done["metrics"].as_array().expect("metrics");
    assert!(metrics.iter().any(|m| m["task"] == "lmeval_aas_mc"
        && m["metric"] == "acc"
        && m["filter"] == "none"
        && m["value"].is_number()));
    assert!(metrics.iter().any(|m| m["task"] == "lmeval_aas_gen" && m["metric"] == "exact_match"));
    assert_eq!(done["progress"]["percent"], 100.0);
    assert!(done["started_at"].is_string() && done["finished_at"].is_string());

    let results =
        client().get(service.url(&format!("/api/v1/evaluations/{id}/results"))).send().await.expect("results");
    assert_eq!(results.status(), 200);
    assert_eq!(results.headers()["content-type"], "application/json");
    let served = results.bytes().await.expect("bytes");
    let output = service.data_dir.join("evaluations").join(&id).join("output");
    let written: Vec<_> = walk(&output)
        .into_iter()
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("results_")))
        .collect();
    assert_eq!(written.len(), 1, "one results file under {}", output.display());
    assert_eq!(served.as_ref(), std::fs::read(&written[0]).expect("read").as_slice(), "results are served verbatim");
    assert!(
        walk(&output)
            .iter()
            .any(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("samples_lmeval_aas_mc")))
    );

    let tail = client()
        .get(service.url(&format!("/api/v1/evaluations/{id}/logs?tail_lines=3")))
        .send()
        .await
        .expect("tail")
        .text()
        .await
        .expect("text");
    assert_eq!(tail.lines().count(), 3);
    assert!(text.ends_with(&tail), "tail_lines gives the last lines");

    let sse = client()
        .get(service.url(&format!("/api/v1/evaluations/{id}/logs?tail_lines=2")))
        .header("accept", "text/event-stream")
        .send()
        .await
        .expect("sse");
    assert!(sse.headers()["content-type"].to_str().expect("ct").starts_with("text/event-stream"));
    let events = sse.text().await.expect("events");
    let data_lines = events.lines().filter(|l| l.starts_with("data:")).count();
    assert_eq!(data_lines, 3, "two lines and the end event: {events}");
    let last_event = events.trim_end().rsplit("\n\n").next().unwrap_or_default();
    assert!(last_event.starts_with("event: end"), "the stream closes with an end event: {events}");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[tokio::test]
async fn a_failing_run_is_failed_with_reason_and_log_lines() {
    let dir = tempfile::tempdir().expect("tempdir");
    let service = Service::start(&dir.path().join("data"), &[]);
    let created = submit(&service, json!({"model": "dummy", "tasks": ["lmeval_aas_broken"]})).await;
    let id = created["id"].as_str().expect("id");
    let done = wait_terminal(&service, id).await;
    assert_eq!(done["state"], "failed", "{done}");
    assert_eq!(done["reason"], "LmEvalError");
    let message = done["message"].as_str().expect("message");
    assert!(message.starts_with("lm_eval exited with code "), "{message}");
    assert!(message.lines().count() > 3, "the message carries the log's last lines: {message}");
    let results =
        client().get(service.url(&format!("/api/v1/evaluations/{id}/results"))).send().await.expect("results");
    assert_eq!(results.status(), 409);

    let unknown_task = submit(&service, json!({"model": "dummy", "tasks": ["no_such_task_anywhere"]})).await;
    let done = wait_terminal(&service, unknown_task["id"].as_str().expect("id")).await;
    assert_eq!(done["state"], "failed");
    assert_eq!(done["reason"], "LmEvalError");
}

#[tokio::test]
async fn cancel_terminates_the_whole_process_group() {
    let dir = tempfile::tempdir().expect("tempdir");
    let service = Service::start(&dir.path().join("data"), &[]);
    let created = submit(&service, json!({"model": "dummy", "tasks": ["lmeval_aas_slow"]})).await;
    let id = created["id"].as_str().expect("id").to_string();
    wait_until(&service, &id, Duration::from_secs(120), "progress of the slow task", |e| {
        e["progress"]["completed"].as_u64().is_some_and(|n| n > 0)
    })
    .await;
    let pgid = recorded_pid(&service, &id).expect("pid recorded");
    assert!(processes_in_group(pgid).len() >= 2, "the driver and lm_eval run in the evaluation's group");

    let asked = Instant::now();
    let response =
        client().post(service.url(&format!("/api/v1/evaluations/{id}/cancel"))).send().await.expect("cancel");
    assert_eq!(response.status(), 202);
    let done = wait_until(&service, &id, Duration::from_secs(10), "cancelled", |e| e["state"] == "cancelled").await;
    let took = asked.elapsed();
    assert!(took < Duration::from_secs(2), "cancelled within 2 s, took {took:?}");
    assert_eq!(done["reason"], "Cancelled");
    assert!(
        processes_in_group(pgid).is_empty(),
        "no process of the evaluation is left: {:?}",
        processes_in_group(pgid)
    );
    let again = client().post(service.url(&format!("/api/v1/evaluations/{id}/cancel"))).send().await.expect("cancel");
    assert_eq!(again.status(), 409);
}

#[tokio::test]
async fn timeout_seconds_is_enforced() {
    let dir = tempfile::tempdir().expect("tempdir");
    let service = Service::start(&dir.path().join("data"), &[]);
    let created = submit(&service, json!({"model": "dummy", "tasks": ["lmeval_aas_slow"], "timeout_seconds": 4})).await;
    let id = created["id"].as_str().expect("id");
    let done = wait_terminal(&service, id).await;
    assert_eq!(done["state"], "failed");
    assert_eq!(done["reason"], "Timeout");
    let pgid = recorded_pid(&service, id).expect("pid");
    assert!(processes_in_group(pgid).is_empty());
}

#[tokio::test]
async fn legacy_flask_routes_drive_the_same_evaluations() {
    let dir = tempfile::tempdir().expect("tempdir");
    let service = Service::start(&dir.path().join("data"), &["--max-running", "1"]);
    let response = client()
        .post(service.url("/submit_job"))
        .json(&json!({"model": "dummy", "model_args": "", "tasks": "lmeval_aas_gen,lmeval_aas_mc", "limit": 2, "num_fewshot": 0, "gen_kwargs": "max_gen_toks=4", "log_samples": false}))
        .send()
        .await
        .expect("submit_job");
    assert_eq!(response.status(), 200);
    let ticket: Value = response.json().await.expect("ticket");
    let task_id = ticket["task_id"].as_str().expect("task_id").to_string();
    assert_eq!(ticket.as_object().map(|o| o.len()), Some(1));

    let v1 = evaluation(&service, &task_id).await;
    assert_eq!(v1["request"]["tasks"], json!(["lmeval_aas_gen", "lmeval_aas_mc"]));
    assert_eq!(v1["request"]["gen_kwargs"], json!({"max_gen_toks": 4}));

    let poll = || async {
        let response = client().get(service.url(&format!("/poll_job?task_id={task_id}"))).send().await.expect("poll");
        assert_eq!(response.status(), 200);
        response.json::<Value>().await.expect("json")
    };
    let status = poll().await;
    assert!(status == json!({"status": "running"}) || status == json!({"status": "complete"}), "{status}");
    let pending = client()
        .get(service.url(&format!("/job_results?task_id={task_id}")))
        .send()
        .await
        .expect("results")
        .json::<Value>()
        .await
        .expect("json");
    assert!(pending == json!({"status": "running"}) || pending["results"].is_object(), "{pending}");
    let complete = wait_for_async(Duration::from_secs(300), || async {
        (poll().await == json!({"status": "complete"})).then_some(())
    })
    .await;
    assert!(complete.is_some(), "legacy poll reaches complete");
    let results: Value = get_json(&service, &format!("/job_results?task_id={task_id}")).await;
    assert!(results["results"]["lmeval_aas_gen"].is_object(), "{results}");

    let jobs = get_json(&service, "/list_jobs").await;
    assert_eq!(jobs, json!([{"task_id": task_id, "status": "complete"}]));

    let finished =
        client().delete(service.url(&format!("/cancel_job?task_id={task_id}"))).send().await.expect("cancel");
    assert_eq!(finished.status(), 409);
    let unknown =
        client().get(service.url("/poll_job?task_id=7b0d8c5e-1111-4222-8333-944455556666")).send().await.expect("poll");
    assert_eq!(unknown.status(), 404);
    assert_eq!(
        unknown.json::<Value>().await.expect("json"),
        json!({"status": "not found", "error": "no task 7b0d8c5e-1111-4222-8333-944455556666"})
    );
    // The Flask service's clients branch on 404 for any id it does not know and 400 for any submission it cannot
    // take; the `error` member is what they read.
    for query in ["task_id=not-an-id", "task_id=", ""] {
        let malformed = client().get(service.url(&format!("/poll_job?{query}"))).send().await.expect("poll");
        assert_eq!(malformed.status(), 404, "{query}");
        assert!(malformed.json::<Value>().await.expect("json")["error"].is_string(), "{query}");
    }
    for (body, content_type) in [
        (r#"{"model": "dummy", "tasks": "lmeval_aas_mc", "limit": -3}"#, "application/json"),
        (r#"{"model": "dummy""#, "application/json"),
        (r#"{"model": "dummy", "tasks": "lmeval_aas_mc"}"#, "text/plain"),
    ] {
        let refused = client()
            .post(service.url("/submit_job"))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .expect("submit");
        assert_eq!(refused.status(), 400, "{body} as {content_type}");
        let problem = refused.json::<Value>().await.expect("json");
        assert!(problem["error"].is_string() && problem["status"] == 400, "{problem}");
    }

    let failing = client()
        .post(service.url("/submit_job"))
        .json(&json!({"model": "dummy", "tasks": "lmeval_aas_broken"}))
        .send()
        .await
        .expect("submit");
    let failing_id = failing.json::<Value>().await.expect("json")["task_id"].as_str().expect("id").to_string();
    let slow = client()
        .post(service.url("/submit_job"))
        .json(&json!({"model": "dummy", "tasks": "lmeval_aas_slow"}))
        .send()
        .await
        .expect("submit");
    let slow_id = slow.json::<Value>().await.expect("json")["task_id"].as_str().expect("id").to_string();
    let cancelled =
        client().delete(service.url(&format!("/cancel_job?task_id={slow_id}"))).send().await.expect("cancel");
    assert_eq!(cancelled.status(), 200);
    assert_eq!(cancelled.json::<Value>().await.expect("json"), json!({"task_id": slow_id, "status": "cancelled"}));
    wait_terminal(&service, &failing_id).await;
    let error: Value = get_json(&service, &format!("/job_results?task_id={failing_id}")).await;
    assert!(error["error"].as_str().is_some_and(|e| e.contains("exited with code")), "{error}");
    let bad = client()
        .post(service.url("/submit_job"))
        .json(&json!({"model": "dummy", "tasks": "a;b"}))
        .send()
        .await
        .expect("submit");
    assert_eq!(bad.status(), 400, "the Flask service's code for a submission it cannot take");
    assert!(bad.json::<Value>().await.expect("json")["error"].as_str().is_some_and(|e| e.contains("tasks[0]")));
}

#[tokio::test]
async fn kill_9_mid_evaluation_loses_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let service = Service::start(&dir.path().join("data"), &["--max-running", "1"]);
    let running = submit(&service, json!({"model": "dummy", "tasks": ["lmeval_aas_slow"], "limit": 150})).await;
    let running_id = running["id"].as_str().expect("id").to_string();
    let queued = submit(&service, json!({"model": "dummy", "tasks": ["lmeval_aas_mc"], "limit": 2})).await;
    let queued_id = queued["id"].as_str().expect("id").to_string();
    let doomed = submit(&service, json!({"model": "dummy", "tasks": ["lmeval_aas_mc"], "limit": 2})).await;
    let doomed_id = doomed["id"].as_str().expect("id").to_string();
    wait_until(&service, &running_id, Duration::from_secs(120), "progress", |e| {
        e["progress"]["completed"].as_u64().is_some_and(|n| n > 0)
    })
    .await;
    let pgid = recorded_pid(&service, &running_id).expect("pid");

    let service = service.restart_after_kill9();
    let adopted = evaluation(&service, &running_id).await;
    assert_eq!(adopted["state"], "running", "a still-running lm_eval is re-adopted: {adopted}");
    assert_eq!(evaluation(&service, &queued_id).await["state"], "pending");
    let done = wait_terminal(&service, &running_id).await;
    assert_eq!(done["state"], "succeeded", "the re-adopted run ends truthfully: {done}");
    assert!(done["metrics"].as_array().is_some_and(|m| !m.is_empty()));
    assert!(processes_in_group(pgid).is_empty());

    // Now kill the service and, while it is down, the next evaluation's processes: no exit status is ever written.
    wait_until(&service, &queued_id, Duration::from_secs(120), "the queued evaluation running", |e| {
        e["state"] != "pending"
    })
    .await;
    let mut service = service;
    service.kill9();
    if let Some(pgid) = recorded_pid(&service, &queued_id) {
        let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pgid as i32), nix::sys::signal::Signal::SIGKILL);
        assert!(
            common::wait_for(Duration::from_secs(5), || processes_in_group(pgid).is_empty().then_some(())).is_some()
        );
    }
    let service = service.restart_after_kill9();
    let interrupted = evaluation(&service, &queued_id).await;
    assert!(
        interrupted["state"] == "succeeded"
            || (interrupted["state"] == "failed" && interrupted["reason"] == "Interrupted"),
        "never left running: {interrupted}"
    );
    let last = wait_terminal(&service, &doomed_id).await;
    assert_eq!(last["state"], "succeeded", "the pending evaluation survived two restarts: {last}");
    let list = get_json(&service, "/api/v1/evaluations").await;
    assert_eq!(list["items"].as_array().map(Vec::len), Some(3), "none lost");
}

#[tokio::test]
async fn json_logs_carry_the_request_id_and_sigterm_stops_gracefully() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut service = Service::start(&dir.path().join("data"), &["--shutdown-delay-seconds", "2"]);
    let response = client()
        .post(service.url("/api/v1/evaluations"))
        .header("x-request-id", "req-graceful-1")
        .json(&json!({"model": "dummy", "tasks": ["lmeval_aas_slow"], "limit": 400}))
        .send()
        .await
        .expect("POST");
    assert_eq!(response.headers()["x-request-id"], "req-graceful-1");
    let id = response.json::<Value>().await.expect("json")["id"].as_str().expect("id").to_string();
    let logged = common::wait_for(Duration::from_secs(10), || {
        service
            .log_text()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|l| l["message"] == "evaluation accepted")
    })
    .expect("a JSON log line for the submission");
    assert_eq!(logged["span"]["request.id"], "req-graceful-1", "{logged}");
    assert_eq!(logged["evaluation.id"], id.as_str());

    wait_until(&service, &id, Duration::from_secs(120), "running", |e| e["state"] == "running").await;
    let follow =
        client().get(service.url(&format!("/api/v1/evaluations/{id}/logs?follow=true"))).send().await.expect("follow");
    let stream = tokio::spawn(async move { follow.text().await.is_ok() });
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(service.child.id() as i32), nix::sys::signal::Signal::SIGTERM)
        .expect("SIGTERM");
    // During the shutdown delay: not ready, yet still answering new connections.
    let not_ready = wait_for_async(Duration::from_secs(2), || async {
        let response = client().get(service.url("/readyz")).send().await.ok()?;
        (response.status() == 503).then_some(())
    })
    .await;
    assert!(not_ready.is_some(), "/readyz fails as soon as SIGTERM arrives");
    let still_serving = client().get(service.url("/healthz")).send().await.expect("a new connection is served");
    assert_eq!(still_serving.status(), 200);
    let status = common::wait_for(Duration::from_secs(10), || service.child.try_wait().ok().flatten())
        .expect("exits after SIGTERM");
    assert!(status.success(), "clean exit: {status:?}");
    assert!(
        tokio::time::timeout(Duration::from_secs(5), stream).await.is_ok(),
        "the follow stream ended with the server"
    );
    assert!(service.log_text().contains("shutting down"));
    let service = service.restart_after_kill9();
    assert_eq!(evaluation(&service, &id).await["state"], "running", "evaluations outlive a graceful restart too");
}
