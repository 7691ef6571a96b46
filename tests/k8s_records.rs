//! Issue 22, points 4 and 2, on the real test cluster. A runner's run record belongs to its evaluation by name and
//! owner: task code holding the runner pod's token cannot relabel its record as another evaluation's (the API
//! server refuses it, ValidatingAdmissionPolicy lm-eval-aas-run-records), and a label changed by someone who may
//! (the cluster admin) still makes no other evaluation's status. And the runner NetworkPolicies are kept in every
//! namespace the service serves.

mod common;

use std::time::Duration;

use common::cluster::TestNamespace;
use common::{evaluation, submit, wait_for, wait_for_async, wait_terminal};
use lm_eval_aas::lifecycle::admission::IdempotencyKey;
use serde_json::{Value, json};

const ID_LABEL: &str = "lm-eval-aas.io/evaluation-id";

fn record_of(id: &str) -> String {
    format!("lmeval-{}", id.replace('-', ""))
}

/// What a CI gate reads of an evaluation.
fn outcome(evaluation: &Value) -> Value {
    json!({"state": evaluation["state"], "reason": evaluation["reason"], "metrics": evaluation["metrics"]})
}

#[tokio::test(flavor = "multi_thread")]
async fn a_runner_cannot_file_its_record_under_another_evaluation() {
    let Some(ns) = TestNamespace::create("records") else { return };
    let service = ns.service(&[]);

    let victim = submit(&service, json!({"model": "dummy", "tasks": ["lmeval_aas_mc"], "limit": 1})).await;
    let victim_id = victim["id"].as_str().expect("id").to_string();
    let victim_before = outcome(&wait_terminal(&service, &victim_id).await);
    assert_eq!(victim_before["state"], "succeeded", "{victim_before}");

    // The attacker's own id, known in advance through its Idempotency-Key (namespace, caller, key).
    let key = IdempotencyKey { key: "relabel".into(), body_digest: String::new() };
    let id = key.evaluation_id(&format!("{}\0127.0.0.1", ns.name)).to_string();
    let own =
        format!("{}/api/v1/namespaces/{}/configmaps/{}", ns.env["LMEVAL_CLUSTER_APISERVER"], ns.name, record_of(&id));
    // With the pod's token: relabel its record with the victim's id, drop its owner, and (allowed) write its data.
    let script = format!(
        r#"T=$(cat /var/run/secrets/kubernetes.io/serviceaccount/token)
patch() {{ /usr/bin/curl -sk -o /dev/null -w '%{{http_code}}' -H "Authorization: Bearer $T" -H 'Content-Type: application/merge-patch+json' -X PATCH -d "$1" "{own}"; }}
echo "probe relabel $(patch '{{"metadata":{{"labels":{{"{ID_LABEL}":"{victim_id}"}}}}}}')" >&2
echo "probe disown $(patch '{{"metadata":{{"ownerReferences":null}}}}')" >&2
echo "probe data $(patch '{{"data":{{"probe":"mine"}}}}')" >&2
"#
    );
    let probe = common::run_probe(&service, "relabel", "lmeval_aas_relabel", &script, &id).await;
    let (ended, status_of) = (&probe.ended, |what: &str| probe.report(what));
    assert_eq!(status_of("relabel"), "403", "relabelling its record is refused at the API server");
    assert_eq!(status_of("disown"), "403", "so is changing its owner");
    assert_eq!(status_of("data"), "200", "its record's data is still its to write");
    assert_eq!(ended["state"], "succeeded", "the driver still records the run: {ended}");

    let record = ns.kubectl_json(&["get", "configmap", &record_of(&id)]);
    assert_eq!(record["metadata"]["labels"][ID_LABEL], id, "still labelled as its own");
    assert!(
        record["metadata"]["ownerReferences"].as_array().is_some_and(|o| o.iter().any(|o| o["kind"] == "Evaluation")),
        "{record}"
    );
    assert_eq!(outcome(&evaluation(&service, &victim_id).await), victim_before, "the victim is unchanged");

    // Whoever may relabel it (here the cluster admin) files nothing under the victim either: the service reads a
    // record by its name and owner. Give the attacker's record another outcome under the victim's label: once the
    // attacker's evaluation shows it (the record was read again), the victim's is still its own.
    let results = r#"{"results": {"lmeval_aas_mc": {"acc,none": 0.125}}}"#;
    let relabel = json!({"metadata": {"labels": {ID_LABEL: victim_id}}, "data": {"results.json": results}});
    let patched = ns.kubectl(&["patch", "configmap", &record_of(&id), "--type=merge", "-p", &relabel.to_string()]);
    assert!(patched.status.success(), "{}", String::from_utf8_lossy(&patched.stderr));
    let reread = wait_for_async(Duration::from_secs(30), || async {
        let attacker = evaluation(&service, &id).await;
        (attacker["metrics"][0]["value"] == json!(0.125)).then_some(attacker)
    })
    .await;
    assert!(
        reread.is_some(),
        "the attacker's evaluation reads its relabelled record: {}",
        evaluation(&service, &id).await
    );
    assert_eq!(outcome(&evaluation(&service, &victim_id).await), victim_before, "the victim is unchanged");
}

/// The operator's runner policies of the service's namespace, copied into every other served namespace; each
/// served namespace isolates runner pods; a copy deleted or changed in place comes back; a source's change
/// follows.
#[tokio::test(flavor = "multi_thread")]
async fn the_runner_network_policies_are_kept_in_every_served_namespace() {
    let Some(home) = TestNamespace::create("netpol") else { return };
    let Some(tenant) = TestNamespace::create("netpol-tenant") else { return };
    home.k8s_dev(&["serve-in", &tenant.name, &home.name]);
    let source = |cidr: &str| {
        format!(
            "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: lm-eval-aas-runner\n  labels: {{app.kubernetes.io/name: lm-eval-aas, app.kubernetes.io/component: runner}}\nspec:\n  podSelector: {{matchLabels: {{app.kubernetes.io/managed-by: lm-eval-aas}}}}\n  policyTypes: [Ingress, Egress]\n  egress:\n    - to: [{{ipBlock: {{cidr: {cidr}}}}}]\n      ports: [{{protocol: TCP, port: 6443}}]\n"
        )
    };
    let applied = home.kubectl_apply(&source("10.1.2.3/32"));
    assert!(applied.status.success(), "{}", String::from_utf8_lossy(&applied.stderr));
    let _service = home.service(&["--namespaces", &tenant.name]);

    let cidr_in = |ns: &TestNamespace| {
        let output = ns.kubectl(&["get", "networkpolicy", "lm-eval-aas-runner", "-o", "json"]);
        let policy: Value = serde_json::from_slice(&output.stdout).ok()?;
        policy["spec"]["egress"][0]["to"][0]["ipBlock"]["cidr"].as_str().map(str::to_string)
    };
    let copied =
        |cidr: &str| wait_for(Duration::from_secs(30), || (cidr_in(&tenant).as_deref() == Some(cidr)).then_some(()));
    assert!(copied("10.1.2.3/32").is_some(), "the source is copied into the other served namespace");
    for ns in [&home, &tenant] {
        let isolation = ns.kubectl_json(&["get", "networkpolicy", "lm-eval-aas-runner-isolation"]);
        assert_eq!(isolation["spec"]["policyTypes"], json!(["Ingress", "Egress"]), "{isolation}");
        assert_eq!(
            isolation["spec"]["podSelector"],
            json!({"matchLabels": {"app.kubernetes.io/managed-by": "lm-eval-aas"}})
        );
    }
    let copy = tenant.kubectl_json(&["get", "networkpolicy", "lm-eval-aas-runner"]);
    assert_eq!(copy["metadata"]["labels"]["app.kubernetes.io/managed-by"], "lm-eval-aas");
    assert_eq!(
        copy["metadata"]["annotations"]["lm-eval-aas.io/copied-from"],
        format!("{}/lm-eval-aas-runner", home.name)
    );

    let deleted = tenant.kubectl(&["delete", "networkpolicy", "lm-eval-aas-runner"]);
    assert!(deleted.status.success(), "{}", String::from_utf8_lossy(&deleted.stderr));
    assert!(copied("10.1.2.3/32").is_some(), "a deleted copy comes back");
    let isolation_deleted = tenant.kubectl(&["delete", "networkpolicy", "lm-eval-aas-runner-isolation"]);
    assert!(isolation_deleted.status.success());
    let back = wait_for(Duration::from_secs(30), || {
        tenant.kubectl(&["get", "networkpolicy", "lm-eval-aas-runner-isolation"]).status.success().then_some(())
    });
    assert!(back.is_some(), "so does the isolation policy");

    let widened = json!({"spec": {"egress": [{"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]}]}}).to_string();
    let edited = tenant.kubectl(&["patch", "networkpolicy", "lm-eval-aas-runner", "--type=merge", "-p", &widened]);
    assert!(edited.status.success(), "{}", String::from_utf8_lossy(&edited.stderr));
    assert!(copied("10.1.2.3/32").is_some(), "a copy changed in place is set back");

    let applied = home.kubectl_apply(&source("10.4.5.6/32"));
    assert!(applied.status.success(), "{}", String::from_utf8_lossy(&applied.stderr));
    assert!(copied("10.4.5.6/32").is_some(), "a change of the source follows");

    let removed = home.kubectl(&["delete", "networkpolicy", "lm-eval-aas-runner"]);
    assert!(removed.status.success());
    let gone = wait_for(Duration::from_secs(30), || {
        (!tenant.kubectl(&["get", "networkpolicy", "lm-eval-aas-runner"]).status.success()).then_some(())
    });
    assert!(gone.is_some(), "a copy whose source is gone goes too");
    assert!(
        tenant.kubectl(&["get", "networkpolicy", "lm-eval-aas-runner-isolation"]).status.success(),
        "runner pods stay isolated"
    );
}
