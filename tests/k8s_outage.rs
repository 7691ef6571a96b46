//! The API server stops answering for 10 s in the middle of an evaluation: reads keep coming from the
//! caches, writes answer 503 with Retry-After, and everything recovers by itself. Its own test binary,
//! so no other cluster test runs while the API server is frozen.

mod common;

use std::time::{Duration, Instant};

use common::cluster::TestNamespace;
use common::wait_for_async;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};

fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(60)).build().expect("client")
}

/// The API server process `scripts/cluster up` started, checked against its recorded start time.
fn apiserver_pid(cluster_dir: &str) -> Pid {
    let record = std::fs::read_to_string(format!("{cluster_dir}/pids/kube-apiserver.pid")).expect("pid file");
    let mut fields = record.split_whitespace();
    let pid: i32 = fields.next().and_then(|p| p.parse().ok()).expect("pid");
    let start: u64 = fields.next().and_then(|s| s.parse().ok()).expect("start time");
    assert_eq!(lm_eval_aas::fsutil::process_start_ticks(pid.unsigned_abs()), Some(start), "the recorded API server");
    Pid::from_raw(pid)
}

/// SIGSTOP now, SIGCONT when dropped, even if the test fails on the way.
struct Frozen(Pid);

impl Frozen {
    fn new(pid: Pid) -> Self {
        kill(pid, Signal::SIGSTOP).expect("SIGSTOP the API server");
        Self(pid)
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        let _ = kill(self.0, Signal::SIGCONT);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn reads_survive_an_api_server_outage_and_writes_recover() {
    let Some(ns) = TestNamespace::create("outage") else { return };
    let service = ns.service(&["--api-timeout-seconds", "2"]);
    let created = client()
        .post(service.url("/api/v1/evaluations"))
        .json(&json!({"model": "dummy", "tasks": ["lmeval_aas_slow"], "limit": 300}))
        .send()
        .await
        .expect("POST");
    assert_eq!(created.status(), 202);
    let id = created.json::<Value>().await.expect("json")["id"].as_str().expect("id").to_string();
    // A write that times out may still reach the API server later, so the cancel probe targets a bystander
    // that never runs (its Secret does not exist), not the evaluation under watch.
    let bystander = client()
        .post(service.url("/api/v1/evaluations"))
        .json(&json!({"model": "dummy", "tasks": ["lmeval_aas_mc"], "env": [{"name": "T", "secret": {"name": "absent", "key": "k"}}]}))
        .send()
        .await
        .expect("POST");
    assert_eq!(bystander.status(), 202);
    let bystander = bystander.json::<Value>().await.expect("json")["id"].as_str().expect("id").to_string();
    let get = |id: String| {
        let url = service.url(&format!("/api/v1/evaluations/{id}"));
        async move {
            let response = client().get(url).send().await.ok()?;
            (response.status() == 200).then_some(())?;
            response.json::<Value>().await.ok()
        }
    };
    let progressing = wait_for_async(Duration::from_secs(120), || async {
        let e = get(id.clone()).await?;
        e["progress"]["completed"].as_u64().filter(|n| *n > 0).map(|_| e)
    })
    .await;
    assert!(progressing.is_some(), "no progress; log:\n{}", service.log_text());

    let frozen = Frozen::new(apiserver_pid(&ns.env["LMEVAL_CLUSTER_DIR"]));
    let stopped_at = Instant::now();
    let mut reads = 0;
    let mut write_checked = false;
    while stopped_at.elapsed() < Duration::from_secs(10) {
        let e = get(id.clone()).await.expect("GET answered from the cache while the API server is down");
        assert_eq!(e["id"], id.as_str());
        let list = client().get(service.url("/api/v1/evaluations")).send().await.expect("list");
        assert_eq!(list.status(), 200);
        reads += 2;
        if !write_checked {
            let started = Instant::now();
            let write = client()
                .post(service.url("/api/v1/evaluations"))
                .json(&json!({"model": "dummy", "tasks": ["lmeval_aas_mc"], "limit": 1}))
                .send()
                .await
                .expect("POST answered");
            let (status, headers) = (write.status(), write.headers().clone());
            let body = write.text().await.unwrap_or_default();
            assert_eq!(status, 503, "writes are refused while the API server is away: {body}");
            assert!(headers.contains_key("retry-after"));
            assert_eq!(headers["content-type"], "application/problem+json");
            assert!(started.elapsed() < Duration::from_secs(5), "the refusal comes within the API timeout");
            let cancel = client()
                .post(service.url(&format!("/api/v1/evaluations/{bystander}/cancel")))
                .send()
                .await
                .expect("cancel");
            assert_eq!(cancel.status(), 503);
            write_checked = true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(frozen);
    assert!(reads > 10, "reads kept being answered: {reads}");

    // Recovery: new writes work again and the evaluation finishes as if nothing happened.
    let recovered = wait_for_async(Duration::from_secs(60), || async {
        let response = client()
            .post(service.url("/api/v1/evaluations?dry_run=false"))
            .json(&json!({"model": "dummy", "tasks": ["lmeval_aas_mc"], "limit": 1}))
            .send()
            .await
            .ok()?;
        (response.status() == 202).then_some(())
    })
    .await;
    assert!(recovered.is_some(), "writes recover; log:\n{}", service.log_text());
    let done = wait_for_async(Duration::from_secs(300), || async {
        let e = get(id.clone()).await?;
        matches!(e["state"].as_str(), Some("succeeded" | "failed" | "cancelled")).then_some(e)
    })
    .await
    .expect("the evaluation ends");
    assert_eq!(done["state"], "succeeded", "{done}\n{}", service.log_text());
    assert!(done["metrics"].as_array().is_some_and(|m| !m.is_empty()));
}
