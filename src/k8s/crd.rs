//! The CustomResourceDefinition of `evaluations.lm-eval-aas.io`, generated from the Rust types: the spec's
//! schema from `EvaluationRequest`, the status's from `EvaluationStatus`. Committed as `k8s/base/crd.yaml`
//! (`lm-eval-aas crd --output k8s/base/crd.yaml`; a test fails when it drifts).

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceColumnDefinition, CustomResourceDefinition, CustomResourceDefinitionNames,
    CustomResourceDefinitionSpec, CustomResourceDefinitionVersion, CustomResourceSubresourceStatus,
    CustomResourceSubresources, CustomResourceValidation, JSONSchemaProps,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::{Value, json};

use super::resource::{EvaluationStatus, GROUP, KIND, PLURAL, SHORT_NAME, VERSION};
use crate::model::EvaluationRequest;

pub fn crd() -> CustomResourceDefinition {
    let mut spec = schema_of::<EvaluationRequest>();
    // Unknown fields are kept, so the validator (in the admission webhook, or the controller) refuses them
    // with the same problem the REST API gives, instead of the API server dropping them unseen.
    keep_unknown_fields(&mut spec);
    spec["description"] = json!("What to evaluate and how: exactly the body of POST /api/v1/evaluations.");
    // Enforced by the API server for every writer, so it holds while the admission webhook is down.
    spec["x-kubernetes-validations"] = json!([{
        "rule": "self == oldSelf",
        "message": "spec is immutable: an Evaluation runs the spec it was created with; delete it and create another",
    }]);
    let status = schema_of::<EvaluationStatus>();
    let root = json!({
        "type": "object",
        "description": "An lm-evaluation-harness evaluation, run as a Job by lm-eval-aas.",
        "properties": {"spec": spec, "status": status},
        "required": ["spec"],
    });
    let column = |name: &str, kind: &str, path: &str, description: &str| CustomResourceColumnDefinition {
        name: name.into(),
        type_: kind.into(),
        json_path: path.into(),
        description: Some(description.into()),
        ..CustomResourceColumnDefinition::default()
    };
    CustomResourceDefinition {
        metadata: ObjectMeta { name: Some(format!("{PLURAL}.{GROUP}")), ..ObjectMeta::default() },
        spec: CustomResourceDefinitionSpec {
            group: GROUP.into(),
            names: CustomResourceDefinitionNames {
                kind: KIND.into(),
                plural: PLURAL.into(),
                singular: Some(KIND.to_ascii_lowercase()),
                short_names: Some(vec![SHORT_NAME.into()]),
                categories: Some(vec!["lm-eval-aas".into()]),
                ..CustomResourceDefinitionNames::default()
            },
            scope: "Namespaced".into(),
            versions: vec![CustomResourceDefinitionVersion {
                name: VERSION.into(),
                served: true,
                storage: true,
                schema: Some(CustomResourceValidation {
                    open_api_v3_schema: Some(
                        serde_json::from_value::<JSONSchemaProps>(root).expect("a JSONSchemaProps"),
                    ),
                }),
                subresources: Some(CustomResourceSubresources {
                    status: Some(CustomResourceSubresourceStatus(json!({}))),
                    scale: None,
                }),
                additional_printer_columns: Some(vec![
                    column("State", "string", ".status.state", "pending, running, succeeded, failed or cancelled"),
                    column("Reason", "string", ".status.reason", "why it is in its state"),
                    column("Progress", "number", ".status.progress.percent", "percent of lm-eval's requests done"),
                    column("Model", "string", ".spec.model", "the lm-eval model type"),
                    column("Tasks", "string", ".spec.tasks", "the tasks evaluated"),
                    column("Age", "date", ".metadata.creationTimestamp", "since it was created"),
                ]),
                ..CustomResourceDefinitionVersion::default()
            }],
            ..CustomResourceDefinitionSpec::default()
        },
        status: None,
    }
}

/// The type's schema in the form a CRD takes (OpenAPI v3, structural, no `$ref`s), as kube's derive makes it.
fn schema_of<T: schemars::JsonSchema>() -> Value {
    let generator = schemars::generate::SchemaSettings::openapi3()
        .with(|settings| {
            settings.inline_subschemas = true;
            settings.meta_schema = None;
        })
        .with_transform(schemars::transform::AddNullable::default())
        .with_transform(kube::core::schema::StructuralSchemaRewriter)
        .with_transform(kube::core::schema::OptionalEnum)
        .with_transform(kube::core::schema::OptionalIntOrString)
        .into_generator();
    let mut schema = serde_json::to_value(generator.into_root_schema_for::<T>()).expect("a JSON schema");
    if let Some(object) = schema.as_object_mut() {
        object.remove("title");
    }
    known_formats_only(&mut schema);
    schema
}

/// Drops the integer formats Kubernetes does not know (`uint32`, `uint64`: it warns about each on apply).
fn known_formats_only(schema: &mut Value) {
    if let Some(object) = schema.as_object_mut() {
        if object.get("format").and_then(Value::as_str).is_some_and(|f| f.starts_with("uint")) {
            object.remove("format");
        }
        object.values_mut().for_each(known_formats_only);
    } else if let Some(items) = schema.as_array_mut() {
        items.iter_mut().for_each(known_formats_only);
    }
}

/// Marks every object in `schema` as keeping fields it does not list.
fn keep_unknown_fields(schema: &mut Value) {
    if let Some(object) = schema.as_object_mut() {
        if object.get("type") == Some(&json!("object")) {
            object.insert("x-kubernetes-preserve-unknown-fields".into(), json!(true));
        }
        for child in object.values_mut() {
            keep_unknown_fields(child);
        }
    } else if let Some(items) = schema.as_array_mut() {
        items.iter_mut().for_each(keep_unknown_fields);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `k8s/base/crd.yaml` is what the code generates; `UPDATE_SNAPSHOTS=1` rewrites it (review the diff).
    #[test]
    fn committed_crd_matches_the_code() {
        let generated = yaml_serde::to_string(&crd()).expect("yaml");
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("k8s/base/crd.yaml");
        if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
            std::fs::write(&path, &generated).expect("write the CRD");
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert_eq!(
            generated, committed,
            "k8s/base/crd.yaml is stale: run `cargo run -- crd --output k8s/base/crd.yaml`"
        );
    }

    #[test]
    fn the_schema_is_structural_and_keeps_what_it_does_not_list() {
        let crd = serde_json::to_value(crd()).expect("json");
        let root = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
        let spec = &root["properties"]["spec"];
        assert_eq!(spec["x-kubernetes-preserve-unknown-fields"], true);
        assert_eq!(spec["properties"]["env"]["items"]["x-kubernetes-preserve-unknown-fields"], true);
        assert_eq!(spec["properties"]["batch_size"]["x-kubernetes-int-or-string"], true);
        assert_eq!(spec["required"], json!(["model", "tasks"]));
        assert_eq!(spec["x-kubernetes-validations"][0]["rule"], "self == oldSelf", "the spec never changes");
        assert_eq!(crd["spec"]["versions"][0]["subresources"]["status"], json!({}), "status is a subresource");
        assert!(!crd.to_string().contains("$ref"), "no references in a structural schema");
        let status = &root["properties"]["status"]["properties"];
        for field in ["state", "reason", "progress", "metrics", "observedGeneration", "jobName", "conditions"] {
            assert!(status[field].is_object(), "status.{field}");
        }
        let reasons = status["reason"]["enum"].as_array().map(|values| values.iter().filter(|v| !v.is_null()).count());
        assert_eq!(reasons, Some(crate::model::Reason::ALL.len()));
    }
}
