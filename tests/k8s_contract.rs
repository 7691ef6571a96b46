//! The OpenAPI document proven by schemathesis against the kubernetes backend on the test cluster (a smaller
//! budget than the local backend's run in `tests/contract.rs`): the same checks and links, with Evaluation
//! objects and Jobs behind the routes.

mod common;

use common::cluster::TestNamespace;
use common::contract::{run, schemathesis, summary};

#[test]
fn the_openapi_document_holds_on_the_kubernetes_backend() {
    let Some(st) = schemathesis("the_openapi_document_holds_on_the_kubernetes_backend") else { return };
    let Some(ns) = TestNamespace::create("contract") else { return };
    // A user who may edit evaluations in the namespace, its token checked by TokenReview and every request by
    // SubjectAccessReview, as in production.
    let token = ns.k8s_dev(&["user", &format!("tester-{}", ns.name), &ns.name, "editor"]);
    // One evaluation runs at a time: the rest of what the fuzzer submits waits as pending Evaluations.
    let service = ns.service(&["--auth", "kubernetes", "--max-running-per-namespace", "1"]);

    let run = run(&st, "schemathesis.toml", "openapi/openapi.json", &service.base, &token, 8);
    assert!(run.success, "schemathesis found failures on the kubernetes backend:\n{}", run.report);
    assert!(run.generated >= 500, "only {} generated requests:\n{}", run.generated, run.report);
    eprintln!("{}", summary(&run.report));
    assert!(!service.logged("panicked"), "the service panicked:\n{}", service.log_text());
}
