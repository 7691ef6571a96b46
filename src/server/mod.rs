//! `serve`: builds the backend and the router from the flags, and runs until SIGTERM or SIGINT
//! (`connections`: accepting and serving, bounded; `socket`: what hyper reads and writes through).

mod connections;
mod socket;
pub mod webhook;

use crate::k8s::job::RunnerOutputs;
use crate::outputs::store::{BucketAccess, OutputStore, StoreKind};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::sync::watch;

use crate::api::{self, App, BodyLimits, Limits};
use crate::auth::token_file::TokenFile;
use crate::auth::{Auth, AuthMode, Authenticator, Authorizer, CacheLimits, Reviewer};
use crate::backend::kubernetes::{KubernetesBackend, KubernetesConfig};
use crate::backend::local::{LocalBackend, LocalConfig};
use crate::backend::{Backend, PendingLimits};
use crate::cli::{BackendKind, ServeArgs};
use crate::k8s::job::{CaBundle, RunnerConfig};
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
    let ca_bundle = args.runner_ca_bundle.as_deref().map(CaBundle::parse).transpose().map_err(|e| {
        anyhow::anyhow!("--runner-ca-bundle (LMEVAL_RUNNER_CA_BUNDLE): {e}; want CONFIGMAP or CONFIGMAP/KEY")
    })?;
    #[allow(clippy::cast_possible_truncation)]
    let termination_grace_seconds = args.kill_grace_seconds.ceil() as i64;
    Ok(KubernetesConfig {
        namespaces,
        runner: RunnerConfig {
            image: args.runner_image.clone(),
            image_pull_policy: args.runner_image_pull_policy.clone(),
            node_selector,
            tolerations,
            backoff_limit: args.backoff_limit,
            driver: args.driver.clone(),
            lm_eval: args.lm_eval.as_ref().map_or_else(|| "lm_eval".into(), |p| p.to_string_lossy().into_owned()),
            task_dirs: args.task_dirs.iter().map(|d| d.to_string_lossy().into_owned()).collect(),
            termination_grace_seconds,
            ca_bundle,
            outputs: match &args.output_store {
                StoreKind::ConfigMap => RunnerOutputs::RunRecord,
                StoreKind::Bucket { .. } => RunnerOutputs::Presigned,
                StoreKind::Claim { name } => RunnerOutputs::Claim(name.clone()),
            },
            upload_patience_seconds: args.output_upload_patience_seconds,
        },
        output_store: OutputStore::open(
            args.output_store.clone(),
            &BucketAccess {
                endpoint: args.output_store_endpoint.clone(),
                region: args.output_store_region.clone(),
                virtual_hosted: args.output_store_virtual_hosted,
                credentials: None,
            },
            &args.output_store_mount,
        )
        .context("--output-store (LMEVAL_OUTPUT_STORE)")?,
        stuck_after: Duration::from_secs(args.stuck_after_seconds),
        api_timeout: Duration::from_secs(args.api_timeout_seconds.max(1)),
        pending_limits: pending_limits(args),
        max_running_per_namespace: args.max_running_per_namespace,
        policy: policy(args),
        identity: identity(),
        lease_duration: Duration::from_secs(args.leader_lease_seconds.max(3)),
    })
}

/// Warns about a served namespace without the runner's CA bundle: its runner pods would wait for the volume.
async fn check_ca_bundle(client: kube::Client, namespaces: Vec<String>, bundle: CaBundle) {
    use k8s_openapi::api::core::v1::ConfigMap;
    for namespace in namespaces {
        let found = kube::Api::<ConfigMap>::namespaced(client.clone(), &namespace).get_opt(&bundle.config_map).await;
        let problem = match found {
            Ok(Some(map)) => {
                let present = map.data.as_ref().is_some_and(|d| d.contains_key(&bundle.key))
                    || map.binary_data.as_ref().is_some_and(|d| d.contains_key(&bundle.key));
                (!present).then(|| format!("ConfigMap {} has no key {}", bundle.config_map, bundle.key))
            }
            Ok(None) => Some(format!("no ConfigMap {}", bundle.config_map)),
            Err(e) => Some(format!("cannot read ConfigMap {}: {e}", bundle.config_map)),
        };
        if let Some(problem) = problem {
            tracing::warn!(
                namespace,
                "--runner-ca-bundle: {problem}; runner pods there wait for it in ContainerCreating until it exists"
            );
        }
    }
}

fn pending_limits(args: &ServeArgs) -> PendingLimits {
    PendingLimits {
        total: args.max_pending,
        per_creator: args.max_pending_per_creator,
        per_namespace: args.max_pending_per_namespace,
    }
}

pub async fn build_backend(
    args: &ServeArgs,
    client: Option<kube::Client>,
    metrics: &Arc<Metrics>,
    service_ports: Vec<u16>,
) -> anyhow::Result<Arc<dyn Backend>> {
    match args.backend {
        BackendKind::Kubernetes => {
            let config = kubernetes_config(args)?;
            tracing::info!(namespaces = ?config.namespaces, image = %config.runner.image, "kubernetes backend");
            let client = client.context("the kubernetes backend needs a client of the API server")?;
            if let Some(bundle) = config.runner.ca_bundle.clone() {
                tokio::spawn(check_ca_bundle(client.clone(), config.namespaces.clone(), bundle));
            }
            let controller_client = crate::backend::kubernetes::counted_client(Arc::clone(metrics))
                .await
                .context("connecting to the Kubernetes API server")?;
            Ok(Arc::new(KubernetesBackend::connect(config, client, controller_client)))
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
                service_ports,
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

/// Which `--auth`: the flag, else the default for the backend and listen address.
fn auth_mode(args: &ServeArgs) -> anyhow::Result<AuthMode> {
    let loopback = args.listen.ip().is_loopback();
    match (args.auth, args.backend) {
        (Some(AuthMode::None), _) if !loopback => {
            tracing::warn!(address = %args.listen, "--auth none on a non-loopback address: anyone who reaches it may do anything");
            Ok(AuthMode::None)
        }
        (Some(mode), _) => Ok(mode),
        (None, BackendKind::Kubernetes) => Ok(AuthMode::Kubernetes),
        (None, BackendKind::Local) if loopback => Ok(AuthMode::None),
        (None, BackendKind::Local) => bail!(
            "--auth (LMEVAL_AUTH): listening on {} (not loopback) needs an explicit --auth: token-file, kubernetes, or none to accept anyone",
            args.listen
        ),
    }
}

/// Authentication and authorization as the flags ask.
fn build_auth(args: &ServeArgs, client: Option<&kube::Client>) -> anyhow::Result<Auth> {
    let mode = auth_mode(args)?;
    let forwarded = axum::http::HeaderName::try_from(args.auth_forwarded_token_header.as_str())
        .context("--auth-forwarded-token-header (LMEVAL_AUTH_FORWARDED_TOKEN_HEADER): not a header name")?;
    let limits = CacheLimits {
        token_ttl: Duration::from_secs(args.auth_token_cache_seconds),
        access_ttl: Duration::from_secs(args.auth_decision_cache_seconds),
        ..CacheLimits::default()
    };
    let reviewer = client.map(|client| {
        Arc::new(Reviewer::new(
            client.clone(),
            args.auth_audiences.clone(),
            limits,
            Duration::from_secs(args.api_timeout_seconds.max(1)),
        ))
    });
    let authorizer = match &reviewer {
        Some(reviewer) if mode != AuthMode::None => Authorizer::Kubernetes(Arc::clone(reviewer)),
        _ => Authorizer::AllowAll,
    };
    let authenticator = match mode {
        AuthMode::None => Authenticator::Anonymous,
        AuthMode::TokenFile => {
            let path = args.auth_token_file.as_ref().context("--auth token-file needs --auth-token-file")?;
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("--auth-token-file (LMEVAL_AUTH_TOKEN_FILE): {}", path.display()))?;
            let file = TokenFile::parse(&text)
                .map_err(|e| anyhow::anyhow!("--auth-token-file (LMEVAL_AUTH_TOKEN_FILE): {}: {e}", path.display()))?;
            tracing::info!(callers = file.len(), "authentication by token file");
            Authenticator::TokenFile(file)
        }
        AuthMode::Kubernetes => {
            let reviewer = reviewer.context("--auth kubernetes needs the kubernetes backend")?;
            tracing::info!(audiences = ?args.auth_audiences, "authentication by TokenReview, authorization by SubjectAccessReview");
            Authenticator::Kubernetes(reviewer)
        }
    };
    Ok(Auth { authenticator, authorizer, forwarded_token_header: Some(forwarded) })
}

pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let webhook = webhook_listener(&args).await?;
    let metrics = Arc::new(Metrics::default());
    let client = match args.backend {
        BackendKind::Kubernetes => Some(
            crate::backend::kubernetes::counted_client(Arc::clone(&metrics))
                .await
                .context("connecting to the Kubernetes API server")?,
        ),
        BackendKind::Local => None,
    };
    let auth = build_auth(&args, client.as_ref())?;
    let metrics_listener = match args.metrics_listen {
        Some(address) => Some(
            tokio::net::TcpListener::bind(address)
                .await
                .with_context(|| format!("--metrics-listen (LMEVAL_METRICS_LISTEN): cannot bind {address}"))?,
        ),
        None => None,
    };
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("--listen (LMEVAL_LISTEN): cannot bind {}", args.listen))?;
    let mut service_ports = vec![listener.local_addr()?.port()];
    if let Some(metrics_listener) = &metrics_listener {
        service_ports.push(metrics_listener.local_addr()?.port());
    }
    let backend = build_backend(&args, client, &metrics, service_ports).await?;
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let read_timeout = Duration::from_secs(args.request_read_timeout_seconds.max(1));
    let app = App {
        backend,
        policy: policy(&args),
        metrics,
        shutdown: shutdown_rx,
        limits: Limits::new(BodyLimits { max_bytes: args.max_body_bytes, read_timeout }, args.max_log_followers),
        auth,
    };
    let state = api::AppState::from(app);
    if let Some((listener, tls)) = webhook {
        tracing::info!(address = %listener.local_addr()?, path = api::webhook::PATH, "webhook listening");
        tokio::spawn(webhook::serve(listener, tls, api::webhook::router(state.clone())));
    }
    if let Some(listener) = metrics_listener {
        let metrics_state = state.clone();
        tracing::info!(address = %listener.local_addr()?, "metrics listening");
        tokio::spawn(async move { axum::serve(listener, api::metrics_router(metrics_state)).await });
    }
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
