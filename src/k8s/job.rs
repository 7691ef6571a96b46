//! Evaluation → `batch/v1` Job (and the ConfigMap of its inline tasks). Pure.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapVolumeSource, Container, DownwardAPIVolumeFile, DownwardAPIVolumeSource,
    EmptyDirVolumeSource, EnvVar, EnvVarSource, KeyToPath, ObjectFieldSelector, PersistentVolumeClaimVolumeSource,
    PodSecurityContext, PodSpec, PodTemplateSpec, ResourceRequirements, SeccompProfile, Secret, SecretKeySelector,
    SecretVolumeSource, SecurityContext, ServiceAccount, Toleration, Volume, VolumeMount as K8sVolumeMount,
};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use uuid::Uuid;

use super::{
    CREATOR_ANNOTATION, EVALUATION_ANNOTATION, EVALUATION_ID_LABEL, INPUT_KIND, KIND_LABEL, MANAGED_BY,
    MANAGED_BY_LABEL, REQUEST_DIGEST_ANNOTATION, RESERVED_SECRET_PREFIXES, RUN_RECORD_KIND, input_name, object_name,
};
use crate::lifecycle::admission::{Reserved, Site, Workspace};
use crate::model::Evaluation;

pub const CONTAINER: &str = "lm-eval";
pub const OUTPUT_DIR: &str = "/lmeval/output";
pub const CACHE_DIR: &str = "/lmeval/cache";
pub const TASKS_DIR: &str = "/lmeval/tasks";
pub const CONFIG_DIR: &str = "/lmeval/config";
/// Where the runner's CA bundle (`--runner-ca-bundle`) is mounted, and the file in it.
pub const CA_DIR: &str = "/lmeval/ca";
const CA_FILE_NAME: &str = "ca-bundle.crt";
pub const CA_FILE: &str = "/lmeval/ca/ca-bundle.crt";
/// The variables that make lm-eval's HTTP clients trust the CA bundle: OpenSSL's (Python's `ssl`, so aiohttp
/// and httpx), `requests`' (which otherwise uses certifi's) and curl's (which `requests` also reads).
pub const CA_BUNDLE_ENV: [&str; 3] = ["SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"];
const CONFIG_FILE: &str = "config.yaml";
pub const GPU_RESOURCE: &str = "nvidia.com/gpu";

/// How the server runs evaluations: set by the operator, never by a request.
#[derive(Debug, Clone, PartialEq)]
pub struct RunnerConfig {
    pub image: String,
    pub image_pull_policy: String,
    pub node_selector: BTreeMap<String, String>,
    pub tolerations: Vec<Toleration>,
    pub backoff_limit: i32,
    /// Our own binary inside the runner image.
    pub driver: String,
    /// `lm_eval` inside the runner image.
    pub lm_eval: String,
    /// Task directories inside the runner image, always included.
    pub task_dirs: Vec<String>,
    pub termination_grace_seconds: i64,
    /// CA certificates runner pods trust for TLS to model endpoints.
    pub ca_bundle: Option<CaBundle>,
    /// Where runs write their output sets.
    pub outputs: RunnerOutputs,
    /// How long a run retries writing its output set.
    pub upload_patience_seconds: u64,
}

/// Where a run writes its output set (see `crate::outputs`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum RunnerOutputs {
    /// Results and the log's end in the run record only.
    #[default]
    RunRecord,
    /// To a bucket, with the presigned URLs of the Secret `lmeval-<id>-upload`.
    Presigned,
    /// Into the evaluation's directory `<namespace>/<id>` of this claim.
    Claim(String),
}

/// Where the output set's upload URLs are mounted, and the log the driver keeps for it.
pub const UPLOAD_URLS_DIR: &str = "/lmeval/upload";
pub const UPLOAD_DIR: &str = "/lmeval/outputs";
pub const LOG_DIR: &str = "/lmeval/log";
pub const META_DIR: &str = "/lmeval/meta";
/// The pod's copy of the request, which the driver puts in the manifest (read through the downward API).
pub const REQUEST_ANNOTATION: &str = "lm-eval-aas.io/request";

/// The Secret holding a run's presigned upload URLs: `lmeval-<id>-upload-<suffix>`, the suffix random so that no
/// one can make it in advance (the service may create Secrets but never read one to tell whose it is).
pub fn upload_secret_name(id: Uuid, suffix: &str) -> String {
    format!("{}-upload-{suffix}", object_name(id))
}

/// The Secret of a run's presigned upload URLs (one key per stored object), labelled as the evaluation's.
pub fn upload_secret(id: Uuid, suffix: &str, urls: BTreeMap<String, String>) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(upload_secret_name(id, suffix)),
            labels: Some(identity_labels(id)),
            ..ObjectMeta::default()
        },
        string_data: Some(urls),
        ..Secret::default()
    }
}

/// Points the Job's upload volume at `secret` (the Secret of URLs made for this attempt).
pub fn use_upload_secret(job: &mut Job, secret: &str) {
    let volumes = job.spec.as_mut().and_then(|s| s.template.spec.as_mut()).and_then(|p| p.volumes.as_mut());
    for volume in volumes.into_iter().flatten().filter(|v| v.name == "upload") {
        if let Some(source) = volume.secret.as_mut() {
            source.secret_name = Some(secret.to_string());
        }
    }
}

/// The Secret of upload URLs `job` mounts, when it is one of evaluation `id`'s (`lmeval-<id>-upload-…`): the name
/// the service gave it when it made the Job (a Job's pod template cannot be changed after), so deleting it when the
/// run ends needs no read of any Secret, and can never reach a Secret of another name.
pub fn upload_secret_of(job: &Job, id: Uuid) -> Option<String> {
    let volumes = job.spec.as_ref()?.template.spec.as_ref()?.volumes.as_ref()?;
    let name = volumes.iter().find(|v| v.name == "upload")?.secret.as_ref()?.secret_name.clone()?;
    let suffix = name.strip_prefix(&upload_secret_name(id, ""))?;
    (!suffix.is_empty() && suffix.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())).then_some(name)
}

/// A key of a ConfigMap (in each served namespace) holding PEM CA certificates: `--runner-ca-bundle`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaBundle {
    pub config_map: String,
    pub key: String,
}

impl CaBundle {
    /// The key of OpenShift's injected trusted CA bundle (`config.openshift.io/inject-trusted-cabundle`).
    pub const DEFAULT_KEY: &str = "ca-bundle.crt";

    /// `CONFIGMAP` or `CONFIGMAP/KEY`.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let (config_map, key) = raw.split_once('/').unwrap_or((raw, Self::DEFAULT_KEY));
        if !crate::validate::names::is_dns_subdomain(config_map) {
            return Err(format!("{config_map:?} is not a ConfigMap name"));
        }
        if !crate::validate::names::is_data_key(key) || key == "." || key.starts_with("..") {
            return Err(format!("{key:?} is not a ConfigMap key"));
        }
        Ok(Self { config_map: config_map.into(), key: key.into() })
    }
}

#[cfg(test)]
impl RunnerConfig {
    /// The plainest runner, for tests of what is built from it.
    pub(crate) fn plain() -> Self {
        Self {
            image: "runner:1".into(),
            image_pull_policy: "IfNotPresent".into(),
            node_selector: BTreeMap::new(),
            tolerations: vec![],
            backoff_limit: 0,
            driver: "lm-eval-aas".into(),
            lm_eval: "lm_eval".into(),
            task_dirs: vec![],
            termination_grace_seconds: 1,
            ca_bundle: None,
            outputs: RunnerOutputs::RunRecord,
            upload_patience_seconds: 300,
        }
    }
}

/// Where evaluations run and what they can have: the runner pod, in `namespace`.
pub fn site(config: &RunnerConfig, namespace: &str) -> Site {
    Site {
        backend: "kubernetes",
        program: config.lm_eval.clone(),
        task_dirs: config.task_dirs.clone(),
        workspace: Workspace::Fixed {
            output: OUTPUT_DIR.into(),
            inline_tasks: TASKS_DIR.into(),
            config: format!("{CONFIG_DIR}/{CONFIG_FILE}"),
        },
        secrets: true,
        volumes: true,
        resources: true,
        namespace: namespace.into(),
        default_namespace: true,
        service_env: if config.ca_bundle.is_some() { CA_BUNDLE_ENV.to_vec() } else { Vec::new() },
        reserved: Reserved {
            secret_prefixes: RESERVED_SECRET_PREFIXES,
            claims: match &config.outputs {
                RunnerOutputs::Claim(name) => vec![name.clone()],
                RunnerOutputs::RunRecord | RunnerOutputs::Presigned => Vec::new(),
            },
        },
    }
}

/// What to create for one evaluation, in this order; each owned by the evaluation.
#[derive(Debug, Clone)]
pub struct EvaluationObjects {
    pub identity: RunnerIdentity,
    /// The run record, empty: the driver may only change it, never make ConfigMaps.
    pub record: ConfigMap,
    /// Inline tasks and the generated config file.
    pub input: Option<ConfigMap>,
    pub job: Job,
}

/// The runner pod's identity, one per evaluation: a ServiceAccount whose only right is to read and patch that
/// evaluation's run record. Task files are code, and that code holds the pod's token: through the API it can
/// change its own record and nothing else — no other evaluation's record, no configuration, no new objects.
#[derive(Debug, Clone)]
pub struct RunnerIdentity {
    pub service_account: ServiceAccount,
    pub role: Role,
    pub binding: RoleBinding,
}

fn named(id: Uuid, name: String) -> ObjectMeta {
    ObjectMeta { name: Some(name), labels: Some(identity_labels(id)), ..ObjectMeta::default() }
}

pub fn runner_identity(id: Uuid) -> RunnerIdentity {
    let name = object_name(id);
    RunnerIdentity {
        service_account: ServiceAccount {
            metadata: named(id, name.clone()),
            automount_service_account_token: Some(false),
            ..ServiceAccount::default()
        },
        role: Role {
            metadata: named(id, name.clone()),
            rules: Some(vec![PolicyRule {
                api_groups: Some(vec![String::new()]),
                resources: Some(vec!["configmaps".into()]),
                resource_names: Some(vec![name.clone()]),
                verbs: vec!["get".into(), "patch".into()],
                ..PolicyRule::default()
            }]),
        },
        binding: RoleBinding {
            metadata: named(id, name.clone()),
            role_ref: RoleRef {
                api_group: Some("rbac.authorization.k8s.io".into()),
                kind: "Role".into(),
                name: name.clone(),
            },
            subjects: Some(vec![Subject { kind: "ServiceAccount".into(), name, ..Subject::default() }]),
        },
    }
}

/// The evaluation's run record before its driver has written anything.
pub fn empty_run_record(id: Uuid) -> ConfigMap {
    let mut metadata = named(id, object_name(id));
    metadata.labels.get_or_insert_with(BTreeMap::new).insert(KIND_LABEL.into(), RUN_RECORD_KIND.into());
    ConfigMap { metadata, ..ConfigMap::default() }
}

fn identity_labels(id: Uuid) -> BTreeMap<String, String> {
    BTreeMap::from([
        (MANAGED_BY_LABEL.to_string(), MANAGED_BY.to_string()),
        (EVALUATION_ID_LABEL.to_string(), id.to_string()),
    ])
}

/// The kubelet expands `$(VAR)` in `command`; `$$` keeps a `$` literal.
fn literal(arg: &str) -> String {
    arg.replace('$', "$$")
}

fn env_value(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar { name: name.into(), value: Some(value.into()), ..EnvVar::default() }
}

fn env_field(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector { field_path: path.into(), ..ObjectFieldSelector::default() }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

/// What the service records on the Job about a submission, beside the evaluation itself.
#[derive(Debug, Clone, Copy, Default)]
pub struct Provenance<'a> {
    /// SHA-256 of the normalised request of an idempotent create.
    pub request_digest: Option<&'a str>,
    pub creator: Option<&'a str>,
}

pub fn build(
    evaluation: &Evaluation,
    config_yaml: Option<&str>,
    config: &RunnerConfig,
    provenance: Provenance<'_>,
) -> Result<EvaluationObjects, serde_json::Error> {
    let id = evaluation.id;
    let request = &evaluation.request;
    let name = object_name(id);

    let mut job_labels = identity_labels(id);
    for (key, value) in &evaluation.labels {
        job_labels.entry(key.clone()).or_insert_with(|| value.clone());
    }
    let mut annotations = BTreeMap::from([(EVALUATION_ANNOTATION.to_string(), serde_json::to_string(evaluation)?)]);
    if let Some(digest) = provenance.request_digest {
        annotations.insert(REQUEST_DIGEST_ANNOTATION.into(), digest.into());
    }
    if let Some(creator) = provenance.creator {
        annotations.insert(CREATOR_ANNOTATION.into(), creator.into());
    }

    let mut env = vec![
        env_value("LMEVAL_EVALUATION_ID", id.to_string()),
        env_value("LMEVAL_RUN_RECORD", name.clone()),
        env_field("LMEVAL_NAMESPACE", "metadata.namespace"),
        env_value("LMEVAL_OUTPUT_DIR", OUTPUT_DIR),
        env_value("HOME", CACHE_DIR),
        env_value("HF_HOME", format!("{CACHE_DIR}/huggingface")),
    ];
    if config.ca_bundle.is_some() {
        env.extend(CA_BUNDLE_ENV.iter().map(|name| env_value(name, CA_FILE)));
    }
    if !request.allow_online {
        for offline in ["HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"] {
            env.push(env_value(offline, "1"));
        }
    }
    if request.allow_code_execution {
        env.push(env_value("HF_ALLOW_CODE_EVAL", "1"));
    }
    for var in &request.env {
        env.push(match (&var.value, &var.secret) {
            (_, Some(secret)) => EnvVar {
                name: var.name.clone(),
                value_from: Some(EnvVarSource {
                    secret_key_ref: Some(SecretKeySelector {
                        name: secret.name.clone(),
                        key: secret.key.clone(),
                        optional: Some(false),
                    }),
                    ..EnvVarSource::default()
                }),
                ..EnvVar::default()
            },
            (value, None) => env_value(&var.name, value.clone().unwrap_or_default()),
        });
    }

    let mut volumes = vec![
        Volume { name: "output".into(), empty_dir: Some(EmptyDirVolumeSource::default()), ..Volume::default() },
        Volume { name: "cache".into(), empty_dir: Some(EmptyDirVolumeSource::default()), ..Volume::default() },
    ];
    let mut mounts = vec![
        K8sVolumeMount { name: "output".into(), mount_path: OUTPUT_DIR.into(), ..K8sVolumeMount::default() },
        K8sVolumeMount { name: "cache".into(), mount_path: CACHE_DIR.into(), ..K8sVolumeMount::default() },
    ];

    let input = input_config_map(evaluation, config_yaml);
    if let Some(input) = &input {
        let keys = |pick: &dyn Fn(&str) -> bool| -> Vec<KeyToPath> {
            input
                .data
                .iter()
                .flatten()
                .filter(|(key, _)| pick(key))
                .map(|(key, _)| KeyToPath { key: key.clone(), path: key.clone(), ..KeyToPath::default() })
                .collect()
        };
        for (volume, dir, items) in
            [("tasks", TASKS_DIR, keys(&|k| k != CONFIG_FILE)), ("config", CONFIG_DIR, keys(&|k| k == CONFIG_FILE))]
        {
            if items.is_empty() {
                continue;
            }
            volumes.push(Volume {
                name: volume.into(),
                config_map: Some(ConfigMapVolumeSource {
                    name: input_name(id),
                    items: Some(items),
                    ..ConfigMapVolumeSource::default()
                }),
                ..Volume::default()
            });
            mounts.push(K8sVolumeMount {
                name: volume.into(),
                mount_path: dir.into(),
                read_only: Some(true),
                ..K8sVolumeMount::default()
            });
        }
    }
    if let Some(bundle) = &config.ca_bundle {
        volumes.push(Volume {
            name: "ca-bundle".into(),
            config_map: Some(ConfigMapVolumeSource {
                name: bundle.config_map.clone(),
                items: Some(vec![KeyToPath {
                    key: bundle.key.clone(),
                    path: CA_FILE_NAME.into(),
                    ..KeyToPath::default()
                }]),
                optional: Some(false),
                ..ConfigMapVolumeSource::default()
            }),
            ..Volume::default()
        });
        mounts.push(K8sVolumeMount {
            name: "ca-bundle".into(),
            mount_path: CA_DIR.into(),
            read_only: Some(true),
            ..K8sVolumeMount::default()
        });
    }
    for (i, volume) in request.volumes.iter().enumerate() {
        let read_only = volume.read_only.unwrap_or(true);
        let volume_name = format!("pvc-{i}");
        volumes.push(Volume {
            name: volume_name.clone(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: volume.pvc.clone(),
                read_only: Some(read_only),
            }),
            ..Volume::default()
        });
        mounts.push(K8sVolumeMount {
            name: volume_name,
            mount_path: volume.mount_path.clone(),
            sub_path: volume.sub_path.clone(),
            read_only: Some(read_only),
            ..K8sVolumeMount::default()
        });
    }

    let mut pod_annotations = None;
    if config.outputs != RunnerOutputs::RunRecord {
        env.extend([
            env_value("LMEVAL_RUNNER_IMAGE", config.image.clone()),
            env_value("LMEVAL_UPLOAD_PATIENCE_SECONDS", config.upload_patience_seconds.to_string()),
            env_value("LMEVAL_REQUEST_FILE", format!("{META_DIR}/request.json")),
            env_value("LMEVAL_INLINE_TASKS_DIR", TASKS_DIR),
        ]);
        pod_annotations = Some(BTreeMap::from([(REQUEST_ANNOTATION.to_string(), serde_json::to_string(request)?)]));
        volumes.push(Volume {
            name: "log".into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Volume::default()
        });
        mounts.push(K8sVolumeMount { name: "log".into(), mount_path: LOG_DIR.into(), ..K8sVolumeMount::default() });
        volumes.push(Volume {
            name: "meta".into(),
            downward_api: Some(DownwardAPIVolumeSource {
                items: Some(vec![DownwardAPIVolumeFile {
                    path: "request.json".into(),
                    field_ref: Some(ObjectFieldSelector {
                        field_path: format!("metadata.annotations['{REQUEST_ANNOTATION}']"),
                        ..ObjectFieldSelector::default()
                    }),
                    ..DownwardAPIVolumeFile::default()
                }]),
                ..DownwardAPIVolumeSource::default()
            }),
            ..Volume::default()
        });
        mounts.push(K8sVolumeMount {
            name: "meta".into(),
            mount_path: META_DIR.into(),
            read_only: Some(true),
            ..K8sVolumeMount::default()
        });
    }
    match &config.outputs {
        RunnerOutputs::RunRecord => {}
        RunnerOutputs::Presigned => {
            env.push(env_value("LMEVAL_UPLOAD_URLS", UPLOAD_URLS_DIR));
            volumes.push(Volume {
                name: "upload".into(),
                secret: Some(SecretVolumeSource {
                    // Named when the Secret is made (see `use_upload_secret`).
                    secret_name: Some(upload_secret_name(id, "SUFFIX")),
                    optional: Some(false),
                    ..SecretVolumeSource::default()
                }),
                ..Volume::default()
            });
            mounts.push(K8sVolumeMount {
                name: "upload".into(),
                mount_path: UPLOAD_URLS_DIR.into(),
                read_only: Some(true),
                ..K8sVolumeMount::default()
            });
        }
        RunnerOutputs::Claim(claim) => {
            env.push(env_value("LMEVAL_UPLOAD_DIR", UPLOAD_DIR));
            volumes.push(Volume {
                name: "outputs".into(),
                persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                    claim_name: claim.clone(),
                    read_only: Some(false),
                }),
                ..Volume::default()
            });
            // Only the evaluation's own directory: its code never sees another's outputs.
            mounts.push(K8sVolumeMount {
                name: "outputs".into(),
                mount_path: UPLOAD_DIR.into(),
                sub_path: Some(format!("{}/{id}", evaluation.namespace)),
                ..K8sVolumeMount::default()
            });
        }
    }

    let mut driver_command = vec![literal(&config.driver), "driver".into(), "--echo".into()];
    if config.outputs != RunnerOutputs::RunRecord {
        driver_command.extend(["--log-file".into(), format!("{LOG_DIR}/log.txt")]);
    }
    // The driver passes lm_eval only the sealed basics and the variables it is told to keep.
    let ca_env = config.ca_bundle.as_ref().map_or(&[][..], |_| &CA_BUNDLE_ENV[..]);
    for name in request.env.iter().map(|var| var.name.as_str()).chain(ca_env.iter().copied()) {
        driver_command.extend(["--keep-env".into(), literal(name)]);
    }
    driver_command.push("--".into());
    driver_command.extend(evaluation.command.iter().map(|arg| literal(arg)));

    let container = Container {
        name: CONTAINER.into(),
        image: Some(config.image.clone()),
        image_pull_policy: Some(config.image_pull_policy.clone()),
        command: Some(driver_command),
        env: Some(env),
        volume_mounts: Some(mounts),
        resources: resources(evaluation),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            capabilities: Some(Capabilities { drop: Some(vec!["ALL".into()]), add: None }),
            run_as_non_root: Some(true),
            seccomp_profile: Some(runtime_default()),
            ..SecurityContext::default()
        }),
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        ..Container::default()
    };

    let pod = PodSpec {
        containers: vec![container],
        restart_policy: Some("Never".into()),
        service_account_name: Some(object_name(id)),
        automount_service_account_token: Some(true),
        enable_service_links: Some(false),
        node_selector: (!config.node_selector.is_empty()).then(|| config.node_selector.clone()),
        tolerations: (!config.tolerations.is_empty()).then(|| config.tolerations.clone()),
        termination_grace_period_seconds: Some(config.termination_grace_seconds),
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            seccomp_profile: Some(runtime_default()),
            ..PodSecurityContext::default()
        }),
        volumes: Some(volumes),
        ..PodSpec::default()
    };

    let job = Job {
        metadata: ObjectMeta {
            name: Some(name),
            labels: Some(job_labels),
            annotations: Some(annotations),
            ..ObjectMeta::default()
        },
        spec: Some(JobSpec {
            backoff_limit: Some(config.backoff_limit),
            active_deadline_seconds: request.timeout_seconds.map(|s| i64::try_from(s).unwrap_or(i64::MAX)),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(identity_labels(id)),
                    annotations: pod_annotations,
                    ..ObjectMeta::default()
                }),
                spec: Some(pod),
            },
            ..JobSpec::default()
        }),
        status: None,
    };
    Ok(EvaluationObjects { identity: runner_identity(id), record: empty_run_record(id), input, job })
}

fn runtime_default() -> SeccompProfile {
    SeccompProfile { type_: "RuntimeDefault".into(), localhost_profile: None }
}

fn resources(evaluation: &Evaluation) -> Option<ResourceRequirements> {
    let wanted = evaluation.request.resources.as_ref()?;
    let mut amounts = BTreeMap::new();
    if let Some(cpu) = &wanted.cpu {
        amounts.insert("cpu".to_string(), Quantity(cpu.clone()));
    }
    if let Some(memory) = &wanted.memory {
        amounts.insert("memory".to_string(), Quantity(memory.clone()));
    }
    if let Some(gpu) = wanted.gpu.filter(|n| *n > 0) {
        amounts.insert(GPU_RESOURCE.to_string(), Quantity(gpu.to_string()));
    }
    (!amounts.is_empty()).then(|| ResourceRequirements {
        requests: Some(amounts.clone()),
        limits: Some(amounts),
        ..ResourceRequirements::default()
    })
}

fn input_config_map(evaluation: &Evaluation, config_yaml: Option<&str>) -> Option<ConfigMap> {
    let mut data: BTreeMap<String, String> = evaluation.request.inline_tasks.clone();
    if let Some(yaml) = config_yaml {
        data.insert(CONFIG_FILE.into(), yaml.to_string());
    }
    if data.is_empty() {
        return None;
    }
    let mut labels = identity_labels(evaluation.id);
    labels.insert(KIND_LABEL.into(), INPUT_KIND.into());
    Some(ConfigMap {
        metadata: ObjectMeta { name: Some(input_name(evaluation.id)), labels: Some(labels), ..ObjectMeta::default() },
        data: Some(data),
        immutable: Some(true),
        ..ConfigMap::default()
    })
}

#[cfg(test)]
#[path = "job_tests.rs"]
mod tests;
