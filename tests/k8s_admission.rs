//! The cluster enforces what REST checks: on the real test cluster, with the admission policies of
//! `k8s/base/admission-evaluations.yaml` and no admission webhook registered (as when the service is down), users
//! bound to the shipped roles try with `kubectl` what REST refuses them — a Secret or claim they may not read, a
//! claim they may not write mounted writable, the service's own Secrets, the output store's claim, somebody
//! else's name as creator, another spec on an existing Evaluation, and the object a victim's Idempotency-Key maps
//! to made in advance. Each is refused (naming the field) or never runs, by either door.

mod common;

use std::process::{Command, Output};

use common::cluster::TestNamespace;
use common::{client, wait_terminal};
use lm_eval_aas::lifecycle::admission::IdempotencyKey;
use lm_eval_aas::model::EvaluationRequest;
use lm_eval_aas::validate::{Policy, ValidRequest};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// A user of the test cluster: a ServiceAccount of `lm-eval-aas-users` with a bearer token.
struct User {
    name: String,
    token: String,
}

impl User {
    fn new(ns: &TestNamespace, name: &str, role: &str) -> Self {
        let name = format!("{name}-{}", &ns.name[ns.name.len() - 6..]);
        let token = ns.k8s_dev(&["user", &name, &ns.name, role]);
        Self { name: format!("system:serviceaccount:lm-eval-aas-users:{name}"), token }
    }

    /// `kubectl -n NS ARGS…` as this user (its token only, none of the admin's credentials).
    fn kubectl(&self, ns: &TestNamespace, args: &[&str], input: Option<&str>) -> Output {
        let mut command = Command::new(&ns.env["KUBECTL"]);
        command
            .env_remove("KUBECONFIG")
            .args(["--kubeconfig", "/dev/null", "--server", &ns.env["LMEVAL_CLUSTER_APISERVER"]])
            .args(["--certificate-authority", &ns.env["LMEVAL_CLUSTER_CA"], "--token", &self.token, "-n", &ns.name])
            .args(args);
        match input {
            None => command.output().expect("kubectl"),
            Some(input) => {
                use std::io::Write;
                let mut child = command
                    .stdin(std::process::Stdio::piped())
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .expect("kubectl");
                child.stdin.take().expect("stdin").write_all(input.as_bytes()).expect("write");
                child.wait_with_output().expect("kubectl")
            }
        }
    }

    fn apply(&self, ns: &TestNamespace, object: &Value) -> Output {
        self.kubectl(ns, &["create", "-f", "-"], Some(&object.to_string()))
    }
}

fn evaluation(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "lm-eval-aas.io/v1alpha1", "kind": "Evaluation", "metadata": {"name": name}, "spec": spec})
}

fn mc(extra: Value) -> Value {
    let mut spec = json!({"model": "dummy", "tasks": ["lmeval_aas_mc"], "limit": 1});
    spec.as_object_mut().expect("object").extend(extra.as_object().expect("object").clone());
    spec
}

fn refused(output: &Output, says: &[&str]) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "admitted, expected a refusal saying {says:?}");
    for word in says {
        assert!(stderr.contains(word), "the refusal should say {word:?}: {stderr}");
    }
}

async fn post(service: &common::Service, user: &User, path: &str, body: &Value, key: Option<&str>) -> (u16, Value) {
    let mut request = client().post(service.url(path)).bearer_auth(&user.token).json(body);
    if let Some(key) = key {
        request = request.header("Idempotency-Key", key);
    }
    let response = request.send().await.expect("POST");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread")]
async fn every_door_refuses_what_rest_refuses() {
    let Some(ns) = TestNamespace::create("admission") else { return };
    let service = ns.service(&["--auth", "kubernetes"]);
    let alice = User::new(&ns, "alice", "editor");
    // The rights the checks turn on: a Secret and a claim alice may not read, a claim she may read but not write.
    for object in [
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "team-key"}, "stringData": {"key": "s3cr3t"}}),
        json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "shared"},
               "spec": {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "1Mi"}}}}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "claim-reader"},
               "rules": [{"apiGroups": [""], "resources": ["persistentvolumeclaims"], "verbs": ["get"], "resourceNames": ["shared"]}]}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "alice-claim-reader"},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "claim-reader"},
               "subjects": [{"kind": "ServiceAccount", "name": alice.name.rsplit(':').next(), "namespace": "lm-eval-aas-users"}]}),
    ] {
        let made = ns.kubectl_apply(&object.to_string());
        assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    }
    let can_i = |verb: &str, what: &str| {
        let output = alice.kubectl(&ns, &["auth", "can-i", verb, what], None);
        String::from_utf8_lossy(&output.stdout).trim() == "yes"
    };
    assert!(!can_i("get", "secret/team-key") && can_i("get", "persistentvolumeclaim/shared"));
    assert!(!can_i("update", "persistentvolumeclaim/shared") && can_i("create", "evaluations.lm-eval-aas.io"));

    let secret_env = json!({"env": [{"name": "TEAM_KEY", "secret": {"name": "team-key", "key": "key"}}]});
    let writable = json!({"volumes": [{"pvc": "shared", "mount_path": "/data", "read_only": false}]});
    let readable = json!({"volumes": [{"pvc": "shared", "mount_path": "/data"}]});
    let own_secret =
        json!({"env": [{"name": "K", "secret": {"name": "lm-eval-aas-output-store", "key": "AWS_SECRET_ACCESS_KEY"}}]});
    let collection = format!("/api/v1/namespaces/{}/evaluations", ns.name);

    // A Secret alice may not read: refused at admission by kubectl, 403 naming the field by REST.
    refused(&alice.apply(&ns, &evaluation("steal", mc(secret_env.clone()))), &["spec.env[].secret", "team-key", "get"]);
    let (status, problem) = post(&service, &alice, &collection, &mc(secret_env), None).await;
    assert_eq!((status, problem["field"].as_str()), (403, Some("env[0].secret")), "{problem}");

    // A claim she may read mounted writable: refused (update is what writing takes).
    refused(&alice.apply(&ns, &evaluation("scribble", mc(writable.clone()))), &["spec.volumes[].pvc", "update"]);
    let (status, problem) = post(&service, &alice, &collection, &mc(writable), None).await;
    assert_eq!((status, problem["field"].as_str()), (403, Some("volumes[0].pvc")), "{problem}");
    let read_only = alice.apply(&ns, &evaluation("reads", mc(readable.clone())));
    assert!(read_only.status.success(), "read-only is what get allows: {}", String::from_utf8_lossy(&read_only.stderr));

    // The service's own Secrets: never, whoever asks (the cluster's admin included).
    refused(&alice.apply(&ns, &evaluation("creds", mc(own_secret.clone()))), &["lm-eval-aas-output-store", "service"]);
    refused(
        &ns.kubectl_with_input(&["create", "-f", "-"], &evaluation("admin-creds", mc(own_secret.clone())).to_string()),
        &["service"],
    );
    let (status, problem) = post(&service, &alice, &collection, &mc(own_secret), None).await;
    assert_eq!((status, problem["field"].as_str()), (403, Some("env[0].secret")), "{problem}");

    // The spec never changes once made, whoever writes it.
    let changed = ns.kubectl(&["patch", "evaluation", "reads", "--type", "merge", "-p", r#"{"spec":{"limit":2}}"#]);
    refused(&changed, &["spec is immutable"]);

    // A forged creator is overwritten with the requesting user; it never changes afterwards.
    let mut forged = evaluation("forged", mc(json!({})));
    forged["metadata"]["annotations"] = json!({"lm-eval-aas.io/creator": "somebody-else"});
    let made = alice.apply(&ns, &forged);
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let object = ns.kubectl_json(&["get", "evaluation", "forged"]);
    assert_eq!(object["metadata"]["annotations"]["lm-eval-aas.io/creator"], alice.name.as_str());
    let relabel = alice.kubectl(
        &ns,
        &["annotate", "evaluation", "forged", "--overwrite", "lm-eval-aas.io/creator=somebody-else"],
        None,
    );
    refused(&relabel, &["never changes"]);
    let id = object["metadata"]["uid"].as_str().expect("uid").to_string();
    let ended = common::wait_for_async(std::time::Duration::from_secs(300), || async {
        let path = format!("{collection}/{id}");
        let response = client().get(service.url(&path)).bearer_auth(&alice.token).send().await.ok()?;
        let body: Value = response.json().await.ok()?;
        ["succeeded", "failed", "cancelled"].contains(&body["state"].as_str()?).then_some(body)
    })
    .await
    .unwrap_or_else(|| panic!("the kubectl-made evaluation did not end; service log:\n{}", service.log_text()));
    assert_eq!(ended["created_by"], alice.name.as_str(), "created_by is who made it");
    assert_eq!(ended["state"], "succeeded", "made by kubectl, it runs: {ended}");
}

/// The id an Idempotency-Key maps to is predictable (namespace, creator, key): a co-tenant who makes that object
/// first, with the victim's very request and its digest, never has it handed to the victim as theirs.
#[tokio::test(flavor = "multi_thread")]
async fn an_idempotency_key_never_replays_what_someone_else_made() {
    let Some(ns) = TestNamespace::create("squat") else { return };
    let service = ns.service(&["--auth", "kubernetes"]);
    let (victim, mallory) = (User::new(&ns, "victim", "editor"), User::new(&ns, "mallory", "editor"));
    let request = mc(json!({}));
    let normalised = ValidRequest::parse(
        serde_json::from_value::<EvaluationRequest>(request.clone()).expect("request"),
        &Policy::default(),
    )
    .expect("valid")
    .to_request();
    let digest = format!("{:x}", Sha256::digest(serde_json::to_vec(&normalised).expect("json")));
    let key = IdempotencyKey { key: "ci-run-7".into(), body_digest: digest.clone() };
    let id = key.evaluation_id(&format!("{}\0{}", ns.name, victim.name));
    let name = format!("lmeval-{}", id.simple());

    let mut squat = evaluation(&name, serde_json::to_value(&normalised).expect("spec"));
    squat["metadata"]["labels"] = json!({"lm-eval-aas.io/evaluation-id": id.to_string()});
    squat["metadata"]["annotations"] =
        json!({"lm-eval-aas.io/request-digest": digest, "lm-eval-aas.io/creator": victim.name.as_str()});
    let made = mallory.apply(&ns, &squat);
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let object = ns.kubectl_json(&["get", "evaluation", &name]);
    assert_eq!(object["metadata"]["annotations"]["lm-eval-aas.io/creator"], mallory.name.as_str());

    let collection = format!("/api/v1/namespaces/{}/evaluations", ns.name);
    let (status, answer) = post(&service, &victim, &collection, &request, Some("ci-run-7")).await;
    assert_eq!(status, 409, "never the squatter's evaluation: {answer}");
    assert!(answer["detail"].as_str().is_some_and(|d| d.contains("someone else")), "{answer}");
    // The victim's own retry of its own evaluation still replays.
    let (status, first) = post(&service, &victim, &collection, &request, Some("ci-run-8")).await;
    assert_eq!(status, 202, "{first}");
    let (status, again) = post(&service, &victim, &collection, &request, Some("ci-run-8")).await;
    assert_eq!((status, &again["id"]), (202, &first["id"]), "{again}");
    assert_eq!(again["created_by"], victim.name.as_str());
}

/// The output store's claim holds every namespace's outputs: REST refuses it, and an Evaluation that names it past
/// REST (no webhook registered) never runs.
#[tokio::test(flavor = "multi_thread")]
async fn the_output_stores_claim_is_never_mounted() {
    let Some(ns) = TestNamespace::create("store-claim") else { return };
    let mount = ns.scratch.path().to_string_lossy().into_owned();
    let service = ns.service(&["--output-store", "pvc:outputs", "--output-store-mount", &mount]);
    let spec = mc(json!({"volumes": [{"pvc": "outputs", "mount_path": "/all", "read_only": false}]}));
    let response = client().post(service.url("/api/v1/evaluations")).json(&spec).send().await.expect("POST");
    assert_eq!(response.status(), 403);
    let problem: Value = response.json().await.expect("problem");
    assert_eq!(problem["field"], "volumes[0].pvc", "{problem}");

    let made = ns.kubectl_with_input(&["create", "-f", "-"], &evaluation("grab", spec).to_string());
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let uid = ns.kubectl_json(&["get", "evaluation", "grab"])["metadata"]["uid"].as_str().expect("uid").to_string();
    let ended = wait_terminal(&service, &uid).await;
    assert_eq!(
        (ended["state"].as_str(), ended["reason"].as_str()),
        (Some("failed"), Some("InvalidRequest")),
        "{ended}"
    );
    assert!(ended["message"].as_str().is_some_and(|m| m.contains("output store")), "{ended}");
    let jobs = ns.kubectl_json(&["get", "jobs"]);
    assert_eq!(jobs["items"], json!([]), "no Job ran with the store's claim");
}
