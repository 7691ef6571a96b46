//! The admission webhook's HTTPS listener. The API server calls webhooks over TLS only; the certificate and
//! key are PEM files, read again whenever they change (cert-manager renews them in place).

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use anyhow::Context;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::sync::Semaphore;

use super::connections::AcceptFailures;

/// The API server holds few connections to a webhook; anything beyond this waits its turn in the backlog.
const MAX_CONNECTIONS: usize = 256;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// The head of a request must arrive within this; its body then within `api::webhook::BODY_READ_TIMEOUT`.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The certificate and key files, and what was last read from them.
#[derive(Debug)]
struct ReloadingCertificate {
    cert_file: PathBuf,
    key_file: PathBuf,
    loaded: RwLock<(Option<SystemTime>, Arc<CertifiedKey>)>,
}

impl ReloadingCertificate {
    fn open(cert_file: PathBuf, key_file: PathBuf) -> anyhow::Result<Self> {
        let modified = modified(&cert_file, &key_file);
        let key = load(&cert_file, &key_file)?;
        Ok(Self { cert_file, key_file, loaded: RwLock::new((modified, key)) })
    }
}

fn modified(cert_file: &Path, key_file: &Path) -> Option<SystemTime> {
    let cert = std::fs::metadata(cert_file).and_then(|m| m.modified()).ok()?;
    let key = std::fs::metadata(key_file).and_then(|m| m.modified()).ok()?;
    Some(cert.max(key))
}

fn load(cert_file: &Path, key_file: &Path) -> anyhow::Result<Arc<CertifiedKey>> {
    let chain = CertificateDer::pem_file_iter(cert_file)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .with_context(|| format!("--webhook-cert-file: {}", cert_file.display()))?;
    anyhow::ensure!(!chain.is_empty(), "--webhook-cert-file: {} holds no certificate", cert_file.display());
    let key = PrivateKeyDer::from_pem_file(key_file)
        .with_context(|| format!("--webhook-key-file: {}", key_file.display()))?;
    let signing_key = rustls::crypto::ring::sign::any_supported_type(&key)
        .with_context(|| format!("--webhook-key-file: {} is not a key rustls can sign with", key_file.display()))?;
    Ok(Arc::new(CertifiedKey::new(chain, signing_key)))
}

impl ResolvesServerCert for ReloadingCertificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let now = modified(&self.cert_file, &self.key_file);
        {
            let loaded = self.loaded.read().ok()?;
            if now.is_none() || loaded.0 == now {
                return Some(Arc::clone(&loaded.1));
            }
        }
        let mut loaded = self.loaded.write().ok()?;
        match load(&self.cert_file, &self.key_file) {
            Ok(key) => {
                tracing::info!(cert_file = %self.cert_file.display(), "webhook certificate reloaded");
                *loaded = (now, key);
            }
            // Half-written files mid-renewal: keep serving the old pair, try again next handshake.
            Err(e) => tracing::warn!(error = %format!("{e:#}"), "webhook certificate not reloaded"),
        }
        Some(Arc::clone(&loaded.1))
    }
}

/// The TLS set-up of the webhook listener: the certificate pair, HTTP/1.1 only.
pub fn tls_config(cert_file: PathBuf, key_file: PathBuf) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(ReloadingCertificate::open(cert_file, key_file)?));
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Serves `router` over TLS on `listener` until the process ends.
pub async fn serve(listener: tokio::net::TcpListener, tls: Arc<rustls::ServerConfig>, router: axum::Router) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let places = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut failures = AcceptFailures::default();
    loop {
        let Ok(place) = Arc::clone(&places).acquire_owned().await else { return };
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => {
                failures.recovered();
                accepted
            }
            Err(e) => {
                tokio::time::sleep(failures.failed(&e)).await;
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let service = TowerToHyperService::new(router.clone());
        tokio::spawn(async move {
            let _place = place;
            let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => return tracing::debug!(%peer, error = %e, "webhook TLS handshake failed"),
                Err(_) => return tracing::debug!(%peer, "webhook TLS handshake timed out"),
            };
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = connection.await {
                tracing::debug!(%peer, error = %e, "webhook connection ended with an error");
            }
        });
    }
}
