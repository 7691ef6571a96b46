//! `serve`: builds the backend and the router from the flags, and runs until SIGTERM or SIGINT
//! (`connections`: accepting and serving, bounded; `socket`: what hyper reads and writes through).

mod connections;
mod socket;
mod webhook;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::sync::watch;

use crate::api::{self, App, BodyLimits, Limits};
use crate::backend::kubernetes::{KubernetesBackend, KubernetesConfig};
use crate::backend::local::{LocalBackend, LocalConfig};
use crate::backend::{Backend, PendingLimits};
use crate::cli::{BackendKind, ServeArgs};
use crate::k8s::job::RunnerConfig;
use crate::metrics::Metrics;
use crate::validate::Policy;
use connections::{ConnectionLimits, ShutdownTiming};

/// The venv that scripts/demo and scripts/test create.
pub fn default_venv() -> Option<PathBuf> {
    std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache/lm-eval-aas/venv-0.4.13"))
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .and_then(|paths| std::env::split_paths(&paths).map(|dir| dir.join(name)).find(|p| p.is_file()))
}

fn resolve_lm_eval(flag: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    let found = match flag {
        Some(path) if path.components().count() == 1 => find_on_path(&path.to_string_lossy()),
        Some(path) => Some(path),
        None => {
            find_on_path("lm_eval").or_else(|| default_venv().map(|v| v.join("bin/lm_eval")).filter(|p| p.is_file()))
        }
    };
    match found {
        Some(path) if path.is_file() => Ok(path),
        Some(path) => bail!("--lm-eval (LMEVAL_LM_EVAL): {} does not exist", path.display()),
        None => bail!(
            "--lm-eval (LMEVAL_LM_EVAL): no lm_eval on PATH and no venv at ~/.cache/lm-eval-aas; run scripts/demo once or pass --lm-eval"
        ),
    }
}

const IN_CLUSTER_NAMESPACE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/namespace";

/// The namespace the service is in (and serves by default): `--namespace`, else the pod's own, else `default`.
fn own_namespace(args: &ServeArgs) -> anyhow::Result<String> {
    let namespace = match &args.namespace {
        Some(namespace) => namespace.clone(),
        None => {
            std::fs::read_to_string(IN_CLUSTER_NAMESPACE).map_or_else(|_| "default".into(), |n| n.trim().to_string())
        }
    };
    if !crate::validate::names::is_dns_label(&namespace) {
        bail!("--namespace (LMEVAL_NAMESPACE): {namespace:?} is not a namespace name");
    }
    Ok(namespace)
}

/// The operator's policy for what requests may ask.
fn policy(args: &ServeArgs) -> Policy {
    Policy {
        allow_online: args.allow_online,
        allow_code_execution: args.allow_code_execution,
        allow_trust_remote_code: args.allow_trust_remote_code,
        allowed_env: args.allow_env.clone(),
    }
}

/// This replica, for the leader Lease: the pod's name where there is one, and something unique besides.
fn identity() -> String {
    let host =
        std::env::var("POD_NAME").or_else(|_| std::env::var("HOSTNAME")).unwrap_or_else(|_| "lm-eval-aas".into());
    format!("{host}-{}", &uuid::Uuid::new_v4().simple().to_string()[..8])
}

fn kubernetes_config(args: &ServeArgs) -> anyhow::Result<KubernetesConfig> {
    let namespace = own_namespace(args)?;
    let mut namespaces = vec![namespace];
    for extra in &args.namespaces {
        if !crate::validate::names::is_dns_label(extra) {
            bail!("--namespaces (LMEVAL_NAMESPACES): {extra:?} is not a namespace name");
        }
        if !namespaces.contains(extra) {
            namespaces.push(extra.clone());
        }
    }
    if !["Always", "IfNotPresent", "Never"].contains(&args.runner_image_pull_policy.as_str()) {
        bail!("--runner-image-pull-policy (LMEVAL_RUNNER_IMAGE_PULL_POLICY): must be Always, IfNotPresent or Never");
    }
    let mut node_selector = std::collections::BTreeMap::new();
    for pair in &args.runner_node_selector {
        let (key, value) = pair.split_once('=').with_context(|| {
            format!("--runner-node-selector (LMEVAL_RUNNER_NODE_SELECTOR): {pair:?} is not key=value")
        })?;
        node_selector.insert(key.to_string(), value.to_string());
    }
    let tolerations = match &args.runner_tolerations {
        Some(json) => serde_json::from_str(json)
            .context("--runner-tolerations (LMEVAL_RUNNER_TOLERATIONS): not a JSON array of tolerations")?,
        None => Vec::new(),
    };
    #[allow(clippy::cast_possible_truncation)]
    let termination_grace_seconds = args.kill_grace_seconds.ceil() as i64;
    Ok(KubernetesConfig {
        namespaces,
        runner: RunnerConfig {
            image: args.runner_image.clone(),
            image_pull_policy: args.runner_image_pull_policy.clone(),
            service_account: args.runner_service_account.clone(),
            node_selector,
            tolerations,
            backoff_limit: args.backoff_limit,
            driver: args.driver.clone(),
            lm_eval: args.lm_eval.as_ref().map_or_else(|| "lm_eval".into(), |p| p.to_string_lossy().into_owned()),
            task_dirs: args.task_dirs.iter().map(|d| d.to_string_lossy().into_owned()).collect(),
            termination_grace_seconds,
        },
        stuck_after: Duration::from_secs(args.stuck_after_seconds),
        api_timeout: Duration::from_secs(args.api_timeout_seconds.max(1)),
        pending_limits: pending_limits(args),
        policy: policy(args),
        identity: identity(),
        lease_duration: Duration::from_secs(args.leader_lease_seconds.max(3)),
    })
}

fn pending_limits(args: &ServeArgs) -> PendingLimits {
    PendingLimits { total: args.max_pending, per_creator: args.max_pending_per_creator }
}

pub async fn build_backend(args: &ServeArgs, metrics: &Arc<Metrics>) -> anyhow::Result<Arc<dyn Backend>> {
    match args.backend {
        BackendKind::Kubernetes => {
            let config = kubernetes_config(args)?;
            tracing::info!(namespaces = ?config.namespaces, image = %config.runner.image, "kubernetes backend");
            Ok(Arc::new(
                KubernetesBackend::connect(config, Arc::clone(metrics))
                    .await
                    .context("connecting to the Kubernetes API server")?,
            ))
        }
        BackendKind::Local => {
            let data_dir = match &args.data_dir {
                Some(dir) => dir.clone(),
                None => std::env::var_os("HOME")
                    .map(|home| PathBuf::from(home).join(".local/share/lm-eval-aas"))
                    .context("--data-dir (LMEVAL_DATA_DIR): no HOME to derive a default from")?,
            };
            let mut task_dirs = Vec::new();
            for dir in &args.task_dirs {
                let dir = std::fs::canonicalize(dir)
                    .with_context(|| format!("--task-dir (LMEVAL_TASK_DIRS): {}", dir.display()))?;
                task_dirs.push(dir.to_string_lossy().into_owned());
            }
            let config = LocalConfig {
                lm_eval: resolve_lm_eval(args.lm_eval.clone())?.to_string_lossy().into_owned(),
                driver: std::env::current_exe().context("cannot find our own executable to run as the driver")?,
                data_dir,
                task_dirs,
                max_running: args.max_running.unwrap_or_else(|| {
                    std::thread::available_parallelism().map_or(1, std::num::NonZero::get).div_ceil(2).max(1)
                }),
                kill_grace: Duration::from_secs_f64(args.kill_grace_seconds),
                pending_limits: pending_limits(args),
                namespace: own_namespace(args)?,
            };
            tracing::info!(data_dir = %config.data_dir.display(), lm_eval = %config.lm_eval, max_running = config.max_running, "local backend");
            Ok(Arc::new(LocalBackend::open(config).await.context("opening the local backend's data directory")?))
        }
    }
}

/// The admission webhook's listener and TLS set-up, when `--webhook-listen` asks for one.
async fn webhook_listener(
    args: &ServeArgs,
) -> anyhow::Result<Option<(tokio::net::TcpListener, Arc<rustls::ServerConfig>)>> {
    let Some(address) = args.webhook_listen else { return Ok(None) };
    if args.backend != BackendKind::Kubernetes {
        bail!("--webhook-listen (LMEVAL_WEBHOOK_LISTEN): only with --backend kubernetes");
    }
    let (Some(cert), Some(key)) = (&args.webhook_cert_file, &args.webhook_key_file) else {
        bail!("--webhook-listen needs --webhook-cert-file and --webhook-key-file");
    };
    let tls = webhook::tls_config(cert.clone(), key.clone())?;
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("--webhook-listen (LMEVAL_WEBHOOK_LISTEN): cannot bind {address}"))?;
    Ok(Some((listener, tls)))
}

pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let webhook = webhook_listener(&args).await?;
    let metrics = Arc::new(Metrics::default());
    let backend = build_backend(&args, &metrics).await?;
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let read_timeout = Duration::from_secs(args.request_read_timeout_seconds.max(1));
    let app = App {
        backend,
        policy: policy(&args),
        metrics,
        shutdown: shutdown_rx,
        limits: Limits::new(BodyLimits { max_bytes: args.max_body_bytes, read_timeout }, args.max_log_followers),
    };
    let state = api::AppState::from(app);
    if let Some((listener, tls)) = webhook {
        tracing::info!(address = %listener.local_addr()?, path = api::webhook::PATH, "webhook listening");
        tokio::spawn(webhook::serve(listener, tls, api::webhook::router(state.clone())));
    }
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("--listen (LMEVAL_LISTEN): cannot bind {}", args.listen))?;
    tracing::info!(address = %listener.local_addr()?, "listening");
    let timing = ShutdownTiming {
        delay: Duration::from_secs(args.shutdown_delay_seconds),
        timeout: Duration::from_secs(args.shutdown_timeout_seconds),
    };
    let limits = ConnectionLimits { max_connections: args.max_connections, read_timeout };
    connections::serve(listener, api::router(state), shutdown_tx, timing, limits).await;
    tracing::info!("stopped");
    Ok(())
}
