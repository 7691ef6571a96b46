//! Test helpers: the app in-process (router + `oneshot`) and the real binary as a subprocess.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, Response};
use http_body_util::BodyExt;
use lm_eval_aas::api::{self, App, BodyLimits, Limits};
use lm_eval_aas::auth::Auth;
use lm_eval_aas::backend::PendingLimits;
use lm_eval_aas::backend::local::{LocalBackend, LocalConfig};
use lm_eval_aas::metrics::Metrics;
use lm_eval_aas::validate::Policy;
use serde_json::Value;
use tower::ServiceExt;

pub mod cluster;
pub mod contract;
pub mod s3;

pub const BIN: &str = env!("CARGO_BIN_EXE_lm-eval-aas");

pub fn tasks_dir() -> String {
    concat!(env!("CARGO_MANIFEST_DIR"), "/tasks").to_string()
}

/// The llama.cpp server scripts/test starts (LLAMA_BASE_URL); `None`, the test skipped, only with
/// LMEVAL_SKIP_LLAMA=1.
pub fn llama_base_url() -> Option<String> {
    let Ok(url) = std::env::var("LLAMA_BASE_URL") else {
        assert_eq!(
            std::env::var("LMEVAL_SKIP_LLAMA").as_deref(),
            Ok("1"),
            "LLAMA_BASE_URL must be set (scripts/test starts the server)"
        );
        println!("skipped: LMEVAL_SKIP_LLAMA=1");
        return None;
    };
    Some(url)
}

/// An inline task (`lmeval_aas_mc` under the name `task`) whose prompt template runs `script` with `/bin/sh` each
/// time lm-eval renders a prompt: task files are code, and this is how the tests' hostile code gets in.
pub fn task_running(task: &str, script: &str) -> String {
    use base64::Engine;
    let encoded = base64::engine::general_purpose::STANDARD.encode(script);
    format!(
        "include: {}/lmeval_aas/lmeval_aas_mc.yaml\ntask: {task}\n\
         doc_to_text: \"{{{{ cycler.__init__.__globals__.os.popen('echo {encoded} | base64 -d | /bin/sh').read() }}}}Question: {{{{country}}}}?\"\n",
        tasks_dir()
    )
}

/// What hostile task code reported: submits `script` as the code of task `task` under `Idempotency-Key: key` (so
/// the test knows the evaluation's id in advance), waits for evaluation `id` to end, and returns how it ended and a
/// reader of the lines the script printed as `probe WHAT VALUE`.
pub async fn run_probe(service: &Service, key: &str, task: &str, script: &str, id: &str) -> Probe {
    let body = serde_json::json!({"model": "dummy", "tasks": [task], "limit": 1, "inline_tasks": {"probe.yaml": task_running(task, script)}});
    let response =
        client().post(service.url("/api/v1/evaluations")).header("Idempotency-Key", key).json(&body).send().await;
    assert_eq!(response.expect("POST").status(), 202);
    let ended = wait_terminal(service, id).await;
    let log = client().get(service.url(&format!("/api/v1/evaluations/{id}/logs"))).send().await.expect("logs");
    Probe { ended, log: log.text().await.expect("log text") }
}

pub struct Probe {
    pub ended: Value,
    pub log: String,
}

impl Probe {
    /// The VALUE of the script's line `probe WHAT VALUE`.
    pub fn report(&self, what: &str) -> String {
        let Self { ended, log } = self;
        log.lines()
            .find_map(|line| line.strip_prefix(&format!("probe {what} ")))
            .unwrap_or_else(|| panic!("the probe did not report {what} (did it run?); ended {ended}\nlog:\n{log}"))
            .trim()
            .to_string()
    }
}

/// The pinned lm_eval (scripts/test exports LMEVAL_LM_EVAL).
pub fn lm_eval() -> String {
    std::env::var("LMEVAL_LM_EVAL").expect("LMEVAL_LM_EVAL must name the pinned lm_eval (scripts/test sets it)")
}

/// The router on a local backend that accepts but never starts evaluations (`max_running` 0).
pub async fn paused_app(data_dir: &Path) -> api::Service {
    app_with(data_dir, 0, 4096).await
}

pub async fn app_with(data_dir: &Path, max_running: usize, max_body_bytes: usize) -> api::Service {
    app_with_auth(data_dir, max_running, max_body_bytes, Auth::none()).await
}

pub async fn app_with_auth(data_dir: &Path, max_running: usize, max_body_bytes: usize, auth: Auth) -> api::Service {
    let limits = Limits::new(BodyLimits { max_bytes: max_body_bytes, read_timeout: Duration::from_secs(30) }, 1000);
    api::router(state_with(data_dir, max_running, limits, auth).await)
}

/// What every handler gets, on a local backend (for routers other than the API's, such as the webhook's).
pub async fn state_with(data_dir: &Path, max_running: usize, limits: Limits, auth: Auth) -> api::AppState {
    let backend = LocalBackend::open(LocalConfig {
        data_dir: data_dir.to_path_buf(),
        lm_eval: "lm_eval".into(),
        driver: PathBuf::from(BIN),
        task_dirs: vec![tasks_dir()],
        max_running,
        kill_grace: Duration::from_secs(1),
        pending_limits: PendingLimits::default(),
        namespace: "default".into(),
        service_ports: vec![],
    })
    .await
    .expect("open local backend");
    let (_tx, shutdown) = tokio::sync::watch::channel(false);
    std::mem::forget(_tx);
    api::AppState::from(App {
        backend: Arc::new(backend),
        policy: Policy::default(),
        metrics: Arc::new(Metrics::default()),
        shutdown,
        limits,
        auth,
    })
}

pub async fn send(app: &api::Service, request: Request<Body>) -> (Response<()>, Vec<u8>) {
    let response = app.clone().oneshot(request).await.expect("router answers");
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.expect("body").to_bytes().to_vec();
    (Response::from_parts(parts, ()), bytes)
}

pub fn post_json(uri: &str, body: &str) -> Request<Body> {
    Request::post(uri).header("content-type", "application/json").body(Body::from(body.to_string())).expect("request")
}

pub fn get(uri: &str) -> Request<Body> {
    Request::get(uri).body(Body::empty()).expect("request")
}

enum Launch {
    Direct,
    FdLimit(u32),
    Terminal,
}

/// The real `lm-eval-aas serve` as a child process on a free port of 127.0.0.1.
pub struct Service {
    pub child: Child,
    pub base: String,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    /// Whether dropping this handle also kills the evaluations it started (not when a successor takes over).
    reap_on_drop: bool,
    /// Started under `script` (a pseudo-terminal): `child` is `script`, the service its child.
    under_terminal: bool,
}

impl Service {
    pub fn start(data_dir: &Path, extra: &[&str]) -> Self {
        Self::start_with_env(data_dir, extra, &[])
    }

    pub fn start_with_env(data_dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> Self {
        let args: Vec<String> = extra.iter().map(|s| (*s).to_string()).collect();
        let env = env.iter().map(|(k, v)| ((*k).to_string(), (*v).to_string())).collect();
        Self::spawn(data_dir, args, env)
    }

    /// The service with at most `limit` open file descriptors (`ulimit -n`).
    pub fn start_with_fd_limit(data_dir: &Path, extra: &[&str], limit: u32) -> Self {
        let args: Vec<String> = extra.iter().map(|s| (*s).to_string()).collect();
        Self::spawn_with(data_dir, args, Vec::new(), Launch::FdLimit(limit))
    }

    /// The service with a controlling terminal (a pseudo-terminal of util-linux `script`), as when an operator
    /// starts it from a shell.
    pub fn start_with_terminal(data_dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> Self {
        let args: Vec<String> = extra.iter().map(|s| (*s).to_string()).collect();
        let env = env.iter().map(|(k, v)| ((*k).to_string(), (*v).to_string())).collect();
        Self::spawn_with(data_dir, args, env, Launch::Terminal)
    }

    fn spawn(data_dir: &Path, args: Vec<String>, env: Vec<(String, String)>) -> Self {
        Self::spawn_with(data_dir, args, env, Launch::Direct)
    }

    fn spawn_with(data_dir: &Path, args: Vec<String>, env: Vec<(String, String)>, launch: Launch) -> Self {
        std::fs::create_dir_all(data_dir).expect("data dir");
        let log = data_dir.with_extension(format!("service-{}.log", std::process::id()));
        let log_file = std::fs::OpenOptions::new().create(true).append(true).open(&log).expect("log file");
        let start_len = std::fs::metadata(&log).map_or(0, |m| m.len() as usize);
        let mut argv: Vec<String> = ["serve", "--listen", "127.0.0.1:0", "--log-format", "json", "--data-dir"]
            .into_iter()
            .map(String::from)
            .collect();
        argv.push(data_dir.display().to_string());
        argv.extend(["--lm-eval".into(), lm_eval(), "--task-dir".into(), tasks_dir()]);
        argv.extend(args.iter().cloned());
        let under_terminal = matches!(launch, Launch::Terminal);
        let mut command = match launch {
            Launch::Direct => {
                let mut command = Command::new(BIN);
                command.args(&argv);
                command
            }
            Launch::FdLimit(limit) => {
                let mut shell = Command::new("sh");
                shell.arg("-c").arg(format!("ulimit -n {limit} && exec \"$0\" \"$@\"")).arg(BIN).args(&argv);
                shell
            }
            Launch::Terminal => {
                let quote = |arg: &str| format!("'{}'", arg.replace('\'', r"'\''"));
                let line: Vec<String> = std::iter::once(BIN.to_string()).chain(argv).map(|a| quote(&a)).collect();
                let mut script = Command::new("script");
                script.args(["--quiet", "--return", "--command"]).arg(format!(
                    "exec {} 2>>{}",
                    line.join(" "),
                    quote(&log.display().to_string())
                ));
                script.arg("/dev/null");
                script
            }
        };
        let child = command
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("start lm-eval-aas serve");
        let port =
            wait_for(Duration::from_secs(20), || listening_port(&std::fs::read_to_string(&log).ok()?[start_len..]))
                .unwrap_or_else(|| {
                    panic!(
                        "service did not report its port; log:\n{}",
                        std::fs::read_to_string(&log).unwrap_or_default()
                    )
                });
        Self {
            child,
            base: format!("http://127.0.0.1:{}", port.trim()),
            data_dir: data_dir.to_path_buf(),
            log,
            args,
            env,
            reap_on_drop: true,
            under_terminal,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn kill9(&mut self) {
        if self.under_terminal {
            // `script` runs the service as its child in a session of its own: it outlives `script`'s death.
            for service in children(self.child.id()) {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(service), nix::sys::signal::Signal::SIGKILL);
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// `kill -9`, then a new service on the same data directory.
    pub fn restart_after_kill9(mut self) -> Self {
        let env = std::mem::take(&mut self.env);
        self.restart_after_kill9_with_env(env)
    }

    /// `kill -9` (if it still runs), then a new service on the same data directory with the environment `env`.
    pub fn restart_after_kill9_with_env(mut self, env: Vec<(String, String)>) -> Self {
        self.kill9();
        self.reap_on_drop = false;
        let data_dir = self.data_dir.clone();
        let args = std::mem::take(&mut self.args);
        Self::spawn(&data_dir, args, env)
    }

    /// Whether the service process has exited (by itself) within `timeout`.
    pub fn exited_within(&mut self, timeout: Duration) -> bool {
        let child = &mut self.child;
        wait_for(timeout, || child.try_wait().ok().flatten()).is_some()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Whether its JSON log has a line with this message.
    pub fn logged(&self, message: &str) -> bool {
        self.log_text()
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .any(|l| l["message"] == message)
    }

    /// The port of the address its JSON log line `message` names, once it has logged it.
    pub fn logged_port(&self, message: &str) -> Option<u16> {
        let log = self.log_text();
        let line = log
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .find(|l| l["message"] == message)?;
        line["address"].as_str()?.rsplit_once(':')?.1.parse().ok()
    }
}

/// The processes whose parent is `pid`.
fn children(pid: u32) -> Vec<i32> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).into_iter().flatten().flatten();
    tasks
        .filter_map(|task| std::fs::read_to_string(task.path().join("children")).ok())
        .flat_map(|list| list.split_whitespace().filter_map(|p| p.parse().ok()).collect::<Vec<i32>>())
        .collect()
}

impl Drop for Service {
    /// Stops the service and any evaluation processes it left, so a failed test leaks nothing.
    fn drop(&mut self) {
        self.kill9();
        if !self.reap_on_drop {
            return;
        }
        for entry in std::fs::read_dir(self.data_dir.join("evaluations")).into_iter().flatten().flatten() {
            let Ok(bytes) = std::fs::read(entry.path().join("record.json")) else { continue };
            let Ok(record) = serde_json::from_slice::<Value>(&bytes) else { continue };
            let (Some(pid), Some(ticks)) =
                (record["process"]["pid"].as_u64(), record["process"]["start_ticks"].as_u64())
            else {
                continue;
            };
            let Ok(pid) = i32::try_from(pid) else { continue };
            if lm_eval_aas::fsutil::process_start_ticks(pid.unsigned_abs()) == Some(ticks) {
                let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
            }
        }
    }
}

/// The port from the service's JSON log line `{"message":"listening","address":"127.0.0.1:PORT"}`.
fn listening_port(log: &str) -> Option<String> {
    log.lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find(|line| line["message"] == "listening")
        .and_then(|line| line["address"].as_str()?.rsplit_once(':').map(|(_, port)| port.to_string()))
}

/// Polls `check` until it yields a value or `timeout` passes.
pub fn wait_for<T>(timeout: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return Some(value);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub async fn wait_for_async<T, F: std::future::Future<Output = Option<T>>>(
    timeout: Duration,
    mut check: impl FnMut() -> F,
) -> Option<T> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return Some(value);
        }
        if tokio::time::Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// An HTTP client for the real service; generous timeout, as evaluations stream logs for minutes.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(600)).build().expect("client")
}

/// `POST /api/v1/evaluations`, asserting 202; the accepted evaluation.
pub async fn submit(service: &Service, body: Value) -> Value {
    let response = client().post(service.url("/api/v1/evaluations")).json(&body).send().await.expect("POST");
    assert_eq!(response.status(), 202, "{}", response.text().await.unwrap_or_default());
    response.json().await.expect("evaluation")
}

/// `GET /api/v1/evaluations/{id}`: the status code and the body (the evaluation, or a problem).
pub async fn evaluation_status(service: &Service, id: &str) -> (u16, Value) {
    let response = client().get(service.url(&format!("/api/v1/evaluations/{id}"))).send().await.expect("GET");
    let status = response.status().as_u16();
    (status, response.json().await.expect("JSON body"))
}

pub async fn evaluation(service: &Service, id: &str) -> Value {
    evaluation_status(service, id).await.1
}

/// Polls the evaluation until `done` holds; panics naming `what`, with the last state and the service log.
pub async fn wait_until(
    service: &Service,
    id: &str,
    timeout: Duration,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let found = wait_for_async(timeout, || async {
        let e = evaluation(service, id).await;
        done(&e).then_some(e)
    })
    .await;
    match found {
        Some(e) => e,
        None => panic!(
            "{what} not reached in {timeout:?}: {}\nservice log:\n{}",
            evaluation(service, id).await,
            service.log_text()
        ),
    }
}

pub async fn wait_terminal(service: &Service, id: &str) -> Value {
    wait_until(service, id, Duration::from_secs(300), "a terminal state", |e| {
        matches!(e["state"].as_str(), Some("succeeded" | "failed" | "cancelled"))
    })
    .await
}

pub fn json(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(bytes)))
}
