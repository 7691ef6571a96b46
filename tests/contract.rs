//! The OpenAPI document proven against the running service by schemathesis (PyPI): every operation, its
//! examples, coverage and fuzzing phases and the stateful phase that follows the document's links (a created
//! evaluation's id to get, logs, results, cancel and delete). Its checks and the few exclusions, each with its
//! reason, are in `tests/contract/*.toml`. And the Flask routes held to the replaced service's own contract.
//!
//! `LMEVAL_SCHEMATHESIS` names the `st` executable (`scripts/test` installs it); without it the tests say so
//! and pass, as the cluster tests do without a cluster.

mod common;

use common::contract::{TOKEN, run, schemathesis, service_with_token, summary};

#[test]
fn the_openapi_document_holds_for_thousands_of_generated_requests() {
    let Some(st) = schemathesis("the_openapi_document_holds_for_thousands_of_generated_requests") else { return };
    let data = tempfile::tempdir().expect("tempdir");
    let service = service_with_token(data.path());

    let run = run(&st, "schemathesis.toml", "openapi/openapi.json", &service.base, TOKEN, 40);
    assert!(run.success, "schemathesis found failures:\n{}", run.report);
    assert!(run.generated >= 2000, "only {} generated requests:\n{}", run.generated, run.report);
    assert!(run.report.contains("Stateful"), "the stateful phase ran:\n{}", run.report);
    eprintln!("{}", summary(&run.report));
    assert!(!service.logged("panicked"), "the service panicked:\n{}", service.log_text());
}

#[test]
fn the_flask_routes_keep_the_replaced_services_contract() {
    let Some(st) = schemathesis("the_flask_routes_keep_the_replaced_services_contract") else { return };
    let data = tempfile::tempdir().expect("tempdir");
    let service = service_with_token(data.path());

    let run = run(&st, "flask.toml", "tests/contract/flask-api.json", &service.base, TOKEN, 100);
    assert!(run.success, "the Flask routes broke their contract:\n{}", run.report);
    assert!(run.generated >= 200, "only {} generated requests:\n{}", run.generated, run.report);
    eprintln!("{}", summary(&run.report));
}
