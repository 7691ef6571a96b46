//! The CLI as a pipeline runs it, against the real service on the local backend: submit and wait, gates that
//! pass and fail (exit 0 and 1, a JUnit report naming the failing metric), a refused request (exit 3 naming its
//! field), an unreachable server (exit 4), and a retried CI step that gets its first attempt's evaluation.

mod common;

use std::process::{Command, Output};

use common::{BIN, Service};

fn cli(service: &Service, args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(BIN)
        .args(args)
        .env("LMEVAL_SERVER", &service.base)
        .env_remove("GITHUB_RUN_ID")
        .env_remove("CI_PIPELINE_ID")
        .envs(env.iter().copied())
        .output()
        .expect("run the CLI")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

const REQUEST: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/requests/mc.yaml");

#[test]
fn a_pipeline_submits_waits_and_gates_with_exit_codes_it_can_branch_on() {
    let data = tempfile::tempdir().expect("tempdir");
    let service = Service::start(data.path(), &[]);

    // The dummy model's answers are seeded (lm-eval's default seeds): on mc.yaml's 5 documents acc is 0.4.
    let passed = cli(&service, &["submit", REQUEST, "--wait", "--require", "lmeval_aas_mc/acc>=0.2"], &[]);
    assert_eq!(passed.status.code(), Some(0), "{}\n{}", text(&passed.stdout), text(&passed.stderr));
    let table = text(&passed.stdout);
    assert!(table.contains("lmeval_aas_mc") && table.contains("acc_norm"), "the metrics table: {table}");
    assert!(table.contains("PASS  lmeval_aas_mc/acc>=0.2"), "{table}");
    assert!(text(&passed.stderr).contains("succeeded"), "progress on stderr: {}", text(&passed.stderr));

    let failed =
        cli(&service, &["submit", REQUEST, "--wait", "--require", "lmeval_aas_mc/acc>=0.99", "--output", "junit"], &[]);
    assert_eq!(failed.status.code(), Some(1), "{}", text(&failed.stderr));
    let junit = text(&failed.stdout);
    assert!(junit.starts_with("<?xml"), "only the report on stdout: {junit}");
    assert!(junit.contains(r#"name="lmeval_aas_mc/acc&gt;=0.99""#) && junit.contains("is not &gt;= 0.9900"), "{junit}");

    let refused = cli(&service, &["submit", REQUEST, "--set", "limit=-3"], &[]);
    assert_eq!(refused.status.code(), Some(3));
    assert!(text(&refused.stderr).contains("(field limit)"), "{}", text(&refused.stderr));

    let retried = |attempt: &str| {
        let output = cli(&service, &["submit", REQUEST], &[("GITHUB_RUN_ID", "4242"), ("GITHUB_RUN_ATTEMPT", attempt)]);
        assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
        text(&output.stdout).trim().to_string()
    };
    assert_eq!(retried("1"), retried("2"), "a retried step gets the evaluation its first attempt made");
    let elsewhere = cli(&service, &["submit", REQUEST], &[]);
    assert_ne!(text(&elsewhere.stdout).trim(), retried("1"), "outside CI another run is another evaluation");

    let unreachable = Command::new(BIN)
        .args(["get", "00000000-0000-0000-0000-000000000000", "--server", "http://127.0.0.1:9", "--retries", "0"])
        .output()
        .expect("run");
    assert_eq!(unreachable.status.code(), Some(4), "{}", text(&unreachable.stderr));

    let misused = Command::new(BIN).args(["list", "--no-such-flag"]).output().expect("run");
    assert_eq!(misused.status.code(), Some(3), "a usage error is 3 (2 means the evaluation failed)");

    let version = Command::new(BIN).arg("--version").output().expect("run");
    assert!(text(&version.stdout).starts_with(&format!("lm-eval-aas {} (", env!("CARGO_PKG_VERSION"))));
    let completions = Command::new(BIN).args(["completions", "bash"]).output().expect("run");
    assert!(text(&completions.stdout).contains("submit"), "bash completions name the subcommands");
}

#[test]
fn thresholds_from_a_file_a_baseline_and_the_job_summary() {
    let data = tempfile::tempdir().expect("tempdir");
    let service = Service::start(&data.path().join("data"), &[]);

    let baseline = cli(&service, &["submit", REQUEST, "--wait", "--output", "json"], &[]);
    assert_eq!(baseline.status.code(), Some(0), "{}", text(&baseline.stderr));
    let listed = cli(&service, &["list"], &[]);
    let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).expect("list prints JSON");
    let baseline_id = listed["items"][0]["id"].as_str().expect("the baseline's id").to_string();

    // The dummy model's answers are seeded: the same request scores the same, so a drop of 0 passes.
    let same = cli(&service, &["submit", REQUEST, "--wait", "--baseline", &baseline_id, "--max-drop", "0"], &[]);
    assert_eq!(same.status.code(), Some(0), "{}\n{}", text(&same.stdout), text(&same.stderr));
    assert!(text(&same.stdout).contains("PASS  lmeval_aas_mc/acc>=0.4"), "{}", text(&same.stdout));

    let thresholds = data.path().join("thresholds.txt");
    std::fs::write(
        &thresholds,
        "# the release gate\nlmeval_aas_mc/acc>=0.2\nlmeval_aas_mc/acc_norm,none<=0.3  # too strict\n",
    )
    .expect("write thresholds");
    let summary = data.path().join("summary.md");
    let gated = cli(
        &service,
        &["submit", REQUEST, "--wait", "--thresholds", &thresholds.to_string_lossy(), "--output", "markdown"],
        &[("GITHUB_STEP_SUMMARY", &summary.to_string_lossy())],
    );
    assert_eq!(gated.status.code(), Some(1), "{}", text(&gated.stderr));
    let report = text(&gated.stdout);
    assert!(report.contains("| `lmeval_aas_mc/acc>=0.2` | ✅ pass |"), "{report}");
    assert!(report.contains("| `lmeval_aas_mc/acc_norm<=0.3` | ❌ fail |"), "{report}");
    assert_eq!(std::fs::read_to_string(&summary).expect("the job summary"), report, "the same Markdown in the summary");

    let bad_line = std::fs::write(&thresholds, "lmeval_aas_mc/acc>>0.2\n");
    assert!(bad_line.is_ok());
    let before = cli(&service, &["list"], &[]).stdout;
    let refused = cli(&service, &["submit", REQUEST, "--wait", "--thresholds", &thresholds.to_string_lossy()], &[]);
    assert_eq!(refused.status.code(), Some(3), "a threshold file that does not parse is a usage error");
    assert!(text(&refused.stderr).contains("line 1"), "{}", text(&refused.stderr));
    let ungated = cli(&service, &["submit", REQUEST, "--require", "lmeval_aas_mc/acc>=0.2"], &[]);
    assert_eq!(ungated.status.code(), Some(3), "a gate without --wait has nothing to gate");
    assert_eq!(cli(&service, &["list"], &[]).stdout, before, "neither was submitted");
}
