//! The real binary against a hostile client: each case gets the status and the problem document it should,
//! and afterwards the service still answers `/healthz` in under 50 ms.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{Service, client, submit, wait_for};
use serde_json::{Value, json};

/// A response read off the socket: status, head (lower-cased) and body.
struct Raw {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Raw {
    fn problem(&self) -> Value {
        assert!(self.head.contains("content-type: application/problem+json"), "a problem document:\n{}", self.head);
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("problem JSON ({e}): {:?}", self.body))
    }
}

fn connect(service: &Service) -> TcpStream {
    let address = service.base.trim_start_matches("http://");
    let stream = TcpStream::connect(address).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    stream
}

/// Reads one response, to the end of its body or of the connection.
fn read_response(stream: &mut TcpStream) -> Raw {
    let mut bytes = Vec::new();
    let mut buf = [0u8; 65536];
    let head_end = loop {
        if let Some(end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") {
            break end;
        }
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => panic!("the connection ended before a response: {:?}", String::from_utf8_lossy(&bytes)),
            Ok(n) => bytes.extend_from_slice(&buf[..n]),
        }
    };
    let head = String::from_utf8_lossy(&bytes[..head_end]).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length: "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    let mut body = bytes[head_end + 4..].to_vec();
    while body.len() < length {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => body.extend_from_slice(&buf[..n]),
        }
    }
    let status = head.get(9..12).and_then(|s| s.parse().ok()).expect("a status line");
    Raw { status, head, body }
}

fn exchange(service: &Service, request: &[u8]) -> Raw {
    let mut stream = connect(service);
    stream.write_all(request).expect("send");
    read_response(&mut stream)
}

/// The service answers `/healthz` at once.
fn assert_healthy(service: &Service, after: &str) {
    let started = Instant::now();
    let response = exchange(service, b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
    let took = started.elapsed();
    assert_eq!(response.status, 200, "after {after}");
    assert!(took < Duration::from_millis(50), "/healthz took {took:?} after {after}");
}

#[test]
fn http_layer_errors_are_problem_documents() {
    let dir = tempfile::tempdir().expect("tempdir");
    let service =
        Service::start(&dir.path().join("data"), &["--max-running", "0", "--request-read-timeout-seconds", "1"]);
    let big_header =
        [b"GET /healthz HTTP/1.1\r\nhost: x\r\nx-big: ".to_vec(), vec![b'a'; 100_000], b"\r\n\r\n".to_vec()].concat();
    let long_target = [b"GET /".to_vec(), vec![b'a'; 70_000], b" HTTP/1.1\r\nhost: x\r\n\r\n".to_vec()].concat();
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("headers over 96 KiB", big_header, 431),
        ("a 70 KB request target", long_target, 414),
        ("a method that is not a token", b"G@T / HTTP/1.1\r\nhost: x\r\n\r\n".to_vec(), 400),
        (
            "Content-Length of 10 GB and no body",
            b"POST /api/v1/evaluations HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 10000000000\r\n\r\n".to_vec(),
            413,
        ),
        ("a head that stops half way", b"GET /healthz HTTP/1.1\r\nhost: x\r\n".to_vec(), 408),
        (
            "a body that stops half way",
            b"POST /api/v1/evaluations HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{".to_vec(),
            408,
        ),
        (
            "a form-encoded cross-site cancel",
            b"POST /api/v1/evaluations/7b0d8c5e-1111-4222-8333-944455556666/cancel HTTP/1.1\r\nhost: x\r\ncontent-type: application/x-www-form-urlencoded\r\ncontent-length: 3\r\n\r\na=b".to_vec(),
            415,
        ),
    ];
    for (name, request, status) in cases {
        let started = Instant::now();
        let response = exchange(&service, &request);
        assert_eq!(response.status, status, "{name}: {}", response.head);
        let problem = response.problem();
        assert_eq!(problem["status"], status, "{name}: {problem}");
        assert!(problem["type"].as_str().is_some_and(|t| t.starts_with("urn:lm-eval-aas:problem:")), "{name}");
        assert!(started.elapsed() < Duration::from_secs(5), "{name} took {:?}", started.elapsed());
        assert_healthy(&service, name);
    }
    // A form-encoded legacy cancel is refused as the Flask service refused a body it could not read: 400, JSON
    // with its `error` member, the problem's members beside it.
    let legacy = exchange(
        &service,
        b"DELETE /cancel_job?task_id=x HTTP/1.1\r\nhost: x\r\ncontent-type: text/plain\r\ncontent-length: 1\r\n\r\nx",
    );
    assert_eq!(legacy.status, 400, "{}", legacy.head);
    assert!(legacy.head.contains("content-type: application/json"), "{}", legacy.head);
    let body: serde_json::Value = serde_json::from_slice(&legacy.body).expect("JSON");
    assert!(body["error"].is_string() && body["type"] == "urn:lm-eval-aas:problem:unsupported-media-type", "{body}");
    assert_healthy(&service, "a form-encoded legacy cancel");
}

#[test]
fn a_body_sent_a_byte_at_a_time_arrives_whole() {
    let dir = tempfile::tempdir().expect("tempdir");
    let service = Service::start(&dir.path().join("data"), &["--max-running", "0"]);
    let body = json!({"model": "dummy", "tasks": ["lmeval_aas_mc"], "labels": {"padding": "x".repeat(60)}, "limit": 3})
        .to_string();
    let body = format!("{body}{}", " ".repeat(2000usize.saturating_sub(body.len())));
    let mut stream = connect(&service);
    stream.set_nodelay(true).expect("nodelay");
    let head = format!(
        "POST /api/v1/evaluations?dry_run=true HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).expect("head");
    for byte in body.as_bytes() {
        stream.write_all(std::slice::from_ref(byte)).expect("a byte");
    }
    let response = read_response(&mut stream);
    assert_eq!(response.status, 200, "{}", String::from_utf8_lossy(&response.body));
    let dry_run: Value = serde_json::from_slice(&response.body).expect("evaluation");
    assert_eq!(dry_run["request"]["limit"], 3);
    assert_healthy(&service, "a body in 2,000 segments");
}

/// A dry run of `body`: the status and the problem's field.
async fn refused(service: &Service, body: &Value) -> (u16, Value) {
    let response =
        client().post(service.url("/api/v1/evaluations?dry_run=true")).json(body).send().await.expect("POST");
    let status = response.status().as_u16();
    let problem: Value = response.json().await.expect("JSON");
    (status, problem["field"].clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_that_could_run_code_leak_credentials_or_not_fit_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let service = Service::start(&dir.path().join("data"), &["--max-running", "0", "--allow-env", "PYTHONWARNINGS"]);
    let base = |extra: Value| {
        let mut body = json!({"model": "dummy", "tasks": ["lmeval_aas_mc"]});
        body.as_object_mut().expect("object").extend(extra.as_object().expect("object").clone());
        body
    };
    let inline: serde_json::Map<String, Value> = (0..65).map(|i| (format!("t{i}.yaml"), json!("task: t"))).collect();
    let tasks: Vec<String> = (0..100_000).map(|i| format!("t{i}")).collect();
    let args: serde_json::Map<String, Value> = (0..20_000).map(|i| (format!("k{i}"), json!(i))).collect();
    let cases = [
        ("65 inline task files", base(json!({ "inline_tasks": inline })), 422, "inline_tasks"),
        ("100,000 task names", base(json!({ "tasks": tasks })), 422, "tasks"),
        ("20,000 model_args keys", base(json!({ "model_args": args })), 422, "model_args"),
        ("BROWSER", base(json!({"env": [{"name": "BROWSER", "value": "sh -c id"}]})), 403, "env[0].name"),
        ("HTTPS_PROXY", base(json!({"env": [{"name": "HTTPS_PROXY", "value": "http://x"}]})), 403, "env[0].name"),
        ("PYTHONSTARTUP", base(json!({"env": [{"name": "PYTHONSTARTUP", "value": "/x.py"}]})), 403, "env[0].name"),
        ("HOME", base(json!({"env": [{"name": "HOME", "value": "/x"}]})), 422, "env[0].name"),
        ("LD_PRELOAD", base(json!({"env": [{"name": "LD_PRELOAD", "value": "/x.so"}]})), 403, "env[0].name"),
        ("model_args.openaiapikey", base(json!({"model_args": {"openaiapikey": "x"}})), 422, "model_args.openaiapikey"),
        (
            "model_args.Authorization",
            base(json!({"model_args": {"Authorization": "x"}})),
            422,
            "model_args.Authorization",
        ),
        ("gen_kwargs.api_key", base(json!({"gen_kwargs": {"api_key": "x"}})), 422, "gen_kwargs.api_key"),
        ("metadata.token", base(json!({"metadata": {"token": "x"}})), 422, "metadata.token"),
        ("env HFTOKEN", base(json!({"env": [{"name": "HFTOKEN", "value": "x"}]})), 422, "env[0].value"),
        (
            "a password in a URL",
            base(json!({"env": [{"name": "DATABASE_URL", "value": "postgres://app:hunter2@db/x"}]})),
            422,
            "env[0].value",
        ),
        (
            "a key-shaped value",
            base(json!({"model_args": {"base_url": "sk-abcdefghijklmnopqrstuvwxyz"}})),
            422,
            "model_args.base_url",
        ),
    ];
    for (name, body, status, field) in cases {
        let (got, got_field) = refused(&service, &body).await;
        assert_eq!((got, got_field.as_str()), (status, Some(field)), "{name}");
        assert_healthy(&service, name);
    }
    let allowed = base(json!({"env": [{"name": "PYTHONWARNINGS", "value": "ignore"}]}));
    assert_eq!(refused(&service, &allowed).await.0, 200, "--allow-env lets the operator permit a name");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_evaluations_are_bounded_in_all_and_per_creator() {
    let dir = tempfile::tempdir().expect("tempdir");
    let args = ["--max-running", "0", "--max-pending", "3", "--max-pending-per-creator", "2"];
    let service = Service::start(&dir.path().join("data"), &args);
    let body = json!({"model": "dummy", "tasks": ["lmeval_aas_mc"]});
    submit(&service, body.clone()).await;
    submit(&service, body.clone()).await;
    let response = client().post(service.url("/api/v1/evaluations")).json(&body).send().await.expect("POST");
    assert_eq!(response.status(), 429);
    assert!(response.headers().contains_key("retry-after"));
    let problem: Value = response.json().await.expect("problem");
    assert!(problem["detail"].as_str().is_some_and(|d| d.contains("--max-pending-per-creator")), "{problem}");
    let legacy = client()
        .post(service.url("/submit_job"))
        .json(&json!({"model": "dummy", "tasks": "lmeval_aas_mc"}))
        .send()
        .await
        .expect("POST");
    assert_eq!(legacy.status(), 429, "the Flask route is bounded too");
    assert_healthy(&service, "429s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_and_log_followers_are_capped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let args = ["--max-running", "0", "--max-log-followers", "2", "--max-connections", "8"];
    let service = Service::start(&dir.path().join("data"), &args);
    let created = submit(&service, json!({"model": "dummy", "tasks": ["lmeval_aas_mc"]})).await;
    let follow = service.url(&format!("/api/v1/evaluations/{}/logs?follow=true", created["id"].as_str().expect("id")));
    let first = client().get(&follow).send().await.expect("follow");
    let second = client().get(&follow).send().await.expect("follow");
    assert_eq!((first.status().as_u16(), second.status().as_u16()), (200, 200));
    let third = client().get(&follow).send().await.expect("follow");
    assert_eq!(third.status(), 503);
    assert!(third.headers().contains_key("retry-after"));
    drop((first, second));
    let again = wait_for(Duration::from_secs(5), || {
        let response =
            exchange(&service, format!("GET {} HTTP/1.1\r\nhost: x\r\n\r\n", &follow[service.base.len()..]).as_bytes());
        (response.status == 200).then_some(())
    });
    assert!(again.is_some(), "a follower's place is free once its client has gone");

    let idle: Vec<TcpStream> = (0..8).map(|_| connect(&service)).collect();
    let turned_away = wait_for(Duration::from_secs(5), || {
        let response = exchange(&service, b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n");
        (response.status == 503).then_some(response)
    })
    .expect("a connection beyond the cap is answered 503");
    assert!(turned_away.head.contains("retry-after: 1"));
    assert_eq!(turned_away.problem()["status"], 503);
    drop(idle);
    wait_for(Duration::from_secs(5), || {
        (exchange(&service, b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n").status == 200).then_some(())
    })
    .expect("served again once the idle connections are gone");
    assert_healthy(&service, "the connection cap");
}

#[test]
fn accept_failures_back_off_with_one_log_line_per_streak() {
    let dir = tempfile::tempdir().expect("tempdir");
    let service = Service::start_with_fd_limit(&dir.path().join("data"), &["--max-running", "0"], 64);
    let mut idle = Vec::new();
    for _ in 0..80 {
        match TcpStream::connect(service.base.trim_start_matches("http://")) {
            Ok(stream) => idle.push(stream),
            Err(e) => panic!("connect: {e}"),
        }
    }
    let streak_started =
        wait_for(Duration::from_secs(5), || service.log_text().contains("accept failed").then_some(()));
    assert!(streak_started.is_some(), "the descriptors ran out: {}", service.log_text());
    std::thread::sleep(Duration::from_secs(2));
    drop(idle);
    wait_for(Duration::from_secs(10), || service.log_text().contains("accept works again").then_some(()))
        .expect("the streak ends once descriptors are free");
    let log = service.log_text();
    assert_eq!(log.matches("accept failed").count(), 1, "one line for the streak, not one per failure");
    let healthz = wait_for(Duration::from_secs(5), || {
        let response = exchange(&service, b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
        (response.status == 200).then_some(())
    });
    assert!(healthz.is_some());
    assert_healthy(&service, "running out of file descriptors");
}

/// A namespace that is not a Kubernetes name is refused at start, on the local backend too (it names every
/// evaluation's namespace and its routes).
#[test]
fn a_namespace_that_is_not_a_name_is_refused_at_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    for bad in ["A B", "../etc", "x".repeat(64).as_str()] {
        let child = std::process::Command::new(common::BIN)
            .args(["serve", "--listen", "127.0.0.1:0", "--namespace", bad, "--data-dir"])
            .arg(dir.path())
            .env_remove("RUST_BACKTRACE")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run lm-eval-aas serve");
        let (exited, stderr) = exit_of(child);
        assert!(exited.is_some_and(|status| !status.success()), "{bad:?} was accepted: the service is serving");
        assert!(stderr.contains("--namespace") && stderr.contains("is not a namespace name"), "{bad:?}: {stderr}");
    }
}

/// How a service that should refuse to start ended (`None`: it was still running after 10 s, and is killed), and
/// what it said on standard error.
fn exit_of(mut child: std::process::Child) -> (Option<std::process::ExitStatus>, String) {
    let exited = wait_for(Duration::from_secs(10), || child.try_wait().ok().flatten());
    if exited.is_none() {
        let _ = child.kill();
    }
    let output = child.wait_with_output().expect("its output");
    (exited, String::from_utf8_lossy(&output.stderr).into_owned())
}

/// Reachable from other machines, the local backend does not start without an explicit `--auth`; `--auth none`
/// given explicitly there is taken, with a warning that anyone may do anything. (The address is TEST-NET-1, which
/// no interface here has: both are decided before the listener binds, so nothing ever listens beyond loopback.)
#[test]
fn a_non_loopback_address_needs_an_explicit_auth() {
    let dir = tempfile::tempdir().expect("tempdir");
    let start = |extra: &[&str]| {
        std::process::Command::new(common::BIN)
            .args(["serve", "--listen", "192.0.2.1:0", "--log-format", "json", "--lm-eval", &common::lm_eval()])
            .args(extra)
            .arg("--data-dir")
            .arg(dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run lm-eval-aas serve")
    };
    let (exited, stderr) = exit_of(start(&[]));
    assert!(exited.is_some_and(|status| !status.success()), "started without --auth on a non-loopback address");
    assert!(stderr.contains("--auth") && stderr.contains("not loopback"), "{stderr}");

    // Taken, warned about, and then the listener cannot bind an address no interface has.
    let (exited, stderr) = exit_of(start(&["--auth", "none"]));
    assert!(exited.is_some_and(|status| !status.success()), "{stderr}");
    assert!(stderr.contains("cannot bind 192.0.2.1:0"), "it got as far as binding: {stderr}");
    let warned = stderr.lines().any(|l| l.contains("\"level\":\"WARN\"") && l.contains("--auth none"));
    assert!(warned, "no warning for --auth none on a non-loopback address: {stderr}");
}
