//! Admission: a request, the site that will run it and an optional Idempotency-Key become a new, not yet
//! stored evaluation — its id, its exact command and its pending state. Pure; both the v1 and the Flask
//! routes come through here.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::command::{self, RunPlan};
use crate::error::{ApiError, ApiResult};
use crate::model::{Evaluation, EvaluationRequest};
use crate::validate::{Policy, ValidRequest};

/// Where a backend runs lm-eval and what it can provide: all that admission needs to know of it.
#[derive(Debug, Clone, PartialEq)]
pub struct Site {
    /// The backend's name, for messages.
    pub backend: &'static str,
    /// `lm_eval` as the site invokes it.
    pub program: String,
    /// Task directories always included; a request's `include_path` must lie inside one (or a volume).
    pub task_dirs: Vec<String>,
    pub workspace: Workspace,
    /// Whether `env[].secret`, `volumes` and `resources` can be honoured.
    pub secrets: bool,
    pub volumes: bool,
    pub resources: bool,
    /// The namespace evaluations are admitted into; ids derived from an Idempotency-Key are unique within it.
    pub namespace: String,
    /// Whether it is the server's default namespace (served by the un-namespaced routes too).
    pub default_namespace: bool,
    /// Environment variables the site sets itself for lm_eval (the runner's CA bundle): never a request's,
    /// whatever `--allow-env` says.
    pub service_env: Vec<&'static str>,
    /// What belongs to the service and is never a request's to mount, whoever asks.
    pub reserved: Reserved,
}

/// Secrets and claims of the service itself: its credentials, its webhook's key, each run's upload URLs and the
/// output store's claim (every namespace's outputs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reserved {
    /// Secrets whose names start with one of these.
    pub secret_prefixes: &'static [&'static str],
    pub claims: Vec<String>,
}

impl Reserved {
    fn secret(&self, name: &str) -> bool {
        self.secret_prefixes.iter().any(|prefix| name.starts_with(prefix))
    }
}

/// Where lm-eval's own files go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Workspace {
    /// A directory per evaluation, `<root>/<id>`.
    PerEvaluation(PathBuf),
    /// The same paths for every evaluation (each runs in its own pod).
    Fixed { output: String, inline_tasks: String, config: String },
}

impl Site {
    pub fn plan(&self, id: Uuid) -> RunPlan {
        let (output_path, inline_tasks_dir, config_path) = match &self.workspace {
            Workspace::PerEvaluation(root) => {
                let dir = root.join(id.to_string());
                let path = |name: &str| dir.join(name).to_string_lossy().into_owned();
                (path("output"), path("tasks"), path("config.yaml"))
            }
            Workspace::Fixed { output, inline_tasks, config } => (output.clone(), inline_tasks.clone(), config.clone()),
        };
        RunPlan {
            program: self.program.clone(),
            output_path,
            task_dirs: self.task_dirs.clone(),
            inline_tasks_dir,
            config_path,
        }
    }

    /// Refuses (422) what the request asks of the site that it cannot give.
    fn check(&self, valid: &ValidRequest) -> ApiResult<()> {
        let backend = self.backend;
        if let Some((i, var)) =
            valid.env.iter().enumerate().find(|(_, v)| self.service_env.iter().any(|s| s.eq_ignore_ascii_case(&v.name)))
        {
            return Err(ApiError::invalid(
                format!("env[{i}].name"),
                format!("{} is set by the service (the runner's CA bundle) and cannot be overridden", var.name),
            ));
        }
        if !self.secrets
            && let Some(i) = valid.env.iter().position(|v| v.secret.is_some())
        {
            return Err(ApiError::invalid(
                format!("env[{i}].secret"),
                format!("the {backend} backend has no secret store; secret references need the kubernetes backend"),
            ));
        }
        if let Some((i, var)) = valid
            .env
            .iter()
            .enumerate()
            .find(|(_, v)| v.secret.as_ref().is_some_and(|secret| self.reserved.secret(&secret.name)))
        {
            return Err(ApiError::Denied {
                field: Some(format!("env[{i}].secret")),
                detail: format!(
                    "{} names one of the service's own Secrets ({}*), which no evaluation may read",
                    var.name,
                    self.reserved.secret_prefixes.join("*, ")
                ),
            });
        }
        if let Some(i) = valid.volumes.iter().position(|v| self.reserved.claims.contains(&v.pvc)) {
            return Err(ApiError::Denied {
                field: Some(format!("volumes[{i}].pvc")),
                detail: format!(
                    "{} is the output store's claim, which holds every evaluation's outputs: no evaluation may mount it",
                    valid.volumes[i].pvc
                ),
            });
        }
        if !self.volumes && !valid.volumes.is_empty() {
            return Err(ApiError::invalid(
                "volumes",
                format!("the {backend} backend cannot mount PersistentVolumeClaims"),
            ));
        }
        if !self.resources && valid.resources.is_some() {
            return Err(ApiError::invalid(
                "resources",
                format!("the {backend} backend cannot reserve resources; use the kubernetes backend"),
            ));
        }
        if let Some(path) = &valid.include_path {
            let inside = |dir: &str| Path::new(path).starts_with(dir);
            let allowed =
                self.task_dirs.iter().any(|d| inside(d)) || valid.volumes.iter().any(|v| inside(&v.mount_path));
            if !allowed {
                let detail = if self.volumes {
                    "must lie inside one of the request's volumes or the server's task directories"
                } else {
                    "must lie inside one of the server's task directories"
                };
                return Err(ApiError::invalid("include_path", detail));
            }
        }
        Ok(())
    }
}

/// An `Idempotency-Key` and a digest of the normalised request it came with.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct IdempotencyKey {
    pub key: String,
    /// So a reuse of the key with another body is told apart.
    pub body_digest: String,
}

impl IdempotencyKey {
    fn parse(raw: &[u8], request: &EvaluationRequest) -> ApiResult<Self> {
        let key = std::str::from_utf8(raw)
            .ok()
            .filter(|k| !k.is_empty() && k.len() <= 256 && k.bytes().all(|b| b.is_ascii_graphic() || b == b' '))
            .ok_or_else(|| ApiError::invalid("Idempotency-Key", "must be 1 to 256 visible ASCII characters"))?;
        let normalised = serde_json::to_vec(request).map_err(ApiError::internal)?;
        Ok(Self { key: key.to_string(), body_digest: format!("{:x}", Sha256::digest(&normalised)) })
    }

    /// The evaluation id this key stands for within `scope`: every replica, and every retry, derives the same.
    pub fn evaluation_id(&self, scope: &str) -> Uuid {
        let digest = Sha256::digest(format!("{scope}\0{}", self.key).as_bytes());
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&digest[..16]);
        uuid::Builder::from_custom_bytes(bytes).into_uuid()
    }
}

/// What a client submits: the request, and what the HTTP layer knows of it.
#[derive(Debug, Clone)]
pub struct Submission<'a> {
    pub request: EvaluationRequest,
    /// The `Idempotency-Key` header's bytes.
    pub idempotency_key: Option<&'a [u8]>,
    /// Who submits, as far as the service can tell; counted against the pending limits.
    pub creator: String,
}

impl Submission<'_> {
    /// A submission without a key, from nobody in particular (dry runs, tests).
    pub fn anonymous(request: EvaluationRequest) -> Self {
        Self { request, idempotency_key: None, creator: "unknown".into() }
    }
}

/// An evaluation admitted and not yet stored: what a backend records and starts.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvaluation {
    /// Pending, with the normalised request and the exact command.
    pub evaluation: Evaluation,
    /// lm-eval's `--config` file, when the command refers to one.
    pub config_yaml: Option<String>,
    pub idempotency: Option<IdempotencyKey>,
    pub creator: String,
}

/// Validates a submission under `policy` for `site`. The id comes from the Idempotency-Key when there is
/// one, else it is `fresh_id`.
pub fn admit(
    submission: Submission<'_>,
    policy: &Policy,
    site: &Site,
    fresh_id: Uuid,
    now: OffsetDateTime,
) -> ApiResult<NewEvaluation> {
    let Submission { request, idempotency_key, creator } = submission;
    let valid = ValidRequest::parse(request, policy)?;
    site.check(&valid)?;
    let request = valid.to_request();
    let idempotency = idempotency_key.map(|raw| IdempotencyKey::parse(raw, &request)).transpose()?;
    // A key names an evaluation only for its caller: another caller's same key is another evaluation.
    let id = idempotency.as_ref().map_or(fresh_id, |key| key.evaluation_id(&format!("{}\0{creator}", site.namespace)));
    let command = command::build(&valid, &site.plan(id));
    check_command_size(&command.argv, &request.env)?;
    let mut evaluation =
        Evaluation::pending(id, request, command.argv, now).in_namespace(&site.namespace, site.default_namespace);
    evaluation.created_by = Some(creator.clone());
    Ok(NewEvaluation { evaluation, config_yaml: command.config_yaml, idempotency, creator })
}

/// An evaluation whose request the validator refuses (an Evaluation object that got past the admission
/// webhook): failed with `InvalidRequest` and the problem's detail, as of its creation.
pub fn refused(id: Uuid, request: EvaluationRequest, created_at: OffsetDateTime, problem: &ApiError) -> Evaluation {
    let mut evaluation = Evaluation::pending(id, request, Vec::new(), created_at);
    evaluation.state = crate::model::State::Failed;
    evaluation.reason = Some(crate::model::Reason::InvalidRequest);
    evaluation.message = Some(problem.problem().detail);
    evaluation.finished_at = Some(created_at);
    evaluation
}

/// Linux refuses one argument (or environment string) over 128 KiB and argv and environment together over
/// 2 MiB; a request is held well below both, so it fails here with a field named rather than at exec time.
pub const MAX_ARGUMENT_BYTES: usize = 96 * 1024;
pub const MAX_COMMAND_BYTES: usize = 512 * 1024;

fn check_command_size(argv: &[String], env: &[crate::model::EnvVar]) -> ApiResult<()> {
    let arguments = argv.iter().enumerate().map(|(i, arg)| (argument_field(argv, i), arg.len()));
    let variables = env
        .iter()
        .enumerate()
        .map(|(i, var)| (format!("env[{i}].value"), var.name.len() + 1 + var.value.as_deref().map_or(0, str::len)));
    let mut total = 0;
    let mut largest: Option<(String, usize)> = None;
    for (field, bytes) in arguments.chain(variables) {
        if bytes > MAX_ARGUMENT_BYTES {
            return Err(ApiError::invalid(
                field,
                format!("makes a {bytes}-byte command-line argument; at most {MAX_ARGUMENT_BYTES} bytes"),
            ));
        }
        total += bytes + 1;
        if largest.as_ref().is_none_or(|(_, most)| bytes > *most) {
            largest = Some((field, bytes));
        }
    }
    if total > MAX_COMMAND_BYTES {
        let field = largest.map_or_else(|| "request".to_string(), |(field, _)| field);
        return Err(ApiError::invalid(
            field,
            format!("the command line would be {total} bytes (largest part here); at most {MAX_COMMAND_BYTES} bytes"),
        ));
    }
    Ok(())
}

/// The request field an argument of the `lm_eval` command comes from.
fn argument_field(argv: &[String], i: usize) -> String {
    let flag = i.checked_sub(1).map_or("", |before| argv[before].as_str());
    let field = match flag {
        "--model_args" => "model_args",
        "--tasks" => "tasks",
        "--gen_kwargs" => "gen_kwargs",
        "--metadata" => "metadata",
        _ if argv[i].starts_with("--system_instruction=") => "system_instruction",
        _ => "request",
    };
    field.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;
    use serde_json::json;

    fn site(workspace: Workspace, capable: bool) -> Site {
        Site {
            backend: "test",
            program: "lm_eval".into(),
            task_dirs: vec!["/srv/tasks".into()],
            workspace,
            secrets: capable,
            volumes: capable,
            resources: capable,
            namespace: "ns".into(),
            default_namespace: true,
            service_env: vec![],
            reserved: Default::default(),
        }
    }

    fn request(extra: serde_json::Value) -> EvaluationRequest {
        let mut body = json!({"model": "dummy", "tasks": ["t"]});
        body.as_object_mut().expect("object").extend(extra.as_object().expect("object").clone());
        serde_json::from_value(body).expect("request")
    }

    fn admit_to(site: &Site, extra: serde_json::Value, key: Option<&str>) -> ApiResult<NewEvaluation> {
        let submission =
            Submission { idempotency_key: key.map(str::as_bytes), ..Submission::anonymous(request(extra)) };
        admit(submission, &Policy::default(), site, Uuid::from_u128(1), OffsetDateTime::UNIX_EPOCH)
    }

    #[test]
    fn the_services_own_secrets_and_the_stores_claim_are_never_a_requests() {
        let mut kubernetes = site(Workspace::PerEvaluation("/w".into()), true);
        kubernetes.reserved = Reserved { secret_prefixes: &["lm-eval-aas", "lmeval-"], claims: vec!["outputs".into()] };
        let secret = |name: &str| json!({"env": [{"name": "A", "value": "1"}, {"name": "K", "secret": {"name": name, "key": "k"}}]});
        for name in ["lm-eval-aas-output-store", "lm-eval-aas-webhook-tls", "lmeval-0123-upload-ab"] {
            let problem = admit_to(&kubernetes, secret(name), None).expect_err(name).problem();
            assert_eq!((problem.status, problem.field.as_deref()), (403, Some("env[1].secret")), "{name}");
        }
        assert!(admit_to(&kubernetes, secret("openai"), None).is_ok(), "a tenant's own Secret");
        let claims = json!({"volumes": [{"pvc": "data", "mount_path": "/data"}, {"pvc": "outputs", "mount_path": "/o", "read_only": true}]});
        let problem = admit_to(&kubernetes, claims, None).expect_err("the store's claim").problem();
        assert_eq!((problem.status, problem.field.as_deref()), (403, Some("volumes[1].pvc")));
        assert!(problem.detail.contains("output store"), "{}", problem.detail);
    }

    #[test]
    fn the_id_comes_from_the_key_and_the_paths_from_the_id() {
        let local = site(Workspace::PerEvaluation("/data/evaluations".into()), false);
        let fresh = admit_to(&local, json!({}), None).expect("admitted");
        assert_eq!(fresh.evaluation.id, Uuid::from_u128(1));
        let keyed = admit_to(&local, json!({}), Some("retry-1")).expect("admitted");
        let again = admit_to(&local, json!({}), Some("retry-1")).expect("admitted");
        assert_eq!(keyed, again);
        assert_ne!(keyed.evaluation.id, fresh.evaluation.id);
        let output = format!("/data/evaluations/{}/output", keyed.evaluation.id);
        assert!(keyed.evaluation.command.ends_with(&["--output_path".to_string(), output]));
        let other_body = admit_to(&local, json!({"limit": 2}), Some("retry-1")).expect("admitted");
        assert_eq!(other_body.evaluation.id, keyed.evaluation.id);
        assert_ne!(other_body.idempotency.map(|k| k.body_digest), keyed.idempotency.map(|k| k.body_digest));
        let in_another_scope = Site { namespace: "other".into(), ..local };
        assert_ne!(
            admit_to(&in_another_scope, json!({}), Some("retry-1")).expect("admitted").evaluation.id,
            again.evaluation.id
        );
    }

    #[test]
    fn refuses_what_the_site_cannot_give() {
        let local = site(Workspace::PerEvaluation("/d".into()), false);
        let pod = site(Workspace::Fixed { output: "/o".into(), inline_tasks: "/t".into(), config: "/c".into() }, true);
        let field = |site: &Site, extra| admit_to(site, extra, None).err().and_then(|e| e.field().map(str::to_string));
        let secret = json!({"env": [{"name": "X", "secret": {"name": "s", "key": "k"}}]});
        assert_eq!(field(&local, secret.clone()).as_deref(), Some("env[0].secret"));
        assert_eq!(field(&pod, secret), None);
        let volume = json!({"volumes": [{"pvc": "data", "mount_path": "/data"}], "include_path": "/data/tasks"});
        assert_eq!(field(&local, volume.clone()).as_deref(), Some("volumes"));
        assert_eq!(field(&pod, volume), None);
        assert_eq!(field(&pod, json!({"include_path": "/etc"})).as_deref(), Some("include_path"));
        assert_eq!(field(&local, json!({"include_path": "/srv/tasks/mine"})), None);
        assert_eq!(field(&local, json!({"resources": {"cpu": "1"}})).as_deref(), Some("resources"));
        assert_eq!(field(&local, json!({})), None);
        assert_eq!(
            admit_to(&local, json!({}), Some("")).err().and_then(|e| e.field().map(str::to_string)).as_deref(),
            Some("Idempotency-Key")
        );
    }

    #[test]
    fn a_variable_the_site_sets_is_never_a_requests_even_when_the_policy_allows_it() {
        let mut pod =
            site(Workspace::Fixed { output: "/o".into(), inline_tasks: "/t".into(), config: "/c".into() }, true);
        let policy = Policy { allowed_env: vec!["ssl_cert_file".into()], ..Policy::default() };
        let body = request(json!({"env": [{"name": "MODE", "value": "x"}, {"name": "ssl_cert_file", "value": "/x"}]}));
        let admit_with = |site: &Site| {
            admit(Submission::anonymous(body.clone()), &policy, site, Uuid::from_u128(1), OffsetDateTime::UNIX_EPOCH)
        };
        assert!(admit_with(&pod).is_ok(), "the policy allows it where the site sets nothing");
        pod.service_env = vec!["SSL_CERT_FILE", "REQUESTS_CA_BUNDLE"];
        let refused = admit_with(&pod).expect_err("refused");
        assert_eq!((refused.status(), refused.field()), (StatusCode::UNPROCESSABLE_ENTITY, Some("env[1].name")));
    }
}
