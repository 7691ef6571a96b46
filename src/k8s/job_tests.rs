//! The Job builder checked against a reviewed snapshot and by its rules.

use super::*;
use crate::lifecycle::admission::{Submission, admit};
use crate::validate::Policy;
use serde_json::{Value, json};

fn config() -> RunnerConfig {
    RunnerConfig {
        image: "registry.example/lm-eval-aas-runner:1".into(),
        image_pull_policy: "IfNotPresent".into(),
        node_selector: BTreeMap::from([("pool".into(), "eval".into())]),
        tolerations: vec![],
        backoff_limit: 0,
        driver: "lm-eval-aas".into(),
        lm_eval: "lm_eval".into(),
        task_dirs: vec![],
        termination_grace_seconds: 30,
        ca_bundle: Some(CaBundle { config_map: "model-ca".into(), key: "ca.pem".into() }),
        outputs: RunnerOutputs::RunRecord,
        upload_patience_seconds: 300,
    }
}

fn objects(request: Value) -> EvaluationObjects {
    objects_with(request, &config())
}

fn objects_with(request: Value, config: &RunnerConfig) -> EvaluationObjects {
    let policy =
        Policy { allow_online: true, allow_code_execution: true, allow_trust_remote_code: true, allowed_env: vec![] };
    let id = Uuid::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef);
    let request = serde_json::from_value(request).expect("request");
    let new = admit(
        Submission::anonymous(request),
        &policy,
        &site(config, "ns"),
        id,
        time::macros::datetime!(2026-11-28 12:00 UTC),
    )
    .expect("admitted");
    let provenance = Provenance { request_digest: Some("digest"), creator: Some("10.0.0.7") };
    build(&new.evaluation, new.config_yaml.as_deref(), config, provenance).expect("build")
}

/// The whole Job of a request that uses every feature, as YAML: review the diff when it changes.
#[test]
fn job_snapshot() {
    let built = objects(json!({
        "model": "local-completions",
        "model_args": {"base_url": "http://llm:8000/v1/completions", "model": "m"},
        "tasks": ["lmeval_aas_mc", "custom"],
        "limit": 5,
        "system_instruction": "costs $(HOME) and $5",
        "inline_tasks": {"custom.yaml": "task: custom"},
        "include_path": "/data/tasks",
        "env": [{"name": "OPENAI_API_KEY", "secret": {"name": "llm", "key": "token"}}, {"name": "MODE", "value": "x"}],
        "volumes": [{"pvc": "datasets", "mount_path": "/data"}, {"pvc": "scratch", "mount_path": "/scratch", "read_only": false, "sub_path": "a"}],
        "resources": {"cpu": "2", "memory": "4Gi", "gpu": 1},
        "timeout_seconds": 600,
        "labels": {"team": "nlp"}
    }));
    let mut job = serde_json::to_value(&built.job).expect("json");
    // The annotation repeats the request; it is checked on its own below.
    let annotation = job["metadata"]["annotations"][EVALUATION_ANNOTATION].take();
    let evaluation: Evaluation = serde_json::from_str(annotation.as_str().expect("string")).expect("evaluation");
    assert_eq!(evaluation.request.inline_tasks["custom.yaml"], "task: custom");
    assert_snapshot("job.yaml", &yaml_serde::to_string(&job).expect("yaml"));
    assert_snapshot("input.yaml", &yaml_serde::to_string(&built.input.expect("input")).expect("yaml"));
}

/// Compares with `src/k8s/testdata/<name>`; `UPDATE_SNAPSHOTS=1` rewrites it (review the diff).
fn assert_snapshot(name: &str, actual: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/k8s/testdata").join(name);
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(&path, actual).expect("write snapshot");
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_default();
    assert_eq!(actual, expected, "{} changed; if intended, rerun with UPDATE_SNAPSHOTS=1", path.display());
}

#[test]
fn offline_unless_allowed_and_no_input_without_inline_tasks() {
    let built = objects(json!({"model": "dummy", "tasks": ["lmeval_aas_mc"]}));
    assert!(built.input.is_none());
    let pod = built.job.spec.expect("spec").template.spec.expect("pod");
    let env = pod.containers[0].env.clone().unwrap_or_default();
    assert!(env.iter().any(|e| e.name == "HF_HUB_OFFLINE" && e.value.as_deref() == Some("1")));
    let volumes: Vec<String> = pod.volumes.expect("volumes").into_iter().map(|v| v.name).collect();
    assert_eq!(volumes, ["output", "cache", "ca-bundle"]);

    let built = objects(json!({"model": "dummy", "tasks": ["t"], "allow_online": true}));
    let env = built.job.spec.expect("spec").template.spec.expect("pod").containers[0].env.clone().unwrap_or_default();
    assert!(!env.iter().any(|e| e.name.ends_with("_OFFLINE")));
}

#[test]
fn each_runner_has_an_identity_that_may_touch_only_its_own_run_record() {
    let built = objects(json!({"model": "dummy", "tasks": ["lmeval_aas_mc"]}));
    let name = object_name(Uuid::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef));
    let pod = built.job.spec.expect("spec").template.spec.expect("pod");
    assert_eq!(pod.service_account_name.as_deref(), Some(name.as_str()));
    let identity = built.identity;
    assert_eq!(identity.service_account.metadata.name.as_deref(), Some(name.as_str()));
    let rules = identity.role.rules.expect("rules");
    assert_eq!(rules.len(), 1, "{rules:?}");
    assert_eq!(rules[0].resources.as_deref(), Some(&["configmaps".to_string()][..]));
    assert_eq!(rules[0].resource_names.as_deref(), Some(&[name.clone()][..]), "its own record only");
    assert_eq!(rules[0].verbs, ["get", "patch"], "no create, list, watch or delete");
    assert_eq!(identity.binding.role_ref.name, name);
    let subjects = identity.binding.subjects.expect("subjects");
    assert_eq!((subjects[0].kind.as_str(), subjects[0].name.as_str()), ("ServiceAccount", name.as_str()));
    assert_eq!(built.record.metadata.name.as_deref(), Some(name.as_str()));
    assert_eq!(built.record.metadata.labels.expect("labels")[KIND_LABEL], RUN_RECORD_KIND);
}

#[test]
fn the_ca_bundle_is_mounted_read_only_and_named_to_lm_evals_http_clients() {
    assert_eq!(CA_FILE, format!("{CA_DIR}/{CA_FILE_NAME}"));
    let request = json!({"model": "dummy", "tasks": ["t"], "env": [{"name": "MODE", "value": "x"}]});
    let pod = |config: &RunnerConfig| {
        objects_with(request.clone(), config).job.spec.expect("spec").template.spec.expect("pod")
    };

    let with = pod(&config());
    let container = &with.containers[0];
    let env = container.env.clone().unwrap_or_default();
    for name in CA_BUNDLE_ENV {
        assert!(env.iter().any(|e| e.name == name && e.value.as_deref() == Some(CA_FILE)), "{name}");
    }
    let volume = with.volumes.iter().flatten().find(|v| v.name == "ca-bundle").expect("ca-bundle volume");
    let source = volume.config_map.as_ref().expect("a ConfigMap volume");
    assert_eq!(source.name, "model-ca");
    let items = source.items.clone().unwrap_or_default();
    assert_eq!((items.len(), items[0].key.as_str(), items[0].path.as_str()), (1, "ca.pem", CA_FILE_NAME));
    let mount = container.volume_mounts.iter().flatten().find(|m| m.name == "ca-bundle").expect("mounted");
    assert_eq!((mount.mount_path.as_str(), mount.read_only), (CA_DIR, Some(true)));
    // The driver seals lm_eval's environment: the variables must be passed on by name.
    let command = container.command.clone().unwrap_or_default();
    let kept: Vec<&str> =
        command.windows(2).filter(|pair| pair[0] == "--keep-env").map(|pair| pair[1].as_str()).collect();
    assert_eq!(kept, ["MODE", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"]);
    assert_eq!(site(&config(), "ns").service_env, CA_BUNDLE_ENV);

    let without = pod(&RunnerConfig { ca_bundle: None, ..config() });
    let env = without.containers[0].env.clone().unwrap_or_default();
    assert!(!env.iter().any(|e| CA_BUNDLE_ENV.contains(&e.name.as_str())));
    assert!(!without.volumes.iter().flatten().any(|v| v.name == "ca-bundle"));
    assert!(!without.containers[0].command.iter().flatten().any(|arg| arg == "SSL_CERT_FILE"));
    assert!(site(&RunnerConfig { ca_bundle: None, ..config() }, "ns").service_env.is_empty());
}

#[test]
fn a_ca_bundle_is_a_config_map_and_a_key() {
    let parsed = |raw: &str| CaBundle::parse(raw).map(|b| (b.config_map, b.key));
    assert_eq!(parsed("model-ca"), Ok(("model-ca".into(), "ca-bundle.crt".into())));
    assert_eq!(parsed("trusted-ca/ca.crt"), Ok(("trusted-ca".into(), "ca.crt".into())));
    for bad in ["", "Model_CA", "ca/", "ca/a/b", "ca/..data", "ca/."] {
        assert!(CaBundle::parse(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn runs_write_outputs_only_to_their_own_part_of_the_store() {
    let request = json!({"model": "dummy", "tasks": ["t"], "log_samples": true});
    let container = |objects: &EvaluationObjects| {
        objects.job.spec.as_ref().and_then(|s| s.template.spec.as_ref()).expect("pod").containers[0].clone()
    };
    let env = |container: &Container, name: &str| {
        container.env.iter().flatten().find(|e| e.name == name).and_then(|e| e.value.clone())
    };
    let presigned = objects_with(request.clone(), &RunnerConfig { outputs: RunnerOutputs::Presigned, ..config() });
    let pod = presigned.job.spec.as_ref().and_then(|s| s.template.spec.as_ref()).expect("pod");
    let upload = pod.volumes.iter().flatten().find(|v| v.name == "upload").expect("upload volume");
    let secret = upload.secret.as_ref().and_then(|s| s.secret_name.clone());
    assert_eq!(secret.as_deref(), Some("lmeval-0123456789abcdef0123456789abcdef-upload-SUFFIX"));
    let urls = BTreeMap::from([("log.txt".to_string(), "http://store/log.txt?X-Amz-Signature=s".to_string())]);
    let secret = upload_secret(Uuid::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef), "1f2e3d", urls.clone());
    assert_eq!(secret.metadata.name.as_deref(), Some("lmeval-0123456789abcdef0123456789abcdef-upload-1f2e3d"));
    assert_eq!(
        secret.metadata.labels,
        Some(identity_labels(Uuid::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef))),
        "found as the evaluation's objects are"
    );
    assert_eq!(secret.string_data, Some(urls));
    let mut job = presigned.job.clone();
    use_upload_secret(&mut job, "lmeval-x-upload-1f2e3d");
    let pod = job.spec.as_ref().and_then(|s| s.template.spec.as_ref()).expect("pod");
    let upload = pod.volumes.iter().flatten().find(|v| v.name == "upload").expect("upload volume");
    assert_eq!(upload.secret.as_ref().and_then(|s| s.secret_name.as_deref()), Some("lmeval-x-upload-1f2e3d"));
    // When the run ends its Secret is deleted by the name its Job mounts, only if that is one of its own.
    let id = Uuid::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef);
    assert_eq!(upload_secret_of(&presigned.job, id), None, "not yet named");
    let mine = "lmeval-0123456789abcdef0123456789abcdef-upload-1f2e3d";
    use_upload_secret(&mut job, mine);
    assert_eq!(upload_secret_of(&job, id).as_deref(), Some(mine));
    assert_eq!(upload_secret_of(&job, Uuid::from_u128(7)), None, "another evaluation's Job");
    for other in [
        "lm-eval-aas-output-store",
        "lmeval-0123456789abcdef0123456789abcdef-upload-",
        "lmeval-0123456789abcdef0123456789abcdef-upload-x.y",
    ] {
        use_upload_secret(&mut job, other);
        assert_eq!(upload_secret_of(&job, id), None, "{other} is no upload Secret of this run");
    }
    assert_eq!(upload_secret_of(&objects_with(request.clone(), &config()).job, id), None, "no bucket, no Secret");
    let runner = container(&presigned);
    assert_eq!(env(&runner, "LMEVAL_UPLOAD_URLS").as_deref(), Some(UPLOAD_URLS_DIR));
    assert_eq!(env(&runner, "LMEVAL_RUNNER_IMAGE").as_deref(), Some("registry.example/lm-eval-aas-runner:1"));
    let command = runner.command.expect("command");
    assert!(command.windows(2).any(|w| w[0] == "--log-file" && w[1] == "/lmeval/log/log.txt"), "{command:?}");
    let annotations =
        presigned.job.spec.as_ref().and_then(|s| s.template.metadata.as_ref()).and_then(|m| m.annotations.clone());
    let copy: Value = serde_json::from_str(&annotations.expect("annotations")[REQUEST_ANNOTATION]).expect("json");
    assert_eq!(copy["log_samples"], true);

    let claimed =
        objects_with(request.clone(), &RunnerConfig { outputs: RunnerOutputs::Claim("outputs".into()), ..config() });
    let runner = container(&claimed);
    let mount = runner.volume_mounts.iter().flatten().find(|m| m.name == "outputs").expect("outputs mount");
    assert_eq!(mount.sub_path.as_deref(), Some("ns/01234567-89ab-cdef-0123-456789abcdef"));
    assert_eq!(env(&runner, "LMEVAL_UPLOAD_DIR").as_deref(), Some(UPLOAD_DIR));

    let recorded = objects_with(request, &config());
    assert!(env(&container(&recorded), "LMEVAL_UPLOAD_DIR").is_none());
    assert!(!container(&recorded).command.expect("command").contains(&"--log-file".to_string()));
}
