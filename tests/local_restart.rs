//! At most one driver per evaluation, ever. The service kills itself (as `kill -9` would) at each point of an
//! evaluation's start (the test-only LMEVAL_TEST_CRASH_AT), and a new service is started on the same data
//! directory: exactly one driver and one lm_eval run the evaluation, and none once it is cancelled. Processes are
//! counted from /proc by the LMEVAL_EVALUATION_ID in their environment.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::{BIN, Service, client, evaluation, wait_for, wait_until};
use serde_json::{Value, json};

/// The evaluation's live processes: its drivers (our binary) and its lm_eval processes.
fn processes_of(id: &str) -> (Vec<u32>, Vec<u32>) {
    let variable = format!("LMEVAL_EVALUATION_ID={id}");
    let ours = std::fs::canonicalize(BIN).expect("our binary");
    let lm_eval = common::lm_eval();
    let (mut drivers, mut lm_evals) = (Vec::new(), Vec::new());
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) else { continue };
        if !environ.split(|b| *b == 0).any(|v| v == variable.as_bytes()) {
            continue;
        }
        if lm_eval_aas::fsutil::process_start_ticks(pid).is_none() {
            continue;
        }
        let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default();
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if exe == ours {
            drivers.push(pid);
        } else if cmdline.split(|b| *b == 0).any(|arg| arg == lm_eval.as_bytes()) {
            lm_evals.push(pid);
        }
    }
    (drivers, lm_evals)
}

/// Whether `pid` has a handler for SIGUSR1 (bit 10 of SigCgt).
fn catches_sigusr1(pid: u32) -> bool {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("SigCgt:"))
        .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
        .is_some_and(|mask| mask & (1 << (10 - 1)) != 0)
}

/// The one evaluation directory under `data`.
fn only_evaluation(data: &std::path::Path) -> String {
    let ids: Vec<String> = std::fs::read_dir(data.join("evaluations"))
        .expect("evaluations")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| !name.starts_with('.'))
        .collect();
    assert_eq!(ids.len(), 1, "{ids:?}");
    ids[0].clone()
}

/// Crashes the service at `point`, restarts it (first removing the driver lock when `without_lock`, as a release
/// before the lock left no such file) and checks there is one driver and one lm_eval, then none after cancel.
async fn one_driver_after_a_crash_at(point: &str, without_lock: bool) {
    let root = tempfile::tempdir().expect("tempdir");
    let data: PathBuf = root.path().join("data");
    let mut service = Service::start_with_env(&data, &["--max-running", "1"], &[("LMEVAL_TEST_CRASH_AT", point)]);
    // The service may die before its answer is out: the evaluation is found on disk.
    let _ = client()
        .post(service.url("/api/v1/evaluations"))
        .json(&json!({"model": "dummy", "tasks": ["lmeval_aas_slow"], "limit": 400}))
        .send()
        .await;
    assert!(service.exited_within(Duration::from_secs(30)), "the service did not stop at {point}");
    let id = only_evaluation(&data);
    if without_lock {
        std::fs::remove_file(data.join("evaluations").join(&id).join("driver.lock")).expect("remove the lock");
    }
    let service = service.restart_after_kill9_with_env(Vec::new());

    if point == "before-pid" {
        let driver = wait_for(Duration::from_secs(20), || {
            let (drivers, _) = processes_of(&id);
            drivers.first().copied().filter(|pid| drivers.len() == 1 && catches_sigusr1(*pid))
        })
        .expect("the first driver, waiting before it writes its pid");
        let adopted = evaluation(&service, &id).await;
        assert_eq!(adopted["state"], "running", "a live driver without a known pid is adopted: {adopted}");
        assert_eq!(processes_of(&id), (vec![driver], vec![]), "no second driver was started");
        #[allow(clippy::cast_possible_wrap)]
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(driver as i32), nix::sys::signal::Signal::SIGUSR1)
            .expect("release the driver");
    }
    wait_until(&service, &id, Duration::from_secs(120), "progress", |e| {
        e["progress"]["completed"].as_u64().is_some_and(|n| n > 0)
    })
    .await;
    let (drivers, lm_evals) = processes_of(&id);
    assert_eq!((drivers.len(), lm_evals.len()), (1, 1), "{point}: drivers {drivers:?}, lm_eval {lm_evals:?}");

    let response =
        client().post(service.url(&format!("/api/v1/evaluations/{id}/cancel"))).send().await.expect("cancel");
    assert_eq!(response.status(), 202, "{point}");
    let done: Value =
        wait_until(&service, &id, Duration::from_secs(20), "cancelled", |e| e["state"] == "cancelled").await;
    assert_eq!(done["reason"], "Cancelled");
    let gone = wait_for(Duration::from_secs(10), || {
        let (drivers, lm_evals) = processes_of(&id);
        (drivers.is_empty() && lm_evals.is_empty()).then_some(())
    });
    assert!(gone.is_some(), "{point}: left after cancel: {:?}", processes_of(&id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_the_claim_before_the_spawn_starts_the_evaluation_once() {
    one_driver_after_a_crash_at("before-spawn", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_right_after_the_spawn_adopts_the_driver() {
    one_driver_after_a_crash_at("after-spawn", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_before_the_driver_wrote_its_pid_adopts_the_driver() {
    one_driver_after_a_crash_at("before-pid", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_the_pid_is_recorded_adopts_the_driver() {
    one_driver_after_a_crash_at("after-pid", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_driver_of_a_release_before_the_lock_is_adopted_by_its_recorded_pid() {
    one_driver_after_a_crash_at("after-pid", true).await;
}
