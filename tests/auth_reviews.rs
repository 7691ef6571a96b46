//! What the service asks the API server, in process: `--auth kubernetes` against a stand-in API server on
//! 127.0.0.1 that answers TokenReviews as OpenShift does for oauth-proxy's scoped tokens (a `uid`, and the scope in
//! `extra`), and records every SubjectAccessReview. The review carries the token's uid and extra (so a scoped token
//! is judged with its scopes), and a namespace the service does not serve costs no review at all.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::routing::post;
use lm_eval_aas::api::{self, BodyLimits, Limits};
use lm_eval_aas::auth::{Auth, Authenticator, Authorizer, CacheLimits, Reviewer};
use serde_json::{Value, json};

const SCOPES: &str = "scopes.authorization.openshift.io";

/// A stand-in API server: TokenReview says every token is alice with scope `user:info`; a SubjectAccessReview is
/// denied when it carries that scope (as OpenShift's scope authorizer would deny listing evaluations with it) and
/// allowed otherwise. Returns its URL and the reviews it was sent.
async fn api_server() -> (String, Arc<Mutex<Vec<Value>>>) {
    let reviews = Arc::new(Mutex::new(Vec::new()));
    let recorded = Arc::clone(&reviews);
    let router = axum::Router::new()
        .route(
            "/apis/authentication.k8s.io/v1/tokenreviews",
            post(|Json(review): Json<Value>| async move {
                Json(json!({
                    "apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": review["spec"],
                    "status": {"authenticated": true, "user": {
                        "username": "alice", "uid": "3f1c-alice", "groups": ["system:authenticated"],
                        "extra": {SCOPES: ["user:info"]}}},
                }))
            }),
        )
        .route(
            "/apis/authorization.k8s.io/v1/subjectaccessreviews",
            post(move |Json(review): Json<Value>| async move {
                let scoped = review["spec"]["extra"][SCOPES].as_array().is_some_and(|s| !s.is_empty());
                recorded.lock().expect("reviews").push(review.clone());
                Json(json!({
                    "apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview", "spec": review["spec"],
                    "status": {"allowed": !scoped, "reason": if scoped { "scoped token: user:info" } else { "" }},
                }))
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    tokio::spawn(async move { axum::serve(listener, router).await });
    (url, reviews)
}

fn request(uri: &str, token: Option<&str>) -> Request<Body> {
    let mut builder = Request::builder().uri(uri);
    if let Some(token) = token {
        builder = builder.header("authorization", format!("Bearer {token}"));
    }
    builder.body(Body::empty()).expect("request")
}

#[tokio::test]
async fn reviews_carry_the_tokens_uid_and_extra_and_unserved_namespaces_cost_none() {
    // As the binary does at start: kube's client wants a process-wide TLS provider even for plain HTTP.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (url, reviews) = api_server().await;
    let client = kube::Client::try_from(kube::Config::new(url.parse().expect("url"))).expect("client");
    let reviewer = Arc::new(Reviewer::new(client, Vec::new(), CacheLimits::default(), Duration::from_secs(5)));
    let auth = Auth {
        authenticator: Authenticator::Kubernetes(Arc::clone(&reviewer)),
        authorizer: Authorizer::Kubernetes(reviewer),
        forwarded_token_header: None,
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let limits = Limits::new(BodyLimits { max_bytes: 4096, read_timeout: Duration::from_secs(5) }, 10);
    let app = api::router(common::state_with(&dir.path().join("data"), 0, limits, auth).await);

    // A scoped token is judged with its scope: the review names the token's uid and extra, and is denied.
    let (response, body) = common::send(&app, request("/api/v1/namespaces/default/evaluations", Some("t"))).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN, "{}", String::from_utf8_lossy(&body));
    let sent = reviews.lock().expect("reviews").clone();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0]["spec"]["user"], "alice");
    assert_eq!(sent[0]["spec"]["uid"], "3f1c-alice");
    assert_eq!(sent[0]["spec"]["extra"], json!({SCOPES: ["user:info"]}));
    assert_eq!(sent[0]["spec"]["resourceAttributes"]["namespace"], "default");

    // A namespace the service does not serve: 404 with no review; without a token, 401 first.
    for namespace in ["team-z", "kube-system", "no-such-namespace-at-all"] {
        let uri = format!("/api/v1/namespaces/{namespace}/evaluations");
        let (response, body) = common::send(&app, request(&uri, Some("t"))).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{uri}");
        assert_eq!(common::json(&body)["type"], "urn:lm-eval-aas:problem:namespace-not-served");
        let (response, _) =
            common::send(&app, request(&format!("{uri}/0b7e6a52-5f1e-4a8e-9d7e-2f4b1c3d5e6f"), Some("t"))).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{uri}/…");
        let (response, _) = common::send(&app, request(&uri, None)).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{uri} without a token");
    }
    assert_eq!(reviews.lock().expect("reviews").len(), 1, "no SubjectAccessReview for a namespace not served");
}
