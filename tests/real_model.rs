//! A real model (SmolLM2-135M behind llama.cpp's OpenAI-compatible server, started by
//! scripts/test as LLAMA_BASE_URL) evaluated through our service, the way users point
//! lm-eval-aas at vLLM or KServe endpoints.

mod common;

use std::time::Duration;

use common::{Service, wait_for_async};
use serde_json::{Value, json};

#[tokio::test]
async fn local_completions_against_a_real_model_succeeds_with_metrics() {
    let Some(base_url) = common::llama_base_url() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let service = Service::start(&dir.path().join("data"), &[]);
    let client = reqwest::Client::new();
    let request = json!({
        "model": "local-completions",
        "model_args": {"model": "smollm2", "base_url": format!("{base_url}/completions"), "tokenizer_backend": "none", "num_concurrent": 1, "max_retries": 2},
        "tasks": ["lmeval_aas_gen"],
        "limit": 8,
        "labels": {"suite": "real-model"}
    });
    let created: Value = client
        .post(service.url("/api/v1/evaluations"))
        .json(&request)
        .send()
        .await
        .expect("POST")
        .json()
        .await
        .expect("json");
    let id = created["id"].as_str().expect("id").to_string();
    let done = wait_for_async(Duration::from_secs(600), || async {
        let e: Value =
            client.get(service.url(&format!("/api/v1/evaluations/{id}"))).send().await.ok()?.json().await.ok()?;
        matches!(e["state"].as_str(), Some("succeeded" | "failed" | "cancelled")).then_some(e)
    })
    .await
    .expect("the evaluation ends");
    let log = client
        .get(service.url(&format!("/api/v1/evaluations/{id}/logs?tail_lines=40")))
        .send()
        .await
        .expect("logs")
        .text()
        .await
        .expect("text");
    assert_eq!(done["state"], "succeeded", "{done}\n{log}");
    let metrics = done["metrics"].as_array().expect("metrics");
    let exact = metrics
        .iter()
        .find(|m| m["task"] == "lmeval_aas_gen" && m["metric"] == "exact_match")
        .expect("exact_match row");
    let value = exact["value"].as_f64().expect("a number");
    assert!((0.0..=1.0).contains(&value));
    println!("SmolLM2-135M on lmeval_aas_gen (8 docs): exact_match = {value}");
}
