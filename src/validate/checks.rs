//! The checks of a request's fields that have no type of their own: each refuses a bad value with a
//! problem naming its field.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

use super::Policy;
use super::TaskName;
use super::environment::{changes_behaviour, is_set_by_service};
use super::names::{
    CPU_SUFFIXES, MEMORY_SUFFIXES, is_data_key, is_dns_label, is_dns_subdomain, is_label_key, is_label_value,
    is_quantity,
};
use super::secrets::{credential_in, is_credential_name, is_credential_value};
use crate::error::ApiError;
use crate::model::{EnvVar, Resources, VolumeMount};

fn is_identifier(key: &str) -> bool {
    key.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && key.len() <= 128
}

const CREDENTIAL_BY_REFERENCE: &str =
    "looks like a credential; pass it by reference instead: env: [{name: ..., secret: {name: <Secret>, key: <key>}}]";

pub fn check_model_args(model_args: &Map<String, Value>, policy: &Policy) -> Result<(), ApiError> {
    for (key, value) in model_args {
        let field = format!("model_args.{key}");
        if !is_identifier(key) {
            return Err(ApiError::invalid(field, "keys must be identifiers (letters, digits, '_')"));
        }
        match value {
            Value::String(s) if s.contains('\0') => return Err(ApiError::invalid(field, "must not contain NUL")),
            Value::String(_) | Value::Number(_) | Value::Bool(_) => {}
            _ => return Err(ApiError::invalid(field, "must be a string, number or boolean")),
        }
        if is_credential_name(key) || value.as_str().is_some_and(is_credential_value) {
            return Err(ApiError::invalid(field, CREDENTIAL_BY_REFERENCE));
        }
        if key == "trust_remote_code" && value != &Value::Bool(false) && !policy.allow_trust_remote_code {
            return Err(ApiError::forbidden(field, "trust_remote_code is not permitted by the server's policy"));
        }
    }
    Ok(())
}

pub fn parse_tasks(raw: &[String]) -> Result<Vec<TaskName>, ApiError> {
    if raw.is_empty() {
        return Err(ApiError::invalid("tasks", "must name at least one task"));
    }
    let mut seen = BTreeSet::new();
    let mut tasks = Vec::new();
    for (i, name) in raw.iter().enumerate() {
        let task = TaskName::parse(name).map_err(|e| ApiError::invalid(format!("tasks[{i}]"), e))?;
        if seen.insert(name) {
            tasks.push(task);
        }
    }
    Ok(tasks)
}

pub fn check_maps(gen_kwargs: &Map<String, Value>, metadata: &Map<String, Value>) -> Result<(), ApiError> {
    for (name, map) in [("gen_kwargs", gen_kwargs), ("metadata", metadata)] {
        for (key, value) in map {
            if !is_identifier(key) {
                return Err(ApiError::invalid(
                    format!("{name}.{key}"),
                    "keys must be identifiers (letters, digits, '_')",
                ));
            }
            if value.to_string().contains("\\u0000") {
                return Err(ApiError::invalid(format!("{name}.{key}"), "must not contain NUL"));
            }
            let field = format!("{name}.{key}");
            if is_credential_name(key) {
                return Err(ApiError::invalid(field, CREDENTIAL_BY_REFERENCE));
            }
            if let Some(field) = credential_in(&field, value) {
                return Err(ApiError::invalid(field, CREDENTIAL_BY_REFERENCE));
            }
        }
    }
    Ok(())
}

const MAX_INLINE_TASK_BYTES: usize = 512 * 1024;
pub const MAX_INLINE_TASK_FILES: usize = 64;

pub fn check_inline_tasks(inline_tasks: &BTreeMap<String, String>) -> Result<(), ApiError> {
    if inline_tasks.len() > MAX_INLINE_TASK_FILES {
        return Err(ApiError::invalid("inline_tasks", format!("at most {MAX_INLINE_TASK_FILES} files")));
    }
    let mut total = 0;
    for (name, text) in inline_tasks {
        let field = format!("inline_tasks.{name}");
        let stem_ok = name.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
            && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
            && !name.contains("..");
        if !stem_ok || !(name.ends_with(".yaml") || name.ends_with(".yml")) || name.len() > 200 {
            return Err(ApiError::invalid(field, "file names must be plain names ending in .yaml or .yml"));
        }
        if text.trim().is_empty() || text.contains('\0') {
            return Err(ApiError::invalid(field, "must be non-empty YAML text"));
        }
        total += text.len();
    }
    if total > MAX_INLINE_TASK_BYTES {
        return Err(ApiError::invalid("inline_tasks", format!("must total at most {MAX_INLINE_TASK_BYTES} bytes")));
    }
    Ok(())
}

/// An absolute path with no `.`/`..` components, normalised without trailing slashes.
pub fn normalise_absolute_path(raw: &str) -> Option<String> {
    if !raw.starts_with('/') || raw.contains('\0') || raw.len() > 1024 {
        return None;
    }
    let parts: Vec<&str> = raw.split('/').filter(|p| !p.is_empty()).collect();
    if parts.iter().any(|p| *p == "." || *p == "..") {
        return None;
    }
    Some(format!("/{}", parts.join("/")))
}

pub fn check_volumes(volumes: &mut [VolumeMount]) -> Result<(), ApiError> {
    let mut mount_paths = BTreeSet::new();
    for (i, volume) in volumes.iter_mut().enumerate() {
        if !is_dns_label(&volume.pvc) {
            return Err(ApiError::invalid(
                format!("volumes[{i}].pvc"),
                "must be a PersistentVolumeClaim name (DNS-1123 label)",
            ));
        }
        let mount = normalise_absolute_path(&volume.mount_path).filter(|p| p != "/").ok_or_else(|| {
            ApiError::invalid(
                format!("volumes[{i}].mount_path"),
                "must be an absolute path other than / without '.' or '..'",
            )
        })?;
        if !mount_paths.insert(mount.clone()) {
            return Err(ApiError::invalid(format!("volumes[{i}].mount_path"), "is mounted twice"));
        }
        volume.mount_path = mount;
        if let Some(sub) = &volume.sub_path {
            let ok = !sub.is_empty()
                && !sub.starts_with('/')
                && !sub.split('/').any(|p| p == ".." || p == ".")
                && !sub.contains('\0');
            if !ok {
                return Err(ApiError::invalid(
                    format!("volumes[{i}].sub_path"),
                    "must be a relative path without '.' or '..'",
                ));
            }
        }
    }
    Ok(())
}

pub fn check_env(env: &[EnvVar], policy: &Policy) -> Result<(), ApiError> {
    let mut names = BTreeSet::new();
    for (i, var) in env.iter().enumerate() {
        if !is_identifier(&var.name) {
            return Err(ApiError::invalid(format!("env[{i}].name"), "must be a valid environment variable name"));
        }
        if is_set_by_service(&var.name) {
            return Err(ApiError::invalid(
                format!("env[{i}].name"),
                format!("{} is set by the service and cannot be overridden", var.name),
            ));
        }
        if changes_behaviour(&var.name) && !policy.allowed_env.contains(&var.name) {
            return Err(ApiError::forbidden(
                format!("env[{i}].name"),
                format!(
                    "{} changes how code is loaded or where traffic goes; the server's policy does not allow it (--allow-env)",
                    var.name
                ),
            ));
        }
        if !names.insert(&var.name) {
            return Err(ApiError::invalid(format!("env[{i}].name"), format!("{} is given twice", var.name)));
        }
        match (&var.value, &var.secret) {
            (Some(_), Some(_)) | (None, None) => {
                return Err(ApiError::invalid(format!("env[{i}]"), "needs exactly one of value or secret"));
            }
            (Some(value), None) => {
                if is_credential_name(&var.name) || is_credential_value(value) {
                    return Err(ApiError::invalid(
                        format!("env[{i}].value"),
                        format!("{} holds a credential: pass it by reference, as secret: {{name, key}}", var.name),
                    ));
                }
                if value.contains('\0') {
                    return Err(ApiError::invalid(format!("env[{i}].value"), "must not contain NUL"));
                }
            }
            (None, Some(secret)) => {
                if !is_dns_subdomain(&secret.name) {
                    return Err(ApiError::invalid(
                        format!("env[{i}].secret.name"),
                        "must be a Secret name (DNS-1123 subdomain)",
                    ));
                }
                if !is_data_key(&secret.key) {
                    return Err(ApiError::invalid(
                        format!("env[{i}].secret.key"),
                        "must be a Secret key (letters, digits, '-', '_', '.')",
                    ));
                }
            }
        }
    }
    Ok(())
}

pub fn check_resources(resources: Option<&Resources>) -> Result<(), ApiError> {
    let Some(resources) = resources else { return Ok(()) };
    if let Some(cpu) = &resources.cpu
        && !is_quantity(cpu, CPU_SUFFIXES)
    {
        return Err(ApiError::invalid("resources.cpu", "must be a CPU quantity such as 500m or 2"));
    }
    if let Some(memory) = &resources.memory
        && !is_quantity(memory, MEMORY_SUFFIXES)
    {
        return Err(ApiError::invalid("resources.memory", "must be a memory quantity such as 512Mi or 4Gi"));
    }
    if let Some(gpu) = resources.gpu
        && gpu > 64
    {
        return Err(ApiError::invalid("resources.gpu", "must be at most 64"));
    }
    Ok(())
}

const RESERVED_LABEL_PREFIXES: &[&str] = &["lm-eval-aas.io/", "app.kubernetes.io/", "kubernetes.io/", "k8s.io/"];

pub fn check_labels(labels: &BTreeMap<String, String>) -> Result<(), ApiError> {
    if labels.len() > 32 {
        return Err(ApiError::invalid("labels", "at most 32 labels"));
    }
    for (key, value) in labels {
        let field = format!("labels.{key}");
        if !is_label_key(key) {
            return Err(ApiError::invalid(
                field,
                "must be a Kubernetes label key ([prefix/]name, name ≤ 63 characters)",
            ));
        }
        if RESERVED_LABEL_PREFIXES.iter().any(|p| key.starts_with(p)) {
            return Err(ApiError::invalid(field, "uses a prefix reserved for the service"));
        }
        if !is_label_value(value) {
            return Err(ApiError::invalid(
                field,
                "value must be a Kubernetes label value (≤ 63 letters, digits, '-', '_', '.')",
            ));
        }
    }
    Ok(())
}

pub fn check_policy(allow_online: bool, allow_code_execution: bool, policy: &Policy) -> Result<(), ApiError> {
    if allow_online && !policy.allow_online {
        return Err(ApiError::forbidden(
            "allow_online",
            "network access for evaluations is not permitted by the server's policy",
        ));
    }
    if allow_code_execution && !policy.allow_code_execution {
        return Err(ApiError::forbidden(
            "allow_code_execution",
            "code execution is not permitted by the server's policy",
        ));
    }
    Ok(())
}
