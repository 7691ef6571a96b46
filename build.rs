// The web UI is embedded from ui/; rebuild when it changes. The git revision goes into `--version`.
fn main() {
    println!("cargo:rerun-if-changed=ui");
    println!("cargo:rerun-if-changed=.git/HEAD");
    let revision = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|output| output.status.success())
        .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_string())
        .filter(|revision| !revision.is_empty())
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=LMEVAL_GIT_REVISION={revision}");
}
