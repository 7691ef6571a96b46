//! The API contract in-process: bad input, dry run, idempotency, paging, health, metrics, OpenAPI.

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::{get, json, paused_app, post_json, send};
use serde_json::{Value, json};

const PROBLEM: &str = "application/problem+json";

#[tokio::test]
async fn every_bad_input_gets_a_problem_naming_its_field() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = common::app_with(dir.path(), 0, 2048).await;
    let big = format!(r#"{{"model":"dummy","tasks":["t"],"system_instruction":"{}"}}"#, "x".repeat(4096));
    let cases: Vec<(&str, String, u16, Option<&str>)> = vec![
        ("malformed JSON", r#"{"model": "dummy", "tasks": ["a",}"#.into(), 400, None),
        ("not an object", "[1, 2]".into(), 400, None),
        ("wrong type for tasks", r#"{"model": "dummy", "tasks": "arc_easy"}"#.into(), 400, Some("tasks")),
        ("wrong type nested", r#"{"model": "dummy", "tasks": ["t"], "env": [{"name": 5, "value": "x"}]}"#.into(), 400, Some("env[0].name")),
        ("unknown field", r#"{"model": "dummy", "tasks": ["t"], "bogus": 1}"#.into(), 400, Some("bogus")),
        ("unknown nested field", r#"{"model": "dummy", "tasks": ["t"], "resources": {"tpu": 1}}"#.into(), 400, Some("resources.tpu")),
        ("missing model", r#"{"tasks": ["t"]}"#.into(), 400, Some("model")),
        ("unknown model type", r#"{"model": "gpt-9", "tasks": ["t"]}"#.into(), 422, Some("model")),
        ("empty tasks", r#"{"model": "dummy", "tasks": []}"#.into(), 422, Some("tasks")),
        ("shell metacharacters in a task", r#"{"model": "dummy", "tasks": ["arc_easy; rm -rf /"]}"#.into(), 422, Some("tasks[0]")),
        ("command substitution in a task", r#"{"model": "dummy", "tasks": ["ok", "$(id)"]}"#.into(), 422, Some("tasks[1]")),
        ("path as a task", r#"{"model": "dummy", "tasks": ["/etc/passwd"]}"#.into(), 422, Some("tasks[0]")),
        ("dot-dot in a task", r#"{"model": "dummy", "tasks": ["a..b"]}"#.into(), 422, Some("tasks[0]")),
        ("task yaml file", r#"{"model": "dummy", "tasks": ["mine.yaml"]}"#.into(), 422, Some("tasks[0]")),
        ("limit zero", r#"{"model": "dummy", "tasks": ["t"], "limit": 0}"#.into(), 422, Some("limit")),
        ("limit negative", r#"{"model": "dummy", "tasks": ["t"], "limit": -5}"#.into(), 422, Some("limit")),
        ("negative few-shot", r#"{"model": "dummy", "tasks": ["t"], "num_fewshot": -1}"#.into(), 422, Some("num_fewshot")),
        ("bad batch size", r#"{"model": "dummy", "tasks": ["t"], "batch_size": "big"}"#.into(), 422, Some("batch_size")),
        ("secret value in env", r#"{"model": "dummy", "tasks": ["t"], "env": [{"name": "HF_TOKEN", "value": "hf_abc"}]}"#.into(), 422, Some("env[0].value")),
        ("secret value in model_args", r#"{"model": "dummy", "tasks": ["t"], "model_args": {"api_key": "sk-1"}}"#.into(), 422, Some("model_args.api_key")),
        ("reserved env", r#"{"model": "dummy", "tasks": ["t"], "env": [{"name": "HF_HUB_OFFLINE", "value": "0"}]}"#.into(), 422, Some("env[0].name")),
        ("secret reference on the local backend", r#"{"model": "dummy", "tasks": ["t"], "env": [{"name": "OPENAI_API_KEY", "secret": {"name": "openai", "key": "key"}}]}"#.into(), 422, Some("env[0].secret")),
        ("volumes on the local backend", r#"{"model": "dummy", "tasks": ["t"], "volumes": [{"pvc": "data", "mount_path": "/data"}]}"#.into(), 422, Some("volumes")),
        ("include path outside the task dirs", r#"{"model": "dummy", "tasks": ["t"], "include_path": "/etc"}"#.into(), 422, Some("include_path")),
        ("bad label", r#"{"model": "dummy", "tasks": ["t"], "labels": {"team": "a b"}}"#.into(), 422, Some("labels.team")),
        ("bad inline task name", r#"{"model": "dummy", "tasks": ["t"], "inline_tasks": {"../../x.yaml": "task: x"}}"#.into(), 422, Some("inline_tasks.../../x.yaml")),
        ("timeout zero", r#"{"model": "dummy", "tasks": ["t"], "timeout_seconds": 0}"#.into(), 422, Some("timeout_seconds")),
        ("online not permitted", r#"{"model": "dummy", "tasks": ["t"], "allow_online": true}"#.into(), 403, Some("allow_online")),
        ("code execution not permitted", r#"{"model": "dummy", "tasks": ["t"], "allow_code_execution": true}"#.into(), 403, Some("allow_code_execution")),
        ("trust_remote_code not permitted", r#"{"model": "hf", "tasks": ["t"], "model_args": {"trust_remote_code": true}}"#.into(), 403, Some("model_args.trust_remote_code")),
        ("body too large", big, 413, None),
    ];
    for (name, body, status, field) in cases {
        let (response, bytes) = send(&app, post_json("/api/v1/evaluations", &body)).await;
        assert_eq!(response.status().as_u16(), status, "{name}: {}", String::from_utf8_lossy(&bytes));
        assert_eq!(response.headers()["content-type"], PROBLEM, "{name}");
        let problem = json(&bytes);
        assert_eq!(problem["status"], status, "{name}");
        assert!(problem["type"].as_str().is_some_and(|t| t.starts_with("urn:lm-eval-aas:problem:")), "{name}");
        if let Some(field) = field {
            assert_eq!(problem["field"], field, "{name}: {problem}");
            assert!(
                problem["detail"].as_str().is_some_and(|d| d.contains(field)),
                "{name}: detail must name {field}: {problem}"
            );
        }
    }

    let wrong_media = Request::post("/api/v1/evaluations")
        .header("content-type", "text/plain")
        .body(Body::from("{}"))
        .expect("request");
    let (response, _) = send(&app, wrong_media).await;
    assert_eq!(response.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(response.headers()["content-type"], PROBLEM);

    let query_cases = [
        ("/api/v1/evaluations?page_size=0", 422, "page_size"),
        ("/api/v1/evaluations?page_size=501", 422, "page_size"),
        ("/api/v1/evaluations?page_size=many", 422, "page_size"),
        ("/api/v1/evaluations?state=done", 422, "state"),
        ("/api/v1/evaluations?label=novalue", 422, "label"),
        ("/api/v1/evaluations?page_token=garbage", 422, "page_token"),
    ];
    for (uri, status, field) in query_cases {
        let (response, bytes) = send(&app, get(uri)).await;
        assert_eq!(response.status().as_u16(), status, "{uri}");
        assert_eq!(response.headers()["content-type"], PROBLEM, "{uri}");
        assert_eq!(json(&bytes)["field"], field, "{uri}");
    }
    for uri in [
        "/api/v1/evaluations/7b0d8c5e-1111-4222-8333-944455556666",
        "/api/v1/evaluations/not-a-uuid",
        "/api/v1/evaluations/7b0d8c5e-1111-4222-8333-944455556666/logs",
        "/api/v1/evaluations/7b0d8c5e-1111-4222-8333-944455556666/results",
        "/no/such/route",
    ] {
        let (response, _) = send(&app, get(uri)).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{uri}");
        assert_eq!(response.headers()["content-type"], PROBLEM, "{uri}");
    }
    let (response, _) = send(&app, Request::put("/api/v1/evaluations").body(Body::empty()).expect("request")).await;
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(response.headers()["content-type"], PROBLEM);
}

#[tokio::test]
async fn dry_run_shows_the_command_and_creates_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = paused_app(dir.path()).await;
    let body = r#"{"model": "dummy", "tasks": ["lmeval_aas_mc"], "limit": 3, "model_args": {"a": "x,y"}}"#;
    let (response, bytes) = send(&app, post_json("/api/v1/evaluations?dry_run=true", body)).await;
    assert_eq!(response.status(), StatusCode::OK);
    let evaluation = json(&bytes);
    let command: Vec<&str> =
        evaluation["command"].as_array().expect("command").iter().filter_map(Value::as_str).collect();
    assert_eq!(&command[..4], ["lm_eval", "run", "--model", "dummy"]);
    assert!(command.windows(2).any(|w| w == ["--model_args", r#"{"a":"x,y"}"#]));
    assert!(command.windows(2).any(|w| w == ["--tasks", "lmeval_aas_mc"]));
    let (_, bytes) = send(&app, get("/api/v1/evaluations")).await;
    assert_eq!(json(&bytes)["items"], json!([]));
    let (response, _) =
        send(&app, get(&format!("/api/v1/evaluations/{}", evaluation["id"].as_str().expect("id")))).await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn submit_returns_a_ticket_with_location_and_request_id() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = paused_app(dir.path()).await;
    let request = Request::post("/api/v1/evaluations")
        .header("content-type", "application/json")
        .header("x-request-id", "test-request-1")
        .body(Body::from(r#"{"model": "dummy", "tasks": ["lmeval_aas_mc"], "labels": {"team": "eval"}}"#))
        .expect("request");
    let (response, bytes) = send(&app, request).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    assert_eq!(response.headers()["x-request-id"], "test-request-1");
    let evaluation = json(&bytes);
    let id = evaluation["id"].as_str().expect("id");
    assert_eq!(uuid::Uuid::parse_str(id).expect("uuid").get_version_num(), 4);
    assert_eq!(response.headers()["location"], format!("/api/v1/evaluations/{id}"));
    assert_eq!(evaluation["state"], "pending");
    assert_eq!(evaluation["labels"], json!({"team": "eval"}));
    assert_eq!(evaluation["links"]["logs"], format!("/api/v1/evaluations/{id}/logs"));
    assert!(evaluation["created_at"].as_str().is_some_and(|t| t.ends_with('Z')));
    let (response, _) = send(&app, get("/healthz")).await;
    assert!(response.headers().get("x-request-id").is_some(), "a generated request id on every response");

    let (response, bytes) = send(&app, get(&format!("/api/v1/evaluations/{id}/results"))).await;
    assert_eq!(response.status(), StatusCode::CONFLICT);
    assert!(json(&bytes)["detail"].as_str().is_some_and(|d| d.contains("pending")));
    let cancel = || Request::post(format!("/api/v1/evaluations/{id}/cancel")).body(Body::empty()).expect("request");
    let (response, bytes) = send(&app, cancel()).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    assert_eq!(json(&bytes)["state"], "cancelled");
    let (response, _) = send(&app, cancel()).await;
    assert_eq!(response.status(), StatusCode::CONFLICT);
    let delete = || Request::delete(format!("/api/v1/evaluations/{id}")).body(Body::empty()).expect("request");
    let (response, _) = send(&app, delete()).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let (response, _) = send(&app, delete()).await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert!(!dir.path().join("evaluations").join(id).exists());
}

#[tokio::test]
async fn idempotency_key_replays_the_original_and_refuses_another_body() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = paused_app(dir.path()).await;
    let submit = |body: &str| {
        Request::post("/api/v1/evaluations")
            .header("content-type", "application/json")
            .header("idempotency-key", "ci-run-42")
            .body(Body::from(body.to_string()))
            .expect("request")
    };
    let (first, first_body) = send(&app, submit(r#"{"model": "dummy", "tasks": ["lmeval_aas_mc"]}"#)).await;
    assert_eq!(first.status(), StatusCode::ACCEPTED);
    let (again, again_body) = send(&app, submit(r#"{ "tasks": ["lmeval_aas_mc"], "model": "dummy" }"#)).await;
    assert_eq!(again.status(), StatusCode::ACCEPTED);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(json(&first_body)["id"], json(&again_body)["id"]);
    let (other, bytes) = send(&app, submit(r#"{"model": "dummy", "tasks": ["lmeval_aas_gen"]}"#)).await;
    assert_eq!(other.status(), StatusCode::CONFLICT);
    assert!(json(&bytes)["detail"].as_str().is_some_and(|d| d.contains("Idempotency-Key")));
    let (_, bytes) = send(&app, get("/api/v1/evaluations")).await;
    assert_eq!(json(&bytes)["items"].as_array().map(Vec::len), Some(1));
}

#[tokio::test]
async fn list_pages_newest_first_and_filters() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = paused_app(dir.path()).await;
    let mut created = Vec::new();
    for i in 0..7 {
        let team = if i % 2 == 0 { "even" } else { "odd" };
        let body =
            format!(r#"{{"model": "dummy", "tasks": ["lmeval_aas_mc"], "labels": {{"team": "{team}", "n": "{i}"}}}}"#);
        let (_, bytes) = send(&app, post_json("/api/v1/evaluations", &body)).await;
        created.push(json(&bytes)["id"].as_str().expect("id").to_string());
    }
    let mut seen = Vec::new();
    let mut uri = "/api/v1/evaluations?page_size=3".to_string();
    let mut pages = 0;
    loop {
        let (_, bytes) = send(&app, get(&uri)).await;
        let page = json(&bytes);
        pages += 1;
        seen.extend(page["items"].as_array().expect("items").iter().map(|e| e["id"].as_str().expect("id").to_string()));
        match page["next_page_token"].as_str() {
            Some(token) => uri = format!("/api/v1/evaluations?page_size=3&page_token={token}"),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    created.reverse();
    assert_eq!(seen, created, "every evaluation once, newest first");

    let (_, bytes) = send(&app, get("/api/v1/evaluations?label=team=odd")).await;
    assert_eq!(json(&bytes)["items"].as_array().map(Vec::len), Some(3));
    let (_, bytes) = send(&app, get("/api/v1/evaluations?label=team=even&label=n=4")).await;
    let items = json(&bytes)["items"].clone();
    assert_eq!(items.as_array().map(Vec::len), Some(1));
    assert_eq!(items[0]["labels"]["n"], "4");
    let (_, bytes) = send(&app, get("/api/v1/evaluations?state=pending&page_size=500")).await;
    assert_eq!(json(&bytes)["items"].as_array().map(Vec::len), Some(7));
    let (_, bytes) = send(&app, get("/api/v1/evaluations?state=running")).await;
    assert_eq!(json(&bytes)["items"], json!([]));
}

#[tokio::test]
async fn health_readiness_and_metrics() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = paused_app(dir.path()).await;
    let (response, bytes) = send(&app, get("/healthz")).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(json(&bytes)["status"], "ok");
    let (response, _) = send(&app, get("/readyz")).await;
    assert_eq!(response.status(), StatusCode::OK);
    send(&app, post_json("/api/v1/evaluations", r#"{"model": "dummy", "tasks": ["lmeval_aas_mc"]}"#)).await;
    send(&app, get("/api/v1/evaluations/not-a-uuid")).await;
    let (response, bytes) = send(&app, get("/metrics")).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers()["content-type"].to_str().expect("ct").starts_with("text/plain"));
    let text = String::from_utf8(bytes).expect("utf8");
    assert!(text.contains("# TYPE lmeval_http_requests_total counter"), "{text}");
    assert!(
        text.contains(r#"lmeval_http_requests_total{method="POST",route="/api/v1/evaluations",status="202"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"lmeval_http_requests_total{method="GET",route="/api/v1/evaluations/{id}",status="404"} 1"#),
        "{text}"
    );
    assert!(text.contains("lmeval_evaluations_created_total 1"), "{text}");
    assert!(text.contains(r#"lmeval_evaluations{state="pending"} 1"#), "{text}");

    std::fs::remove_dir_all(dir.path().join("evaluations")).expect("break the data dir");
    let (response, _) = send(&app, get("/readyz")).await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers()["content-type"], PROBLEM);
}

#[tokio::test]
async fn openapi_is_served_and_documents_every_route() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = paused_app(dir.path()).await;
    let (response, bytes) = send(&app, get("/openapi.json")).await;
    assert_eq!(response.status(), StatusCode::OK);
    let served = json(&bytes);
    let committed: Value =
        serde_json::from_str(include_str!("../openapi/openapi.json")).expect("openapi/openapi.json is JSON");
    assert_eq!(served, committed, "GET /openapi.json serves the committed document");
    for (path, methods) in [
        ("/api/v1/evaluations", &["get", "post"][..]),
        ("/api/v1/evaluations/{id}", &["get", "delete"]),
        ("/api/v1/evaluations/{id}/logs", &["get"]),
        ("/api/v1/evaluations/{id}/results", &["get"]),
        ("/api/v1/evaluations/{id}/cancel", &["post"]),
        ("/healthz", &["get"]),
        ("/readyz", &["get"]),
        ("/metrics", &["get"]),
        ("/submit_job", &["post"]),
        ("/poll_job", &["get"]),
        ("/job_results", &["get"]),
        ("/list_jobs", &["get"]),
        ("/cancel_job", &["delete"]),
    ] {
        for method in methods {
            let operation = &served["paths"][path][method];
            assert!(operation.is_object(), "{method} {path} is documented");
            assert!(operation["responses"].as_object().is_some_and(|r| !r.is_empty()), "{method} {path} has responses");
        }
    }
    let legacy_tags = &served["paths"]["/submit_job"]["post"]["tags"];
    assert_eq!(legacy_tags, &json!(["legacy"]));
    for schema in ["Evaluation", "EvaluationRequest", "EvaluationList", "Problem", "MetricRow", "Progress"] {
        assert!(served["components"]["schemas"][schema].is_object(), "schema {schema}");
    }
    let (response, bytes) = send(&app, get("/docs/")).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(String::from_utf8_lossy(&bytes).contains("swagger-ui"));
}

#[test]
fn committed_openapi_matches_the_code() {
    let generated = serde_json::to_string_pretty(&lm_eval_aas::api::openapi()).expect("json") + "\n";
    let committed =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi/openapi.json")).unwrap_or_default();
    assert!(
        generated == committed,
        "openapi/openapi.json is stale: run `cargo run -- openapi --output openapi/openapi.json` and commit it"
    );
}

/// Generators and schemathesis give up on a `$ref` to a schema the document does not define.
#[test]
fn every_schema_reference_in_the_openapi_document_resolves() {
    let document = lm_eval_aas::api::openapi();
    let defined = document["components"]["schemas"].as_object().expect("schemas");
    let text = document.to_string();
    let referenced: std::collections::BTreeSet<&str> = text
        .match_indices("\"#/components/schemas/")
        .map(|(at, prefix)| {
            let rest = &text[at + prefix.len()..];
            &rest[..rest.find('"').expect("closing quote")]
        })
        .collect();
    assert!(referenced.contains("Problem"), "references were read: {referenced:?}");
    let missing: Vec<&&str> = referenced.iter().filter(|name| !defined.contains_key(**name)).collect();
    assert!(missing.is_empty(), "referenced but not defined: {missing:?}");
}

/// Links name operations that exist, with OpenAPI's spelling (utoipa writes Rust's); and the list's page token
/// pattern is the one the backend decodes.
#[test]
fn links_name_existing_operations_and_patterns_are_the_servers() {
    let document = lm_eval_aas::api::openapi();
    let paths = document["paths"].as_object().expect("paths");
    let operations: std::collections::BTreeSet<&str> = paths
        .values()
        .filter_map(|item| item.as_object())
        .flat_map(|item| item.values())
        .filter_map(|operation| operation["operationId"].as_str())
        .collect();
    let created = &paths["/api/v1/evaluations"]["post"]["responses"]["202"]["links"];
    let links: Vec<&Value> = paths
        .values()
        .filter_map(|item| item.as_object())
        .flat_map(|item| item.values())
        .filter_map(|operation| operation["responses"].as_object())
        .flat_map(|responses| responses.values())
        .filter_map(|response| response["links"].as_object())
        .flat_map(|links| links.values())
        .collect();
    assert!(links.len() >= 25 && created["delete_evaluation"]["parameters"]["id"] == "$response.body#/id", "{created}");
    for link in links {
        let target = link["operationId"].as_str().unwrap_or_else(|| panic!("a link without operationId: {link}"));
        assert!(operations.contains(target), "a link to {target}, which no operation is");
    }
    let list = &paths["/api/v1/evaluations"]["get"]["parameters"];
    let token = list.as_array().and_then(|p| p.iter().find(|p| p["name"] == "page_token")).expect("page_token");
    assert_eq!(token["schema"]["pattern"], lm_eval_aas::backend::PAGE_TOKEN_PATTERN);
}

#[tokio::test]
async fn no_body_makes_it_answer_5xx() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = paused_app(dir.path()).await;
    let fields = [
        "model",
        "model_args",
        "tasks",
        "num_fewshot",
        "limit",
        "batch_size",
        "max_batch_size",
        "gen_kwargs",
        "log_samples",
        "apply_chat_template",
        "fewshot_as_multiturn",
        "system_instruction",
        "seed",
        "predict_only",
        "metadata",
        "inline_tasks",
        "include_path",
        "env",
        "volumes",
        "resources",
        "timeout_seconds",
        "labels",
        "allow_online",
        "allow_code_execution",
    ];
    let weird = [
        json!(null),
        json!(-1),
        json!(0),
        json!(1e308),
        json!(-1e-308),
        json!(18_446_744_073_709_551_615_u64),
        json!(""),
        json!("x".repeat(5000)),
        json!("../../etc/passwd"),
        json!("a\u{0}b"),
        json!([]),
        json!([null, {}, [1]]),
        json!({"": ""}),
        json!({"a\u{0}": {"b": [1, 2]}}),
        json!(true),
        json!("$(reboot)"),
        json!({"k": "v,w=x"}),
        json!([{"name": "A", "value": "1"}, {"name": "A", "value": "2"}]),
        json!([{"pvc": "x", "mount_path": "/"}]),
        json!({"cpu": "-1", "memory": "1Qi", "gpu": -1}),
        json!({"../x.yaml": "task: x", "a.yaml": ""}),
    ];
    let mut answered = 0;
    for field in fields {
        for value in &weird {
            let mut body = json!({"model": "dummy", "tasks": ["lmeval_aas_mc"]});
            body[field] = value.clone();
            let (response, bytes) = send(&app, post_json("/api/v1/evaluations?dry_run=true", &body.to_string())).await;
            let status = response.status();
            assert!(status.as_u16() < 500, "{field} = {value}: {status} {}", String::from_utf8_lossy(&bytes));
            if status.is_client_error() {
                assert_eq!(response.headers()["content-type"], PROBLEM, "{field} = {value}");
            }
            answered += 1;
        }
    }
    assert_eq!(answered, fields.len() * weird.len());
}

/// The status read is answered before the router when the evaluation exists; with a query string it takes
/// the router. Both give the same bytes and headers and are counted as one series.
#[tokio::test]
async fn the_status_read_answers_the_same_with_or_without_the_router() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = paused_app(dir.path()).await;
    let (response, bytes) =
        send(&app, post_json("/api/v1/evaluations", r#"{"model": "dummy", "tasks": ["lmeval_aas_mc"]}"#)).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let id = json(&bytes)["id"].as_str().expect("id").to_string();
    let (direct, direct_body) = send(&app, get(&format!("/api/v1/evaluations/{id}"))).await;
    let (routed, routed_body) = send(&app, get(&format!("/api/v1/evaluations/{id}?via=router"))).await;
    assert_eq!((direct.status(), routed.status()), (StatusCode::OK, StatusCode::OK));
    assert_eq!(direct_body, routed_body);
    for response in [&direct, &routed] {
        assert_eq!(response.headers()["content-type"], "application/json");
        assert!(response.headers().contains_key("x-request-id"));
    }
    let given = Request::get(format!("/api/v1/evaluations/{id}")).header("x-request-id", "mine").body(Body::empty());
    let (echoed, _) = send(&app, given.expect("request")).await;
    assert_eq!(echoed.headers()["x-request-id"], "mine", "a client's request id comes back");
    let (_, metrics) = send(&app, get("/metrics")).await;
    let text = String::from_utf8(metrics).expect("utf8");
    assert!(
        text.contains(r#"lmeval_http_requests_total{method="GET",route="/api/v1/evaluations/{id}",status="200"} 3"#),
        "{text}"
    );
}

/// The local backend serves its one namespace (`--namespace`, default `default`) on the namespaced routes too:
/// the same evaluations as the un-namespaced routes; any other namespace is a 404 problem saying so.
#[tokio::test]
async fn the_local_backend_serves_its_one_namespace_on_the_namespaced_routes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = paused_app(dir.path()).await;
    let body = r#"{"model": "dummy", "tasks": ["lmeval_aas_mc"], "limit": 1}"#;
    let (response, bytes) = send(&app, post_json("/api/v1/namespaces/default/evaluations", body)).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED, "{}", String::from_utf8_lossy(&bytes));
    let created = json(&bytes);
    let id = created["id"].as_str().expect("id").to_string();
    assert_eq!(created["namespace"], "default");
    // The default namespace's links are the un-namespaced routes, which answer for it as well.
    assert_eq!(created["links"]["self"], format!("/api/v1/evaluations/{id}"));
    for uri in [format!("/api/v1/namespaces/default/evaluations/{id}"), format!("/api/v1/evaluations/{id}")] {
        let (response, bytes) = send(&app, get(&uri)).await;
        assert_eq!(response.status(), StatusCode::OK, "{uri}");
        assert_eq!(json(&bytes)["id"], id.as_str(), "{uri}");
    }
    for uri in ["/api/v1/namespaces/default/evaluations", "/api/v1/evaluations"] {
        let (_, bytes) = send(&app, get(uri)).await;
        let listed: Vec<Value> = json(&bytes)["items"].as_array().expect("items").clone();
        assert!(listed.iter().any(|e| e["id"] == id.as_str()), "{uri} lists it");
    }

    let other = [
        ("GET", "/api/v1/namespaces/team-b/evaluations".to_string()),
        ("GET", format!("/api/v1/namespaces/team-b/evaluations/{id}")),
        ("GET", format!("/api/v1/namespaces/team-b/evaluations/{id}/logs")),
        ("GET", format!("/api/v1/namespaces/team-b/evaluations/{id}/results")),
        ("POST", format!("/api/v1/namespaces/team-b/evaluations/{id}/cancel")),
        ("DELETE", format!("/api/v1/namespaces/team-b/evaluations/{id}")),
        ("POST", "/api/v1/namespaces/team-b/evaluations".to_string()),
    ];
    for (method, uri) in other {
        let request = Request::builder()
            .method(method)
            .uri(&uri)
            .header("content-type", "application/json")
            .body(Body::from(if method == "POST" { body } else { "" }))
            .expect("request");
        let (response, bytes) = send(&app, request).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{method} {uri}");
        assert_eq!(response.headers()["content-type"], PROBLEM, "{method} {uri}");
        let problem = json(&bytes);
        assert_eq!(problem["type"], "urn:lm-eval-aas:problem:namespace-not-served", "{method} {uri}: {problem}");
        assert!(problem["detail"].as_str().is_some_and(|d| d.contains("team-b")), "{method} {uri}: {problem}");
    }
    // Nothing was created in or moved to the namespace it does not serve.
    let (_, bytes) = send(&app, get("/api/v1/evaluations")).await;
    assert_eq!(json(&bytes)["items"].as_array().map(Vec::len), Some(1));
}
