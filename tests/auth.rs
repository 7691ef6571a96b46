//! Authentication in-process, with a token file: every API and Flask route wants a valid bearer token, the
//! probes, the OpenAPI document and the UI do not; the hot status read answers nobody it has not checked.

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::{json, send};
use lm_eval_aas::auth::token_file::TokenFile;
use lm_eval_aas::auth::{Auth, Authenticator, Authorizer};
use sha2::{Digest, Sha256};

const ALICE: &str = "alice-token";
const BOB: &str = "bob-token";

fn token_file_auth() -> Auth {
    let line = |token: &str, user: &str| format!("{:x} {user} team\n", Sha256::digest(token.as_bytes()));
    let file = TokenFile::parse(&(line(ALICE, "alice") + &line(BOB, "bob"))).expect("token file");
    Auth {
        authenticator: Authenticator::TokenFile(file),
        authorizer: Authorizer::AllowAll,
        forwarded_token_header: None,
    }
}

fn request(method: &str, uri: &str, token: Option<&str>, body: Option<&str>) -> Request<Body> {
    let mut builder = Request::builder().method(method).uri(uri);
    if let Some(token) = token {
        builder = builder.header("authorization", format!("Bearer {token}"));
    }
    match body {
        Some(body) => builder.header("content-type", "application/json").body(Body::from(body.to_string())),
        None => builder.body(Body::empty()),
    }
    .expect("request")
}

#[tokio::test]
async fn every_route_but_the_open_ones_wants_a_valid_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = common::app_with_auth(dir.path(), 0, 4096, token_file_auth()).await;
    let submit = r#"{"model": "dummy", "tasks": ["lmeval_aas_mc"], "limit": 1}"#;
    let (response, body) = send(&app, request("POST", "/api/v1/evaluations", Some(ALICE), Some(submit))).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED, "{}", String::from_utf8_lossy(&body));
    let evaluation = json(&body);
    assert_eq!(evaluation["created_by"], "alice");
    let id = evaluation["id"].as_str().expect("id").to_string();

    let guarded = [
        ("POST", "/api/v1/evaluations".to_string(), Some(submit)),
        ("GET", "/api/v1/evaluations".into(), None),
        ("GET", format!("/api/v1/evaluations/{id}"), None),
        ("GET", format!("/api/v1/evaluations/{id}/logs"), None),
        ("GET", format!("/api/v1/evaluations/{id}/results"), None),
        ("GET", format!("/api/v1/evaluations/{id}/samples?task=t"), None),
        ("GET", format!("/api/v1/evaluations/{id}/artifacts"), None),
        ("GET", format!("/api/v1/evaluations/{id}/artifacts/samples/t.jsonl"), None),
        ("GET", format!("/api/v1/evaluations/{id}/artifacts.tar.gz"), None),
        ("GET", format!("/api/v1/evaluations/{id}/manifest"), None),
        ("GET", format!("/api/v1/namespaces/default/evaluations/{id}/artifacts/log.txt"), None),
        ("POST", format!("/api/v1/evaluations/{id}/cancel"), None),
        ("DELETE", format!("/api/v1/evaluations/{id}"), None),
        ("GET", format!("/api/v1/namespaces/default/evaluations/{id}"), None),
        ("GET", "/api/v1/namespaces/default/evaluations".into(), None),
        ("POST", "/submit_job".into(), Some(r#"{"model": "dummy", "tasks": "lmeval_aas_mc"}"#)),
        ("GET", format!("/poll_job?task_id={id}"), None),
        ("GET", format!("/job_results?task_id={id}"), None),
        ("GET", "/list_jobs".into(), None),
        ("DELETE", format!("/cancel_job?task_id={id}"), None),
        ("GET", "/metrics".into(), None),
    ];
    for (method, uri, body) in &guarded {
        for token in [None, Some("not-a-token")] {
            let (response, problem) = send(&app, request(method, uri, token, *body)).await;
            assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{method} {uri} with {token:?}");
            assert_eq!(response.headers()["www-authenticate"], "Bearer realm=\"lm-eval-aas\"", "{method} {uri}");
            assert_eq!(response.headers()["content-type"], "application/problem+json");
            assert_eq!(json(&problem)["type"], "urn:lm-eval-aas:problem:unauthenticated");
        }
    }
    // The hot status read answers from memory only for a caller it knows: never for one without a token.
    let (response, _) = send(&app, request("GET", &format!("/api/v1/evaluations/{id}"), Some(ALICE), None)).await;
    assert_eq!(response.status(), StatusCode::OK);
    let (response, body) = send(&app, request("GET", &format!("/api/v1/evaluations/{id}"), None, None)).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{}", String::from_utf8_lossy(&body));

    for open in ["/healthz", "/readyz", "/openapi.json", "/", "/docs/"] {
        let (response, _) = send(&app, request("GET", open, None, None)).await;
        assert_eq!(response.status(), StatusCode::OK, "{open} is open");
    }
    let (response, _) = send(&app, request("GET", "/metrics", Some(BOB), None)).await;
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn the_creator_is_recorded_and_filters_the_list_and_keys_belong_to_their_caller() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = common::app_with_auth(dir.path(), 0, 4096, token_file_auth()).await;
    let submit = r#"{"model": "dummy", "tasks": ["lmeval_aas_mc"], "limit": 1}"#;
    let keyed = |token: &'static str| {
        let mut request = request("POST", "/api/v1/evaluations", Some(token), Some(submit));
        request.headers_mut().insert("idempotency-key", "shared-key".parse().expect("header"));
        request
    };
    let (response, alice) = send(&app, keyed(ALICE)).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let (response, again) = send(&app, keyed(ALICE)).await;
    assert_eq!(response.headers().get("idempotent-replayed").map(|v| v.as_bytes()), Some(&b"true"[..]));
    assert_eq!(json(&again)["id"], json(&alice)["id"], "the same caller's retry");
    let (response, bob) = send(&app, keyed(BOB)).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    assert!(response.headers().get("idempotent-replayed").is_none(), "bob's key is bob's");
    assert_ne!(json(&bob)["id"], json(&alice)["id"], "another caller's key neither returns nor reveals theirs");
    assert_eq!(json(&bob)["created_by"], "bob");

    let (_, page) = send(&app, request("GET", "/api/v1/evaluations?created_by=bob", Some(ALICE), None)).await;
    let items = json(&page)["items"].as_array().expect("items").clone();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["id"], json(&bob)["id"]);
    let (_, page) = send(&app, request("GET", "/api/v1/evaluations", Some(ALICE), None)).await;
    assert_eq!(json(&page)["items"].as_array().map(Vec::len), Some(2));
}
