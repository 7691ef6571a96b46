//! Many clients at once against the real binary and the real `lm_eval`: nothing lost, the limit holds.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::Service;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_submissions_with_a_limit_of_two_all_finish() {
    let dir = tempfile::tempdir().expect("tempdir");
    let service = Service::start(&dir.path().join("data"), &["--max-running", "2"]);
    let client = reqwest::Client::new();
    let submissions = (0..50).map(|i| {
        let client = client.clone();
        let url = service.url("/api/v1/evaluations");
        tokio::spawn(async move {
            let body =
                json!({"model": "dummy", "tasks": ["lmeval_aas_mc"], "limit": 1, "labels": {"n": i.to_string()}});
            let response = client.post(url).json(&body).send().await.expect("POST");
            assert_eq!(response.status(), 202);
            response.json::<Value>().await.expect("json")["id"].as_str().expect("id").to_string()
        })
    });
    let ids: BTreeSet<String> =
        futures::future::join_all(submissions).await.into_iter().map(|r| r.expect("task")).collect();
    assert_eq!(ids.len(), 50, "fifty distinct evaluations");

    let mut most_running = 0;
    let mut order_violations = 0;
    let deadline = Instant::now() + Duration::from_secs(1500);
    let all_done = loop {
        assert!(Instant::now() < deadline, "not all finished; log:\n{}", service.log_text());
        let list: Value = client
            .get(service.url("/api/v1/evaluations?page_size=500"))
            .send()
            .await
            .expect("list")
            .json()
            .await
            .expect("json");
        let items = list["items"].as_array().expect("items").clone();
        most_running = most_running.max(items.iter().filter(|e| e["state"] == "running").count());
        // Oldest first: once one is still pending, every newer one must be pending too.
        let by_age: Vec<&Value> = items.iter().rev().collect();
        if let Some(first_pending) = by_age.iter().position(|e| e["state"] == "pending")
            && by_age[first_pending..].iter().any(|e| e["state"] != "pending")
        {
            order_violations += 1;
        }
        if items.len() == 50 && items.iter().all(|e| e["state"] == "succeeded" || e["state"] == "failed") {
            break items;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert!(most_running <= 2, "at most two ran at once, saw {most_running}");
    assert!(most_running >= 1);
    assert_eq!(order_violations, 0, "pending evaluations start in submission order");
    let listed: BTreeSet<String> = all_done.iter().map(|e| e["id"].as_str().expect("id").to_string()).collect();
    assert_eq!(listed, ids, "none lost");
    let failed: Vec<_> = all_done.iter().filter(|e| e["state"] != "succeeded").collect();
    assert!(failed.is_empty(), "all succeeded: {failed:?}");
}
