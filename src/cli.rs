//! The command line: `serve`, `openapi`, `crd`, `driver`, `sandbox`. Every `serve` flag can also come from an `LMEVAL_…` variable.

use crate::outputs::store::StoreKind;
use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

use crate::client::commands::{SubmitArgs, WaitArgs};
use crate::client::http::ClientArgs;
use crate::driver::DriverArgs;
use crate::sandbox::SandboxArgs;
use crate::telemetry::LogFormat;

#[derive(Debug, Parser)]
#[command(name = "lm-eval-aas", version = VERSION, about = "lm-evaluation-harness as a service")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// The version and the git revision it was built from (`unknown` outside a git checkout).
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (", env!("LMEVAL_GIT_REVISION"), ")");

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP service.
    Serve(Box<ServeArgs>),
    /// Print the OpenAPI document (JSON).
    Openapi {
        /// Write to this file instead of standard output.
        #[arg(long)]
        output: Option<PathBuf>,
    },
    /// Print the CustomResourceDefinition of `evaluations.lm-eval-aas.io` (YAML).
    Crd {
        /// Write to this file instead of standard output.
        #[arg(long)]
        output: Option<PathBuf>,
    },
    /// Run lm-eval as a child, recording its log, progress and exit status (used by the backends).
    Driver(Box<DriverArgs>),
    /// Run a command confined by Landlock to one evaluation's directory (used by the local backend's driver).
    Sandbox(Box<SandboxArgs>),
    /// Submit an evaluation (JSON or YAML file); with --wait, follow it and gate on its metrics. Exit codes: 0
    /// passed, 1 a gate failed, 2 the evaluation failed or was cancelled, 3 usage or request refused, 4 server
    /// unreachable or timed out.
    Submit {
        #[command(flatten)]
        client: Box<ClientArgs>,
        #[command(flatten)]
        args: Box<SubmitArgs>,
    },
    /// Wait for an evaluation's end, then report and gate (exit codes as `submit`).
    Wait {
        id: String,
        #[command(flatten)]
        client: Box<ClientArgs>,
        #[command(flatten)]
        args: Box<WaitArgs>,
    },
    /// An evaluation (JSON).
    Get {
        id: String,
        #[command(flatten)]
        client: Box<ClientArgs>,
    },
    /// Evaluations, newest first (JSON; `--query` passes list filters such as `state=running&label=team=nlp`).
    List {
        #[arg(long, default_value = "")]
        query: String,
        #[command(flatten)]
        client: Box<ClientArgs>,
    },
    /// An evaluation's log; `-f` follows it to the end.
    Logs {
        id: String,
        #[arg(short, long)]
        follow: bool,
        #[command(flatten)]
        client: Box<ClientArgs>,
    },
    /// lm-eval's results JSON.
    Results {
        id: String,
        #[command(flatten)]
        client: Box<ClientArgs>,
    },
    /// Cancel an evaluation.
    Cancel {
        id: String,
        #[command(flatten)]
        client: Box<ClientArgs>,
    },
    /// Delete an evaluation and its outputs.
    Delete {
        id: String,
        #[command(flatten)]
        client: Box<ClientArgs>,
    },
    /// Print shell completions.
    Completions { shell: clap_complete::Shell },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BackendKind {
    Local,
    Kubernetes,
}

#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "LMEVAL_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,
    /// Where evaluations run.
    #[arg(long, env = "LMEVAL_BACKEND", value_enum, default_value = "local")]
    pub backend: BackendKind,
    /// Local backend: where evaluations keep their state [default: ~/.local/share/lm-eval-aas].
    #[arg(long, env = "LMEVAL_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// The lm_eval executable [default: `lm_eval` on PATH, else the venv scripts/demo creates].
    #[arg(long = "lm-eval", env = "LMEVAL_LM_EVAL")]
    pub lm_eval: Option<PathBuf>,
    /// Task directories always passed to lm-eval (`--include_path`); comma-separated in the variable.
    #[arg(long = "task-dir", env = "LMEVAL_TASK_DIRS", value_delimiter = ',')]
    pub task_dirs: Vec<PathBuf>,
    /// Local backend: evaluations running at once; 0 accepts evaluations but starts none (drain) [default: CPUs / 2, at least 1].
    #[arg(long, env = "LMEVAL_MAX_RUNNING")]
    pub max_running: Option<usize>,
    /// Seconds between SIGTERM and SIGKILL when an evaluation is cancelled or times out.
    #[arg(long, env = "LMEVAL_KILL_GRACE_SECONDS", default_value_t = 1.0, value_parser = non_negative_seconds)]
    pub kill_grace_seconds: f64,
    /// Largest request body accepted, in bytes.
    #[arg(long, env = "LMEVAL_MAX_BODY_BYTES", default_value_t = 1024 * 1024)]
    pub max_body_bytes: usize,
    /// Seconds a request's head, and then its body, may take to arrive before the client gets 408.
    #[arg(long, env = "LMEVAL_REQUEST_READ_TIMEOUT_SECONDS", default_value_t = 30)]
    pub request_read_timeout_seconds: u64,
    /// Connections served at once; more are answered 503 with Retry-After.
    #[arg(long, env = "LMEVAL_MAX_CONNECTIONS", default_value_t = 1024, value_parser = clap::value_parser!(usize))]
    pub max_connections: usize,
    /// Log streams (`follow=true`) open at once; more are answered 503 with Retry-After.
    #[arg(long, env = "LMEVAL_MAX_LOG_FOLLOWERS", default_value_t = 1000)]
    pub max_log_followers: usize,
    /// Evaluations that may wait to start, in all; more are answered 429 with Retry-After.
    #[arg(long, env = "LMEVAL_MAX_PENDING", default_value_t = 10_000)]
    pub max_pending: usize,
    /// Evaluations that may wait to start per creator (the caller; with `--auth none`, the client IP address).
    #[arg(long, env = "LMEVAL_MAX_PENDING_PER_CREATOR", default_value_t = 1_000)]
    pub max_pending_per_creator: usize,
    /// Evaluations that may wait to start in one namespace; more are answered 429 with Retry-After.
    #[arg(long, env = "LMEVAL_MAX_PENDING_PER_NAMESPACE", default_value_t = 1_000)]
    pub max_pending_per_namespace: usize,
    /// Kubernetes backend: evaluations running at once in one namespace; more wait, pending, for a slot
    /// [default: no limit].
    #[arg(long, env = "LMEVAL_MAX_RUNNING_PER_NAMESPACE")]
    pub max_running_per_namespace: Option<usize>,
    /// Policy: environment variable names a request may set although they change how code is loaded or
    /// where traffic goes (`PYTHON*`, `LD_*`, `*_PROXY`, `BROWSER`, …); comma-separated in the variable.
    #[arg(long = "allow-env", env = "LMEVAL_ALLOW_ENV", value_delimiter = ',')]
    pub allow_env: Vec<String>,
    /// Policy: let requests set `allow_online` (lm-eval may reach model hubs and datasets).
    #[arg(long, env = "LMEVAL_ALLOW_ONLINE")]
    pub allow_online: bool,
    /// Policy: let requests set `allow_code_execution` (tasks that run generated code).
    #[arg(long, env = "LMEVAL_ALLOW_CODE_EXECUTION")]
    pub allow_code_execution: bool,
    /// Policy: let requests pass `trust_remote_code` in model_args.
    #[arg(long, env = "LMEVAL_ALLOW_TRUST_REMOTE_CODE")]
    pub allow_trust_remote_code: bool,
    /// The namespace served by default (the un-namespaced routes'); kubernetes: where the service runs and its
    /// leader Lease lives [default: the service's own namespace in a cluster, else `default`].
    #[arg(long, env = "LMEVAL_NAMESPACE")]
    pub namespace: Option<String>,
    /// Kubernetes backend: more namespaces to serve Evaluations in (comma-separated in the variable).
    #[arg(long = "namespaces", env = "LMEVAL_NAMESPACES", value_delimiter = ',')]
    pub namespaces: Vec<String>,
    /// Kubernetes backend: seconds the leader's Lease lasts unrenewed before another replica takes over.
    #[arg(long, env = "LMEVAL_LEADER_LEASE_SECONDS", default_value_t = 15)]
    pub leader_lease_seconds: u64,
    /// Kubernetes backend: also serve the Evaluation admission webhook (HTTPS, `POST /validate-evaluations`) here.
    #[arg(long, env = "LMEVAL_WEBHOOK_LISTEN", requires_all = ["webhook_cert_file", "webhook_key_file"])]
    pub webhook_listen: Option<SocketAddr>,
    /// The webhook's TLS certificate chain (PEM); read again when it changes.
    #[arg(long, env = "LMEVAL_WEBHOOK_CERT_FILE")]
    pub webhook_cert_file: Option<PathBuf>,
    /// The webhook's TLS private key (PEM); read again when it changes.
    #[arg(long, env = "LMEVAL_WEBHOOK_KEY_FILE")]
    pub webhook_key_file: Option<PathBuf>,
    /// Kubernetes backend: the runner image (Python with lm-eval, and this binary as the driver).
    #[arg(long, env = "LMEVAL_RUNNER_IMAGE", default_value = "ghcr.io/lm-eval-aas/runner:0.1.0")]
    pub runner_image: String,
    /// Kubernetes backend: the runner's imagePullPolicy (Always, IfNotPresent, Never).
    #[arg(long, env = "LMEVAL_RUNNER_IMAGE_PULL_POLICY", default_value = "IfNotPresent")]
    pub runner_image_pull_policy: String,
    /// Kubernetes backend: node selector for runner pods, `key=value` (comma-separated in the variable).
    #[arg(long = "runner-node-selector", env = "LMEVAL_RUNNER_NODE_SELECTOR", value_delimiter = ',')]
    pub runner_node_selector: Vec<String>,
    /// Kubernetes backend: tolerations for runner pods, as a JSON array of Kubernetes tolerations.
    #[arg(long, env = "LMEVAL_RUNNER_TOLERATIONS")]
    pub runner_tolerations: Option<String>,
    /// Kubernetes backend: a ConfigMap of CA certificates (PEM) that runner pods trust for TLS to model
    /// endpoints, `CONFIGMAP` or `CONFIGMAP/KEY` (default key `ca-bundle.crt`); it must exist in every served
    /// namespace. Mounted read-only and named by `SSL_CERT_FILE`, `REQUESTS_CA_BUNDLE` and `CURL_CA_BUNDLE`,
    /// it replaces the default trust store: include public CAs too if evaluations reach public endpoints.
    #[arg(long, env = "LMEVAL_RUNNER_CA_BUNDLE")]
    pub runner_ca_bundle: Option<String>,
    /// Kubernetes backend: where output sets (results, per-sample files, the whole log, the manifest) are kept:
    /// `configmap` (the run record: results up to ~1 MiB, the log's last 256 KiB), `s3://BUCKET/PREFIX` (any
    /// S3-compatible store; credentials from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY) or `pvc:NAME` (a
    /// ReadWriteMany claim, mounted in this service's pod at --output-store-mount).
    #[arg(long, env = "LMEVAL_OUTPUT_STORE", default_value = "configmap", value_parser = parse_store)]
    pub output_store: StoreKind,
    /// `s3://`: the store's endpoint URL (IBM COS, MinIO, Ceph RGW…); AWS when not given. Runner pods upload to
    /// it too, so it must be an address they reach.
    #[arg(long, env = "LMEVAL_OUTPUT_STORE_ENDPOINT")]
    pub output_store_endpoint: Option<String>,
    /// `s3://`: the region requests are signed for.
    #[arg(long, env = "LMEVAL_OUTPUT_STORE_REGION", default_value = "us-east-1")]
    pub output_store_region: String,
    /// `s3://`: address buckets as `BUCKET.ENDPOINT` rather than `ENDPOINT/BUCKET` (path style, the default).
    #[arg(long, env = "LMEVAL_OUTPUT_STORE_VIRTUAL_HOSTED")]
    pub output_store_virtual_hosted: bool,
    /// `pvc:`: where the claim is mounted in this service's pod.
    #[arg(long, env = "LMEVAL_OUTPUT_STORE_MOUNT", default_value = "/var/lib/lm-eval-aas/outputs")]
    pub output_store_mount: PathBuf,
    /// Seconds a run keeps retrying to write its output set (with back-off) before it fails
    /// `OutputUploadFailed`.
    #[arg(long, env = "LMEVAL_OUTPUT_UPLOAD_PATIENCE_SECONDS", default_value_t = 300)]
    pub output_upload_patience_seconds: u64,
    /// Kubernetes backend: the driver executable inside the runner image.
    #[arg(long, env = "LMEVAL_DRIVER", default_value = "lm-eval-aas")]
    pub driver: String,
    /// Kubernetes backend: the Job's backoffLimit (retries of a failed pod).
    #[arg(long, env = "LMEVAL_BACKOFF_LIMIT", default_value_t = 0)]
    pub backoff_limit: i32,
    /// Kubernetes backend: fail an evaluation whose pod has waited this long on something that does not
    /// resolve itself (unschedulable, image pull, missing Secret).
    #[arg(long, env = "LMEVAL_STUCK_AFTER_SECONDS", default_value_t = 300)]
    pub stuck_after_seconds: u64,
    /// Kubernetes backend: seconds a write may wait for the API server before the client gets 503.
    #[arg(long, env = "LMEVAL_API_TIMEOUT_SECONDS", default_value_t = 10)]
    pub api_timeout_seconds: u64,
    /// How requests are authenticated: `kubernetes` (TokenReview, then SubjectAccessReviews), `token-file`
    /// (`--auth-token-file`), `none` (anonymous, allowed everything) [default: kubernetes on the kubernetes
    /// backend; none for the local backend on a loopback address, else required].
    #[arg(long, env = "LMEVAL_AUTH", value_enum)]
    pub auth: Option<crate::auth::AuthMode>,
    /// `--auth token-file`: the file of token hashes, users and groups (see the README).
    #[arg(long, env = "LMEVAL_AUTH_TOKEN_FILE")]
    pub auth_token_file: Option<PathBuf>,
    /// `--auth kubernetes`: audiences a token must be meant for (TokenReview); comma-separated in the variable
    /// [default: the API server's].
    #[arg(long = "auth-audience", env = "LMEVAL_AUTH_AUDIENCES", value_delimiter = ',')]
    pub auth_audiences: Vec<String>,
    /// The header an authenticating proxy forwards the user's access token in (OpenShift's oauth-proxy);
    /// reviewed as a bearer token.
    #[arg(long, env = "LMEVAL_AUTH_FORWARDED_TOKEN_HEADER", default_value = "X-Forwarded-Access-Token")]
    pub auth_forwarded_token_header: String,
    /// Seconds a reviewed token is remembered (at most 60; never past the token's own expiry).
    #[arg(long, env = "LMEVAL_AUTH_TOKEN_CACHE_SECONDS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(0..=60))]
    pub auth_token_cache_seconds: u64,
    /// Seconds an authorization decision is remembered (at most 10).
    #[arg(long, env = "LMEVAL_AUTH_DECISION_CACHE_SECONDS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(0..=10))]
    pub auth_decision_cache_seconds: u64,
    /// Serve `/metrics` without authentication on this separate address (else `/metrics` needs a token
    /// allowed to `get` the non-resource URL `/metrics`).
    #[arg(long, env = "LMEVAL_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// Log format.
    #[arg(long, env = "LMEVAL_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Seconds after SIGTERM during which /readyz answers 503 while new connections are still served, so a load
    /// balancer stops routing here before the listener closes.
    #[arg(long, env = "LMEVAL_SHUTDOWN_DELAY_SECONDS", default_value_t = 0)]
    pub shutdown_delay_seconds: u64,
    /// Seconds in-flight requests get to finish after SIGTERM (after the delay).
    #[arg(long, env = "LMEVAL_SHUTDOWN_TIMEOUT_SECONDS", default_value_t = 20)]
    pub shutdown_timeout_seconds: u64,
}

fn parse_store(raw: &str) -> Result<StoreKind, String> {
    raw.parse()
}

fn non_negative_seconds(raw: &str) -> Result<f64, String> {
    match raw.parse::<f64>() {
        Ok(seconds) if seconds.is_finite() && seconds >= 0.0 => Ok(seconds),
        _ => Err("must be a non-negative number of seconds".into()),
    }
}
