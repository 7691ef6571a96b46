//! A real S3-compatible server (versitygw, which verifies Signature V4 on every request and presigned URL) on
//! 127.0.0.1, one per test: scripts/test builds it and names it in LMEVAL_S3_SERVER.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use futures::TryStreamExt;
use object_store::ObjectStore;
use object_store::aws::AmazonS3Builder;

pub const BUCKET: &str = "evals";
pub const ACCESS_KEY: &str = "lmevaltest";

pub struct S3Server {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
    pub secret: String,
}

impl S3Server {
    /// A server with an empty bucket `evals`; `None`, the test skipped, only with LMEVAL_SKIP_CLUSTER=1 (the
    /// tests that use it run on the cluster).
    pub fn start() -> Option<Self> {
        let Ok(_) = std::env::var("LMEVAL_S3_SERVER") else {
            assert_eq!(
                std::env::var("LMEVAL_SKIP_CLUSTER").as_deref(),
                Ok("1"),
                "LMEVAL_S3_SERVER must name versitygw (scripts/test builds it)"
            );
            return None;
        };
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("data").join(BUCKET)).expect("bucket");
        let port = std::net::TcpListener::bind("127.0.0.1:0").expect("port").local_addr().expect("addr").port();
        let mut server = Self { child: None, port, dir, secret: format!("secret-{}", uuid::Uuid::new_v4().simple()) };
        server.run();
        Some(server)
    }

    fn run(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.path().join("log")).expect("log");
        let child = Command::new(std::env::var("LMEVAL_S3_SERVER").expect("LMEVAL_S3_SERVER"))
            .args(["--access", ACCESS_KEY, "--secret", &self.secret, "--port", &format!("127.0.0.1:{}", self.port)])
            .args(["--quiet", "posix"])
            .arg(self.dir.path().join("data"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start versitygw");
        self.child = Some(child);
        let up = super::wait_for(Duration::from_secs(20), || {
            std::net::TcpStream::connect(("127.0.0.1", self.port)).ok().map(|_| ())
        });
        assert!(up.is_some(), "versitygw did not listen; log:\n{}", self.log_text());
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The store is down: the process ended, nothing listens on its port.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Up again on the same port, with what it stored.
    pub fn restart(&mut self) {
        self.stop();
        self.run();
    }

    /// The service's flags and environment for this store with `prefix`.
    pub fn service_flags(&self, prefix: &str) -> Vec<String> {
        ["--output-store", &format!("s3://{BUCKET}/{prefix}"), "--output-store-endpoint", &self.endpoint()]
            .map(String::from)
            .to_vec()
    }

    pub fn service_env(&self) -> Vec<(&'static str, String)> {
        vec![("AWS_ACCESS_KEY_ID", ACCESS_KEY.to_string()), ("AWS_SECRET_ACCESS_KEY", self.secret.clone())]
    }

    pub fn client(&self) -> Arc<dyn ObjectStore> {
        let store = AmazonS3Builder::new()
            .with_bucket_name(BUCKET)
            .with_region("us-east-1")
            .with_endpoint(self.endpoint())
            .with_allow_http(true)
            .with_access_key_id(ACCESS_KEY)
            .with_secret_access_key(&self.secret)
            .build()
            .expect("S3 client");
        Arc::new(store)
    }

    /// Every key under `prefix`, sorted.
    pub async fn keys(&self, prefix: &str) -> Vec<String> {
        let prefix = object_store::path::Path::from(prefix);
        let mut keys: Vec<String> = self
            .client()
            .list(Some(&prefix))
            .map_ok(|meta| meta.location.to_string())
            .try_collect()
            .await
            .expect("list");
        keys.sort();
        keys
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
    }
}
