//! The admission webhook's HTTPS listener against a client that sends a review's head and then stalls its
//! body: the listener answers `408` and closes the connection within the read timeout, instead of holding one of
//! its few connections for as long as the client likes (with `failurePolicy: Ignore`, a listener kept busy lets
//! Evaluations in unvalidated). The API's `/healthz` answers at once meanwhile. In process: the listener and router `serve` runs with
//! `--webhook-listen`, on a local backend (the webhook's judgement is not what is tested here).

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use lm_eval_aas::api::{self, BodyLimits, Limits};
use lm_eval_aas::auth::Auth;
use lm_eval_aas::server::webhook;
use rcgen::{CertificateParams, KeyPair};
use rustls::pki_types::ServerName;

/// A self-signed certificate for 127.0.0.1, written as PEM files in `dir`: (cert file, key file, the cert).
fn certificate(dir: &std::path::Path) -> (String, String, rustls::pki_types::CertificateDer<'static>) {
    let key = KeyPair::generate().expect("key");
    let cert = CertificateParams::new(vec!["127.0.0.1".to_string()]).expect("params").self_signed(&key).expect("cert");
    let (cert_file, key_file) = (dir.join("tls.crt"), dir.join("tls.key"));
    std::fs::write(&cert_file, cert.pem()).expect("write cert");
    std::fs::write(&key_file, key.serialize_pem()).expect("write key");
    (cert_file.display().to_string(), key_file.display().to_string(), cert.der().clone())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_review_whose_body_stalls_is_answered_408_and_its_connection_closed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert_file, key_file, cert) = certificate(dir.path());
    // --request-read-timeout-seconds 2: shorter than the webhook's own 10 s, so it applies.
    let limits = Limits::new(BodyLimits { max_bytes: 4096, read_timeout: Duration::from_secs(2) }, 10);
    let state = common::state_with(&dir.path().join("data"), 0, limits, Auth::none()).await;
    let app = api::router(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("address").port();
    let tls = webhook::tls_config(cert_file.into(), key_file.into()).expect("TLS");
    tokio::spawn(webhook::serve(listener, tls, api::webhook::router(state)));

    // The head and the first byte of a 4,000-byte review, then nothing (a blocking client, on its own thread).
    let started = Instant::now();
    let client = tokio::task::spawn_blocking(move || {
        let mut tls = connect(port, cert);
        tls.write_all(
            b"POST /validate-evaluations HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\ncontent-length: 4000\r\n\r\n{",
        )
        .expect("send the head");
        tls.flush().expect("flush");
        let mut answer = Vec::new();
        let ended = loop {
            let mut buf = [0u8; 4096];
            match tls.read(&mut buf) {
                Ok(0) => break Ok(()),
                Ok(n) => answer.extend_from_slice(&buf[..n]),
                // A peer that closes without TLS's close_notify ends the connection just the same.
                Err(e) if e.kind() == ErrorKind::UnexpectedEof => break Ok(()),
                Err(e) => break Err(e),
            }
        };
        (ended, String::from_utf8_lossy(&answer).to_string())
    });

    // Meanwhile the API answers /healthz at once, again and again.
    while !client.is_finished() && started.elapsed() < Duration::from_secs(20) {
        let asked = Instant::now();
        let (response, _) = common::send(&app, common::get("/healthz")).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert!(asked.elapsed() < Duration::from_millis(50), "/healthz took {:?}", asked.elapsed());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (ended, answer) = client.await.expect("client");
    let took = started.elapsed();
    assert!(ended.is_ok(), "the connection is closed, not held open ({ended:?} after {took:?}); so far: {answer}");
    assert!(answer.starts_with("HTTP/1.1 408"), "a 408 answer: {answer}");
    assert!(answer.contains("application/problem+json") && answer.contains("request-timeout"), "{answer}");
    assert!(took >= Duration::from_secs(2) && took < Duration::from_secs(5), "answered after {took:?}, want ~2 s");
}

/// A TLS connection to the listener on `port` that trusts `cert`; reads give up after 15 s (longer than the
/// deadline under test: a listener that never answers fails the test instead of hanging it).
fn connect(
    port: u16,
    cert: rustls::pki_types::CertificateDer<'static>,
) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert).expect("trust the certificate");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = ServerName::try_from("127.0.0.1").expect("server name");
    let connection = rustls::ClientConnection::new(Arc::new(config), name).expect("TLS client");
    let socket = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    socket.set_read_timeout(Some(Duration::from_secs(15))).expect("read timeout");
    rustls::StreamOwned::new(connection, socket)
}
