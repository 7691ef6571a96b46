//! The real test cluster (tests/cluster): a namespace per test, prepared by `scripts/k8s-dev namespace`
//! (Pod Security `restricted`, the Roles of k8s/base), and the service running under its own ServiceAccount.
//! scripts/test starts the cluster and exports LMEVAL_CLUSTER_DIR; its node agent finds this build's
//! `lm-eval-aas` (the driver) and the pinned `lm_eval` on PATH.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use super::Service;

const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// The cluster's env file, or `None` (test skipped) when LMEVAL_SKIP_CLUSTER=1.
pub fn cluster_env() -> Option<BTreeMap<String, String>> {
    let Ok(dir) = std::env::var("LMEVAL_CLUSTER_DIR") else {
        if std::env::var("LMEVAL_SKIP_CLUSTER").as_deref() == Ok("1") {
            println!("skipped: LMEVAL_SKIP_CLUSTER=1");
            return None;
        }
        panic!(
            "LMEVAL_CLUSTER_DIR is not set: run through scripts/test (it starts the test cluster) or scripts/k8s-dev up"
        );
    };
    let text = std::fs::read_to_string(Path::new(&dir).join("env"))
        .unwrap_or_else(|e| panic!("no running test cluster in {dir} ({e}); scripts/k8s-dev up starts one"));
    Some(text.lines().filter_map(|line| line.split_once('=')).map(|(k, v)| (k.to_string(), v.to_string())).collect())
}

pub struct TestNamespace {
    pub name: String,
    /// Authenticates as the namespace's `lm-eval-aas` ServiceAccount (the service's Role only).
    pub service_kubeconfig: PathBuf,
    pub env: BTreeMap<String, String>,
    pub scratch: tempfile::TempDir,
}

impl TestNamespace {
    /// A fresh namespace named after the test, or `None` when cluster tests are skipped.
    pub fn create(test: &str) -> Option<Self> {
        let env = cluster_env()?;
        let name = format!("t-{test}-{}", &uuid::Uuid::new_v4().simple().to_string()[..6]);
        let output = Command::new(format!("{REPO}/scripts/k8s-dev"))
            .args(["namespace", &name])
            .env("LMEVAL_CLUSTER_DIR", &env["LMEVAL_CLUSTER_DIR"])
            .stderr(Stdio::inherit())
            .output()
            .expect("run scripts/k8s-dev namespace");
        assert!(output.status.success(), "scripts/k8s-dev namespace {name} failed");
        let service_kubeconfig = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
        Some(Self { name, service_kubeconfig, env, scratch: tempfile::tempdir().expect("tempdir") })
    }

    /// `kubectl -n <namespace> …` as the cluster admin.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        Command::new(&self.env["KUBECTL"])
            .env("KUBECONFIG", &self.env["KUBECONFIG"])
            .args(["-n", &self.name])
            .args(args)
            .output()
            .expect("run kubectl")
    }

    /// `kubectl -n <namespace> apply -f -` of `yaml` as the cluster admin.
    pub fn kubectl_apply(&self, yaml: &str) -> Output {
        self.kubectl_with_input(&["apply", "-f", "-"], yaml)
    }

    /// `kubectl -n <namespace> …` as the cluster admin, with `input` on its standard input.
    pub fn kubectl_with_input(&self, args: &[&str], input: &str) -> Output {
        let mut child = Command::new(&self.env["KUBECTL"])
            .env("KUBECONFIG", &self.env["KUBECONFIG"])
            .args(["-n", &self.name])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run kubectl");
        child.stdin.take().expect("stdin").write_all(input.as_bytes()).expect("write kubectl's input");
        child.wait_with_output().expect("kubectl")
    }

    /// `kubectl … -o json` parsed; panics with kubectl's stderr on failure.
    pub fn kubectl_json(&self, args: &[&str]) -> serde_json::Value {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["-o", "json"]);
        let output = self.kubectl(&all);
        assert!(output.status.success(), "kubectl {args:?}: {}", String::from_utf8_lossy(&output.stderr));
        serde_json::from_slice(&output.stdout).expect("kubectl JSON")
    }

    /// `lm-eval-aas serve --backend kubernetes` in this namespace, authenticated as its ServiceAccount.
    pub fn service(&self, extra: &[&str]) -> Service {
        self.service_in(&self.scratch.path().join(format!("svc-{}", uuid::Uuid::new_v4().simple())), extra)
    }

    /// As `service`, also serving the Evaluation admission webhook, registered for this namespace
    /// (`scripts/k8s-dev webhook`) with a certificate from the cluster's CA.
    pub fn service_with_webhook(&self, extra: &[&str]) -> Service {
        let certs = self.k8s_dev(&["webhook-cert"]);
        let (cert, key) = (format!("{certs}/tls.crt"), format!("{certs}/tls.key"));
        let mut args =
            vec!["--webhook-listen", "127.0.0.1:0", "--webhook-cert-file", &cert, "--webhook-key-file", &key];
        args.extend(extra);
        let service = self.service(&args);
        let port = super::wait_for(std::time::Duration::from_secs(10), || service.logged_port("webhook listening"))
            .unwrap_or_else(|| panic!("no webhook listening; log:\n{}", service.log_text()));
        self.k8s_dev(&["webhook", &self.name, &port.to_string()]);
        service
    }

    /// Removes this namespace's webhook registration: the API server no longer asks the service.
    pub fn unregister_webhook(&self) {
        let name = format!("lm-eval-aas-{}", self.name);
        let output = self.kubectl(&["delete", "validatingwebhookconfiguration", &name, "--ignore-not-found"]);
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    }

    /// `scripts/k8s-dev ARGS…`'s output; panics if it fails.
    pub fn k8s_dev(&self, args: &[&str]) -> String {
        let output = Command::new(format!("{REPO}/scripts/k8s-dev"))
            .args(args)
            .env("LMEVAL_CLUSTER_DIR", &self.env["LMEVAL_CLUSTER_DIR"])
            .stderr(Stdio::inherit())
            .output()
            .expect("run scripts/k8s-dev");
        assert!(output.status.success(), "scripts/k8s-dev {args:?} failed");
        String::from_utf8_lossy(&output.stdout).trim().to_string()
    }

    /// As `service`, with more variables in the service's environment.
    pub fn service_with_env(&self, extra: &[&str], env: &[(&str, &str)]) -> Service {
        self.service_in_with_env(
            &self.scratch.path().join(format!("svc-{}", uuid::Uuid::new_v4().simple())),
            extra,
            env,
        )
    }

    fn service_in(&self, dir: &Path, extra: &[&str]) -> Service {
        self.service_in_with_env(dir, extra, &[])
    }

    fn service_in_with_env(&self, dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> Service {
        let mut args = vec!["--backend", "kubernetes", "--namespace", &self.name, "--kill-grace-seconds", "2"];
        // Tests of what the service does run it anonymous; the tests of who may do it pass `--auth`.
        if !extra.contains(&"--auth") {
            args.extend(["--auth", "none"]);
        }
        args.extend(extra);
        let kubeconfig = self.service_kubeconfig.to_string_lossy().into_owned();
        let mut env = env.to_vec();
        env.push(("KUBECONFIG", &kubeconfig));
        let service = Service::start_with_env(dir, &args, &env);
        let ready = super::wait_for(std::time::Duration::from_secs(30), || {
            let status =
                Command::new("curl").args(["-fsS", "-o", "/dev/null", &service.url("/readyz")]).status().ok()?;
            status.success().then_some(())
        });
        assert!(ready.is_some(), "service not ready; log:\n{}", service.log_text());
        service
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        let _ = Command::new(&self.env["KUBECTL"])
            .env("KUBECONFIG", &self.env["KUBECONFIG"])
            .args([
                "delete",
                "validatingwebhookconfiguration",
                &format!("lm-eval-aas-{}", self.name),
                "--ignore-not-found",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = Command::new(&self.env["KUBECTL"])
            .env("KUBECONFIG", &self.env["KUBECONFIG"])
            .args(["delete", "namespace", &self.name, "--wait=false"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}
