//! The service's own environment never reaches lm_eval: a canary in it is neither in lm_eval's environment nor
//! in what lm_eval sends to a URL the request names. Apart from tests/hostile.rs, whose latency checks must not
//! share the machine with lm_eval starting up.

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use common::{Service, client, submit, wait_for};
use serde_json::json;

/// The environment of every process that carries evaluation `id`'s id: `(command line, environment)`.
fn processes_of(id: &str) -> Vec<(String, String)> {
    let marker = format!("LMEVAL_EVALUATION_ID={id}");
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else { continue };
        let environ = String::from_utf8_lossy(&environ).replace('\0', "\n");
        if environ.lines().any(|line| line == marker) {
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            found.push((String::from_utf8_lossy(&cmdline).replace('\0', " "), environ));
        }
    }
    found
}

/// Accepts connections on 127.0.0.1 and keeps every request it is sent, answering each as an
/// OpenAI-compatible completions server would (one completion, "x").
fn probe_listener() -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/v1/completions", listener.local_addr().expect("address"));
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let keep = std::sync::Arc::clone(&seen);
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut stream = stream;
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let mut request = Vec::new();
            let mut buf = [0u8; 16384];
            while let Ok(n) = stream.read(&mut buf) {
                if n == 0 {
                    break;
                }
                request.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&request).to_string();
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let length = head
                        .lines()
                        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length: ").map(str::to_string))
                        .and_then(|n| n.trim().parse::<usize>().ok())
                        .unwrap_or(0);
                    if body.len() >= length {
                        break;
                    }
                }
            }
            keep.lock().expect("lock").push(String::from_utf8_lossy(&request).to_string());
            let answer = r#"{"id":"1","object":"text_completion","model":"m","choices":[{"index":0,"text":"x","finish_reason":"stop"}]}"#;
            let response = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{answer}",
                answer.len()
            );
            let _ = stream.write_all(response.as_bytes());
        }
    });
    (url, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_services_own_environment_never_reaches_lm_eval() {
    const CANARY: &str = "canary-7f3a9c";
    let dir = tempfile::tempdir().expect("tempdir");
    let secrets = [("OPENAI_API_KEY", CANARY), ("HF_TOKEN", CANARY), ("AWS_SECRET_ACCESS_KEY", CANARY)];
    let service = Service::start_with_env(&dir.path().join("data"), &["--max-running", "2"], &secrets);

    let slow = submit(
        &service,
        json!({"model": "dummy", "tasks": ["lmeval_aas_slow"], "env": [{"name": "MODE", "value": "x"}]}),
    )
    .await;
    let id = slow["id"].as_str().expect("id").to_string();
    let processes = wait_for(Duration::from_secs(60), || {
        let found = processes_of(&id);
        found.iter().any(|(cmdline, _)| cmdline.contains("lm_eval") && !cmdline.contains(" driver ")).then_some(found)
    })
    .expect("the driver and lm_eval run");
    for (cmdline, environ) in &processes {
        assert!(!environ.contains(CANARY), "{cmdline} holds the service's credentials:\n{environ}");
    }
    let lm_eval = processes.iter().find(|(cmdline, _)| !cmdline.contains(" driver ")).expect("lm_eval");
    assert!(lm_eval.1.lines().any(|line| line == "MODE=x"), "the request's own env arrives: {}", lm_eval.1);
    let cancelled =
        client().post(service.url(&format!("/api/v1/evaluations/{id}/cancel"))).send().await.expect("cancel");
    assert_eq!(cancelled.status(), 202);

    let (url, seen) = probe_listener();
    let probe = submit(
        &service,
        json!({"model": "local-completions", "tasks": ["lmeval_aas_gen"], "limit": 1,
               "model_args": {"model": "m", "base_url": url, "tokenizer_backend": "none", "max_retries": 1}}),
    )
    .await;
    common::wait_terminal(&service, probe["id"].as_str().expect("id")).await;
    let requests = seen.lock().expect("lock").clone();
    assert!(!requests.is_empty(), "lm_eval called the URL the request named");
    for request in &requests {
        assert!(!request.contains(CANARY), "the service's credential went to the request's URL:\n{request}");
    }
}

/// The driver itself seals lm_eval's environment (the runner pod's holds the run record's settings and the
/// API server's address): only the basics and the names it is told to keep get through.
#[test]
fn the_driver_passes_only_the_basics_and_the_kept_names() {
    let output = std::process::Command::new(common::BIN)
        .args(["driver", "--echo", "--keep-env", "MODE", "--", "/usr/bin/env"])
        .env("OPENAI_API_KEY", "canary-7f3a9c")
        .env("KUBERNETES_SERVICE_HOST", "10.0.0.1")
        .env("MODE", "x")
        .env("LMEVAL_EVALUATION_ID", "1")
        .env_remove("LMEVAL_RUN_RECORD")
        .output()
        .expect("driver");
    let environment = String::from_utf8(output.stdout).expect("utf8");
    let names: Vec<&str> = environment.lines().filter_map(|line| line.split_once('=').map(|(name, _)| name)).collect();
    assert!(names.contains(&"MODE") && names.contains(&"LMEVAL_EVALUATION_ID") && names.contains(&"PATH"), "{names:?}");
    for leaked in ["OPENAI_API_KEY", "KUBERNETES_SERVICE_HOST"] {
        assert!(!names.contains(&leaked), "{leaked} reached the command: {names:?}");
    }
}
