//! schemathesis run against a service: the `st` executable, a token file for it, its report read.

use std::path::{Path, PathBuf};
use std::process::Command;

pub const TOKEN: &str = "contract-test-token";

/// The `st` executable, or `None` (and a line saying the test was skipped) when it is not installed.
pub fn schemathesis(test: &str) -> Option<PathBuf> {
    match std::env::var_os("LMEVAL_SCHEMATHESIS") {
        Some(path) => Some(PathBuf::from(path)),
        None => {
            eprintln!("{test}: skipped, LMEVAL_SCHEMATHESIS is not set (scripts/test sets it)");
            None
        }
    }
}

/// The service on the local backend in `dir`, asking for a bearer token: a token file lists `TOKEN` for user
/// `schemathesis` (`--auth token-file`).
pub fn service_with_token(dir: &Path) -> super::Service {
    use sha2::Digest;
    let tokens = dir.join("tokens");
    let digest = format!("{:x}", sha2::Sha256::digest(TOKEN.as_bytes()));
    std::fs::write(&tokens, format!("{digest} schemathesis testers\n")).expect("write the token file");
    let tokens = tokens.to_string_lossy();
    super::Service::start(&dir.join("data"), &["--auth", "token-file", "--auth-token-file", &tokens])
}

/// What a schemathesis run ended with: its exit code, the cases it generated, its whole report.
pub struct Run {
    pub success: bool,
    pub generated: u64,
    pub report: String,
}

pub fn run(st: &Path, config: &str, document: &str, base: &str, token: &str, max_examples: u32) -> Run {
    let repo = env!("CARGO_MANIFEST_DIR");
    let output = Command::new(st)
        .args(["--config-file", &format!("{repo}/tests/contract/{config}")])
        .args(["run", &format!("{repo}/{document}"), "--url", base])
        .args(["--max-examples", &max_examples.to_string(), "--seed", "20261201", "--no-color"])
        .env("LMEVAL_CONTRACT_TOKEN", token)
        .env("SCHEMATHESIS_HOOKS", "")
        .output()
        .expect("run schemathesis");
    let report = String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr);
    // "Test cases:\n  3569 generated, …"
    let generated = report
        .lines()
        .skip_while(|line| !line.starts_with("Test cases:"))
        .nth(1)
        .and_then(|line| line.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    Run { success: output.status.success(), generated, report }
}

pub fn summary(report: &str) -> String {
    report.lines().skip_while(|line| !line.contains("SUMMARY")).collect::<Vec<_>>().join("\n")
}
