//! Evaluation code is untrusted: a task template is code (lm-eval renders it with a plain Jinja environment), and
//! it runs holding the runner pod's token. On the real cluster, such code tries to use that token against the API
//! server: another evaluation's run record, the service's configuration ConfigMap and a new ConfigMap are all
//! refused; its own run record is the only thing it may change.

mod common;

use common::cluster::TestNamespace;
use common::{client, submit, wait_terminal};
use lm_eval_aas::lifecycle::admission::IdempotencyKey;
use serde_json::json;

fn record_of(id: &str) -> String {
    format!("lmeval-{}", id.replace('-', ""))
}

#[tokio::test(flavor = "multi_thread")]
async fn code_in_a_task_can_change_only_its_own_run_record() {
    let Some(ns) = TestNamespace::create("hostile") else { return };
    let service = ns.service(&[]);
    let config = ns.kubectl(&["create", "configmap", "lm-eval-aas-config", "--from-literal=state=untouched"]);
    assert!(config.status.success(), "{}", String::from_utf8_lossy(&config.stderr));

    let first = submit(&service, json!({"model": "dummy", "tasks": ["lmeval_aas_mc"], "limit": 1})).await;
    let first_id = first["id"].as_str().expect("id").to_string();
    assert_eq!(wait_terminal(&service, &first_id).await["state"], "succeeded");
    let other_record = record_of(&first_id);
    let before = ns.kubectl_json(&["get", "configmap", &other_record]);

    // The probe's own id, known in advance through its Idempotency-Key (namespace, caller, key).
    let key = IdempotencyKey { key: "probe".into(), body_digest: String::new() };
    let id = key.evaluation_id(&format!("{}\0127.0.0.1", ns.name)).to_string();
    let own_record = record_of(&id);
    // The probe: with the pod's token, PATCH three ConfigMaps and POST a new one; print each HTTP status.
    let api = format!("{}/api/v1/namespaces/{}/configmaps", ns.env["LMEVAL_CLUSTER_APISERVER"], ns.name);
    let script = format!(
        r#"T=$(cat /var/run/secrets/kubernetes.io/serviceaccount/token)
patch() {{ /usr/bin/curl -sk -o /dev/null -w '%{{http_code}}' -H "Authorization: Bearer $T" -H 'Content-Type: application/merge-patch+json' -X PATCH -d '{{"data":{{"probe":"pwned"}}}}' "{api}/$1"; }}
echo "probe other $(patch {other_record})" >&2
echo "probe config $(patch lm-eval-aas-config)" >&2
echo "probe own $(patch {own_record})" >&2
echo "probe create $(/usr/bin/curl -sk -o /dev/null -w '%{{http_code}}' -H "Authorization: Bearer $T" -H 'Content-Type: application/json' -X POST -d '{{"metadata":{{"name":"flood","labels":{{"lm-eval-aas.io/kind":"run-record"}}}}}}' "{api}")" >&2
"#
    );
    let probe = common::run_probe(&service, "probe", "lmeval_aas_probe", &script, &id).await;
    let status_of = |what: &str| probe.report(what);
    assert_eq!(status_of("other"), "403", "another evaluation's run record");
    assert_eq!(status_of("config"), "403", "the service's configuration");
    assert_eq!(status_of("create"), "403", "a new ConfigMap");
    assert_eq!(status_of("own"), "200", "its own run record is the one thing it may change");

    let after = ns.kubectl_json(&["get", "configmap", &other_record]);
    assert_eq!(after["data"], before["data"], "another evaluation's results are untouched");
    assert!(after["data"].get("probe").is_none());
    let config = ns.kubectl_json(&["get", "configmap", "lm-eval-aas-config"]);
    assert_eq!(config["data"], json!({"state": "untouched"}));
    assert!(!ns.kubectl(&["get", "configmap", "flood"]).status.success(), "no ConfigMap was made");

    // What the runner's identity may do, as the API server's authorizer says.
    let runner = format!("system:serviceaccount:{}:{}", ns.name, record_of(&id));
    let can = |verb: &str, what: &str| {
        let output = ns.kubectl(&["auth", "can-i", verb, what, "--as", &runner]);
        String::from_utf8_lossy(&output.stdout).trim() == "yes"
    };
    assert!(can("patch", &format!("configmaps/{own_record}")), "its own record");
    for (verb, what) in [
        ("patch", format!("configmaps/{other_record}")),
        ("get", format!("configmaps/{other_record}")),
        ("list", "configmaps".to_string()),
        ("create", "configmaps".to_string()),
        ("get", "secrets".to_string()),
        ("create", "pods".to_string()),
        // The third door to an Evaluation naming a Secret (REST and kubectl are k8s_admission's): none for a runner.
        ("create", "evaluations.lm-eval-aas.io".to_string()),
    ] {
        assert!(!can(verb, &what), "the runner may not {verb} {what}");
    }
}

/// An object of an evaluation's name made in advance by someone else is never taken over: the evaluation fails
/// naming it, and nothing of it is used.
#[tokio::test(flavor = "multi_thread")]
async fn a_name_taken_in_advance_is_a_conflict_never_adopted() {
    let Some(ns) = TestNamespace::create("taken") else { return };
    let service = ns.service(&[]);
    // An Idempotency-Key makes the id predictable (namespace, caller, key): whoever may make ConfigMaps here can
    // put their own tasks under the input ConfigMap's name before the evaluation is submitted.
    let key = IdempotencyKey { key: "taken-key".into(), body_digest: String::new() };
    let id = key.evaluation_id(&format!("{}\0127.0.0.1", ns.name));
    let input = format!("{}-input", record_of(&id.to_string()));
    let squatted = ns.kubectl(&["create", "configmap", &input, "--from-literal=probe.yaml=task: not-yours"]);
    assert!(squatted.status.success(), "{}", String::from_utf8_lossy(&squatted.stderr));

    let inline =
        format!("include: {}/tasks/lmeval_aas/lmeval_aas_mc.yaml\ntask: lmeval_aas_mine\n", env!("CARGO_MANIFEST_DIR"));
    let response = client()
        .post(service.url("/api/v1/evaluations"))
        .header("Idempotency-Key", "taken-key")
        .json(
            &json!({"model": "dummy", "tasks": ["lmeval_aas_mine"], "limit": 1, "inline_tasks": {"mine.yaml": inline}}),
        )
        .send()
        .await
        .expect("POST");
    assert_eq!(response.status(), 202);
    let created: serde_json::Value = response.json().await.expect("evaluation");
    assert_eq!(created["id"], id.to_string(), "the id the key predicts");
    let ended = wait_terminal(&service, &id.to_string()).await;
    assert_eq!((ended["state"].as_str(), ended["reason"].as_str()), (Some("failed"), Some("StartError")), "{ended}");
    assert!(
        ended["message"].as_str().is_some_and(|m| m.contains(&input) && m.contains("not this evaluation's")),
        "{ended}"
    );
    assert!(!ns.kubectl(&["get", "job", &record_of(&id.to_string())]).status.success(), "no Job ran with it");
    let kept = ns.kubectl_json(&["get", "configmap", &input]);
    assert_eq!(kept["data"], json!({"probe.yaml": "task: not-yours"}));
    assert!(kept["metadata"]["ownerReferences"].is_null(), "not adopted");
}
