//! Task files are code: an inline task whose template runs a shell probes, from inside lm_eval, another
//! evaluation's directory and places outside its own. On the local backend Landlock refuses all of it while the
//! evaluation itself completes. Where the kernel has no Landlock the service must warn, and the test says it skipped.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine;
use common::{BIN, Service, submit, tasks_dir, wait_terminal};
use serde_json::{Value, json};

const SECRET: &str = "evaluation-a-secret-5d1f";

/// Every file under `dir` with its content, by path relative to `dir`.
fn tree(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(next) = pending.pop() {
        for entry in std::fs::read_dir(&next).expect("read_dir").flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else {
                let content = std::fs::read(&path).expect("read");
                files.insert(path.strip_prefix(dir).expect("inside").to_path_buf(), content);
            }
        }
    }
    files
}

/// Every string inside a JSON value.
fn strings(value: &Value, found: &mut Vec<String>) {
    match value {
        Value::String(s) => found.push(s.clone()),
        Value::Array(items) => items.iter().for_each(|v| strings(v, found)),
        Value::Object(map) => map.values().for_each(|v| strings(v, found)),
        _ => {}
    }
}

/// The shell the template runs: each attempt reports `name=ALLOWED:…;` or `name=DENIED:<error>;`, between
/// markers carrying `nonce`, on one line.
fn probe_script(nonce: &str, other: &Path, data: &Path, outside: &Path) -> String {
    let quote = |path: &Path| format!("'{}'", path.display());
    let (other, data, outside) = (quote(other), quote(data), quote(outside));
    attempts_script(
        nonce,
        &format!(
            r#"try write_other sh -c 'echo pwned > "$1"' _ {other}/pwned.txt
try read_other cat {other}/secret.txt
try list_other ls {other}
try write_data_root sh -c 'echo pwned > "$1"' _ {data}/pwned.txt
try write_outside sh -c 'echo pwned > "$1"' _ {outside}/pwned.txt
try write_own sh -c 'echo ok > "$1"' _ "$PWD/output/probe-own.txt"
"#
        ),
    )
}

/// `attempts` (lines of `try NAME COMMAND…`) as the shell the template runs, reporting as `probe_script` says.
fn attempts_script(nonce: &str, attempts: &str) -> String {
    format!(
        r#"try() {{
  name=$1; shift
  if out=$("$@" 2>&1); then printf '%s=ALLOWED:%s;' "$name" "$out"; else printf '%s=DENIED:%s;' "$name" "$out"; fi
}}
{{
printf 'PROBE-BEGIN-{nonce};'
{attempts}printf 'PROBE-END-{nonce}'
}} | tr '\n' ' '
"#
    )
}

/// An inline task (`lmeval_aas_probe`) whose prompt is what `script` prints.
fn probe_task(script: &str) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(script);
    let template = format!("{{{{ cycler.__init__.__globals__.os.popen('echo {encoded} | base64 -d | sh').read() }}}}");
    format!(
        "include: {}/lmeval_aas/lmeval_aas_gen.yaml\ntask: lmeval_aas_probe\ndoc_to_text: {}\n",
        tasks_dir(),
        serde_json::to_string(&template).expect("quoted")
    )
}

/// The probe's report, `name → (allowed, what it printed)`, from the prompts in `dir`'s samples files.
fn report(dir: &Path, nonce: &str) -> Option<BTreeMap<String, (bool, String)>> {
    let (begin, end) = (format!("PROBE-BEGIN-{nonce};"), format!("PROBE-END-{nonce}"));
    for (path, content) in tree(&dir.join("output")) {
        if !path.file_name().is_some_and(|n| n.to_string_lossy().starts_with("samples_lmeval_aas_probe")) {
            continue;
        }
        let mut found = Vec::new();
        for line in String::from_utf8_lossy(&content).lines() {
            strings(&serde_json::from_str(line).expect("samples line"), &mut found);
        }
        let Some(text) = found.iter().find(|s| s.contains(&begin) && s.contains(&end)) else { continue };
        let body = &text[text.find(&begin)? + begin.len()..text.find(&end)?];
        let entries = body.split(';').filter(|e| !e.is_empty()).filter_map(|entry| {
            let (name, rest) = entry.split_once('=')?;
            let (verdict, said) = rest.split_once(':')?;
            Some((name.to_string(), (verdict == "ALLOWED", said.trim().to_string())))
        });
        return Some(entries.collect());
    }
    None
}

/// Says, where the test output shows it even when captured, that and why the test was skipped.
fn skipped(why: &str) {
    let line = format!("local_sandbox: SKIPPED: {why}\n");
    print!("{line}");
    let _ = std::io::stderr().write_all(line.as_bytes());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_evaluations_code_cannot_touch_another_evaluation_or_write_outside_its_own() {
    let root = tempfile::tempdir().expect("tempdir");
    let root_path = std::fs::canonicalize(root.path()).expect("canonical");
    let data = root_path.join("data");
    let service = Service::start(&data, &["--max-running", "1"]);

    let probe = std::process::Command::new(BIN).args(["sandbox", "--probe"]).output().expect("sandbox --probe");
    let landlock: Value = serde_json::from_slice(&probe.stdout).expect("probe JSON");
    if landlock["landlock"] != "enforced" {
        assert!(
            common::wait_for(std::time::Duration::from_secs(5), || service
                .logged("Landlock is not available: lm_eval runs unconfined and can read and write other evaluations' directories")
                .then_some(()))
            .is_some(),
            "the service warns at start: {}",
            service.log_text()
        );
        skipped(&format!("this kernel does not enforce Landlock ({landlock}); the service warned at start"));
        return;
    }
    assert!(
        service.logged("lm_eval runs confined by Landlock to its evaluation's directory"),
        "{}",
        service.log_text()
    );

    // Evaluation A runs first and ends; its directory holds its files and a secret.
    let a = submit(&service, json!({"model": "dummy", "tasks": ["lmeval_aas_mc"], "limit": 2})).await;
    let a_id = a["id"].as_str().expect("id").to_string();
    let a_done = wait_terminal(&service, &a_id).await;
    assert_eq!(a_done["state"], "succeeded", "{a_done}");
    let a_dir = data.join("evaluations").join(&a_id);
    std::fs::write(a_dir.join("secret.txt"), SECRET).expect("secret");
    let a_before = tree(&a_dir);

    // Evaluation B's task renders a prompt by running the probe.
    let nonce = uuid::Uuid::new_v4().simple().to_string();
    let task = probe_task(&probe_script(&nonce, &a_dir, &data, &root_path));
    let b = submit(
        &service,
        json!({"model": "dummy", "tasks": ["lmeval_aas_probe"], "limit": 1, "log_samples": true,
               "inline_tasks": {"probe.yaml": task}}),
    )
    .await;
    let b_id = b["id"].as_str().expect("id").to_string();
    let b_done = wait_terminal(&service, &b_id).await;
    let b_dir = data.join("evaluations").join(&b_id);
    let b_log = std::fs::read_to_string(b_dir.join("log.txt")).unwrap_or_default();
    assert_eq!(b_done["state"], "succeeded", "the confined evaluation still completes: {b_done}\nits log:\n{b_log}");
    assert!(b_log.contains("lm_eval is confined by Landlock"), "its log says it was confined:\n{b_log}");

    let report = report(&b_dir, &nonce).unwrap_or_else(|| panic!("the probe ran and reported; B's log:\n{b_log}"));
    let (own_allowed, own_said) = report.get("write_own").cloned().expect("write_own reported");
    assert!(own_allowed && b_dir.join("output/probe-own.txt").exists(), "it may write its own output: {own_said}");
    for attempt in ["write_other", "read_other", "list_other", "write_data_root", "write_outside"] {
        let (allowed, said) = report.get(attempt).unwrap_or_else(|| panic!("{attempt} not reported: {report:?}"));
        assert!(!allowed && said.contains("Permission denied"), "{attempt} was not refused with EACCES: {said}");
    }
    assert!(!format!("{report:?}").contains(SECRET), "A's secret reached B: {report:?}");

    assert_eq!(tree(&a_dir), a_before, "A's directory is untouched");
    for outside in [data.join("pwned.txt"), root_path.join("pwned.txt")] {
        assert!(!outside.exists(), "{} was written", outside.display());
    }
}

/// The Landlock probe of this kernel, or `None` (the test skipped, said so) when it does not enforce Landlock.
fn landlock_or_skip() -> Option<Value> {
    let probe = std::process::Command::new(BIN).args(["sandbox", "--probe"]).output().expect("sandbox --probe");
    let landlock: Value = serde_json::from_slice(&probe.stdout).expect("probe JSON");
    if landlock["landlock"] != "enforced" {
        skipped(&format!("this kernel does not enforce Landlock ({landlock})"));
        return None;
    }
    Some(landlock)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_evaluations_code_cannot_call_the_service_write_the_shared_cache_or_use_a_terminal() {
    let Some(landlock) = landlock_or_skip() else { return };
    let root = tempfile::tempdir().expect("tempdir");
    let root_path = std::fs::canonicalize(root.path()).expect("canonical");
    let shared_cache = root_path.join("hf-shared");
    std::fs::create_dir_all(shared_cache.join("hub")).expect("shared cache");
    let cache = shared_cache.display().to_string();
    let service = Service::start_with_terminal(&root_path.join("data"), &[], &[("HF_HOME", cache.as_str())]);
    let service_port: u16 = service.base.rsplit_once(':').and_then(|(_, p)| p.parse().ok()).expect("port");
    // Another port of 127.0.0.1, which lm_eval may reach: only the service's own is refused.
    let elsewhere = std::net::TcpListener::bind("127.0.0.1:0").expect("listener");
    let other_port = elsewhere.local_addr().expect("address").port();
    let python = Path::new(&common::lm_eval()).with_file_name("python");
    let connect = |port: u16| {
        format!(
            r#"'{}' -c "__import__('sys').stdout.write(__import__('socket').create_connection(('127.0.0.1', {port}), 5) and 'connected')""#,
            python.display()
        )
    };
    let nonce = uuid::Uuid::new_v4().simple().to_string();
    let attempts = format!(
        r#"try connect_service {}
try connect_elsewhere {}
try write_shared_cache sh -c 'echo pwned > "$1"' _ '{cache}/hub/pwned.txt'
try write_own_cache sh -c 'mkdir -p "$HF_HOME/hub" && echo ok > "$HF_HOME/hub/own.txt" && echo "$HF_HOME"'
try open_tty sh -c 'exec 3<>/dev/tty && echo opened'
try controlling_terminal sh -c 'ps -o tty= -p $$ | grep -v "?"'
"#,
        connect(service_port),
        connect(other_port),
    );
    let task = probe_task(&attempts_script(&nonce, &attempts));
    let created = submit(
        &service,
        json!({"model": "dummy", "tasks": ["lmeval_aas_probe"], "limit": 1, "log_samples": true,
               "inline_tasks": {"probe.yaml": task}}),
    )
    .await;
    let id = created["id"].as_str().expect("id").to_string();
    let done = wait_terminal(&service, &id).await;
    let dir = root_path.join("data/evaluations").join(&id);
    let log = std::fs::read_to_string(dir.join("log.txt")).unwrap_or_default();
    assert_eq!(done["state"], "succeeded", "{done}\nits log:\n{log}");
    let report = report(&dir, &nonce).unwrap_or_else(|| panic!("the probe ran and reported; its log:\n{log}"));
    let outcome = |name: &str| report.get(name).cloned().unwrap_or_else(|| panic!("{name} not reported: {report:?}"));

    let (allowed, said) = outcome("connect_elsewhere");
    assert!(allowed && said.contains("connected"), "another port stays reachable: {said}");
    if landlock["network"] == true {
        let (allowed, said) = outcome("connect_service");
        assert!(!allowed && said.contains("Permission denied"), "the service's port was not refused: {said}");
        assert!(log.contains(&format!("it cannot connect to TCP port {service_port}")), "its log says so:\n{log}");
    } else {
        assert!(log.contains("WARNING: this kernel's Landlock has no network rules"), "its log warns:\n{log}");
        skipped(&format!("this kernel's Landlock has no network rules ({landlock}): the service's port is reachable"));
    }

    let (allowed, said) = outcome("write_shared_cache");
    assert!(!allowed && said.contains("Permission denied"), "the shared cache was written: {said}");
    assert!(!shared_cache.join("hub/pwned.txt").exists());
    let (allowed, said) = outcome("write_own_cache");
    assert!(allowed && said == dir.join("hf").display().to_string(), "its own HF_HOME is writable: {said}");
    assert!(dir.join("hf/hub/own.txt").exists());

    let (allowed, said) = outcome("open_tty");
    assert!(!allowed && !said.contains("opened"), "/dev/tty was opened: {said}");
    let (allowed, said) = outcome("controlling_terminal");
    assert!(!allowed, "lm_eval has a controlling terminal: {said}");
}
