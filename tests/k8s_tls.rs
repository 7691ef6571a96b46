//! TLS to a model endpoint with a private CA, on the real test cluster: the real model (SmolLM2-135M behind
//! llama.cpp's server, started by scripts/test as LLAMA_BASE_URL) behind a TLS proxy whose certificate comes
//! from a CA generated here. Runner pods verify it with `--runner-ca-bundle` (the CA in a ConfigMap of the
//! namespace) and refuse it, with lm-eval's own certificate error as the evaluation's message, without.

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::cluster::TestNamespace;
use common::{Service, submit, wait_until};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};

/// A CA of our own and a certificate it issued for 127.0.0.1: (the CA's PEM, the server's chain and key).
fn private_ca() -> (String, CertificateDer<'static>, PrivateKeyDer<'static>) {
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, "lm-eval-aas test model CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let ca_pem = ca.self_signed(&ca_key).expect("CA certificate").pem();
    let issuer = Issuer::new(ca, ca_key);

    let server_key = KeyPair::generate().expect("server key");
    let mut server = CertificateParams::new(vec![Ipv4Addr::LOCALHOST.to_string()]).expect("server params");
    server.distinguished_name.push(DnType::CommonName, "127.0.0.1");
    server.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    server.use_authority_key_identifier_extension = true;
    let cert = server.signed_by(&server_key, &issuer).expect("server certificate");
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der()));
    (ca_pem, cert.der().clone(), key)
}

/// Handshakes the proxy completed and those a client broke off (it did not trust the certificate).
#[derive(Default)]
struct Handshakes {
    completed: AtomicUsize,
    refused: AtomicUsize,
}

/// A TLS-terminating proxy on 127.0.0.1 in front of `upstream` (plain HTTP), until the test ends.
async fn tls_proxy(
    cert: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
    upstream: SocketAddr,
) -> (SocketAddr, Arc<Handshakes>) {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .expect("certificate and key");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.expect("bind");
    let address = listener.local_addr().expect("address");
    let handshakes = Arc::new(Handshakes::default());
    let counted = Arc::clone(&handshakes);
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let (acceptor, counted) = (acceptor.clone(), Arc::clone(&counted));
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(client).await else {
                    counted.refused.fetch_add(1, Ordering::Relaxed);
                    return;
                };
                counted.completed.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut server) = TcpStream::connect(upstream).await {
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut server).await;
                }
            });
        }
    });
    (address, handshakes)
}

/// A namespace with the CA in ConfigMap `model-ca` (key `ca.crt`) and the service, given `flags`.
fn namespace_with_ca(test: &str, ca_pem: &str, flags: &[&str]) -> Option<(TestNamespace, Service)> {
    let ns = TestNamespace::create(test)?;
    let config_map = json!({
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "model-ca"}, "data": {"ca.crt": ca_pem},
    });
    let applied = ns.kubectl_apply(&config_map.to_string());
    assert!(applied.status.success(), "{}", String::from_utf8_lossy(&applied.stderr));
    let service = ns.service(flags);
    Some((ns, service))
}

async fn evaluate(service: &Service, base_url: &str) -> (String, Value) {
    let created = submit(
        service,
        json!({
            "model": "local-completions",
            "model_args": {"model": "smollm2", "base_url": format!("{base_url}/completions"), "tokenizer_backend": "none", "num_concurrent": 1, "max_retries": 2},
            "tasks": ["lmeval_aas_gen"],
            "limit": 2,
            "timeout_seconds": 540,
        }),
    )
    .await;
    let id = created["id"].as_str().expect("id").to_string();
    let done = wait_until(service, &id, Duration::from_secs(540), "a terminal state", |e| {
        matches!(e["state"].as_str(), Some("succeeded" | "failed" | "cancelled"))
    })
    .await;
    (id, done)
}

fn pod_env(ns: &TestNamespace, id: &str) -> Vec<Value> {
    let job = ns.kubectl_json(&["get", "job", &format!("lmeval-{}", id.replace('-', ""))]);
    job["spec"]["template"]["spec"]["containers"][0]["env"].as_array().cloned().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_private_ca_endpoint_verifies_with_the_runner_ca_bundle_and_fails_clearly_without() {
    let Some(llama) = common::llama_base_url() else { return };
    let llama = reqwest::Url::parse(&llama).expect("LLAMA_BASE_URL");
    let upstream = llama.socket_addrs(|| None).expect("LLAMA_BASE_URL's address")[0];
    let started = Instant::now();
    let (ca_pem, cert, key) = private_ca();
    let (proxy, handshakes) = tls_proxy(cert, key, upstream).await;
    // The server's API, over TLS with our CA's certificate for 127.0.0.1.
    let base_url = format!("https://{proxy}{}", llama.path().trim_end_matches('/'));

    let Some((trusting_ns, trusting)) =
        namespace_with_ca("tls-ca", &ca_pem, &["--runner-ca-bundle", "model-ca/ca.crt"])
    else {
        return;
    };
    let (plain_ns, plain) = namespace_with_ca("tls-noca", &ca_pem, &[]).expect("the cluster is there");

    let ((trusted_id, trusted), (refused_id, refused)) =
        tokio::join!(evaluate(&trusting, &base_url), evaluate(&plain, &base_url));
    let elapsed = started.elapsed();

    assert_eq!(trusted["state"], "succeeded", "{trusted}\nservice log:\n{}", trusting.log_text());
    let metrics = trusted["metrics"].as_array().expect("metrics");
    assert!(metrics.iter().any(|m| m["task"] == "lmeval_aas_gen" && m["metric"] == "exact_match"), "{trusted}");
    let env = pod_env(&trusting_ns, &trusted_id);
    for name in ["SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"] {
        assert!(env.iter().any(|e| e["name"] == name && e["value"] == "/lmeval/ca/ca-bundle.crt"), "{name}: {env:?}");
    }

    assert_eq!(
        (refused["state"].as_str(), refused["reason"].as_str()),
        (Some("failed"), Some("LmEvalError")),
        "{refused}"
    );
    let message = refused["message"].as_str().unwrap_or_default();
    assert!(message.contains("CERTIFICATE_VERIFY_FAILED"), "the message names the TLS failure: {message}");
    assert!(!pod_env(&plain_ns, &refused_id).iter().any(|e| e["name"] == "SSL_CERT_FILE"));

    // The service names a served namespace whose bundle is missing at start, before a runner pod waits for it.
    assert!(!trusting.log_text().contains("--runner-ca-bundle:"), "{}", trusting.log_text());
    let misconfigured = plain_ns.service(&["--runner-ca-bundle", "model-ca"]);
    let warned = common::wait_for(Duration::from_secs(10), || {
        misconfigured.log_text().contains("ConfigMap model-ca has no key ca-bundle.crt").then_some(())
    });
    assert!(warned.is_some(), "no warning about the missing key:\n{}", misconfigured.log_text());

    let (completed, broken_off) =
        (handshakes.completed.load(Ordering::Relaxed), handshakes.refused.load(Ordering::Relaxed));
    assert!(completed > 0 && broken_off > 0, "handshakes: {completed} completed, {broken_off} refused by the client");
    let named = message.lines().rev().find(|line| line.contains("CERTIFICATE_VERIFY_FAILED")).unwrap_or_default();
    println!(
        "TLS with a private CA: trusted run succeeded, untrusted one failed in {:.1} s ({completed} handshakes \
         completed, {broken_off} refused); its message says:\n{named}",
        elapsed.as_secs_f64()
    );
}
