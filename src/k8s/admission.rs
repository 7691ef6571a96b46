//! The validating admission webhook's judgement, pure: an Evaluation is created exactly when its spec would be
//! accepted as a REST request body (same validator, same policy, same problem detail), and its spec never
//! changes afterwards. What it says no to, `kubectl apply` prints.

use kube::core::admission::{AdmissionRequest, AdmissionResponse, Operation};
use kube::core::response::{StatusCause, StatusDetails};
use kube::core::{DynamicObject, Status};
use time::OffsetDateTime;
use uuid::Uuid;

use super::resource::{EvaluationObject, GROUP, KIND};
use crate::error::ApiResult;
use crate::lifecycle::admission::Site;
use crate::validate::Policy;

/// What the webhook answers `request`, given the site of each namespace (an error for one not served) and the
/// operator's policy.
pub fn judge(
    request: &AdmissionRequest<DynamicObject>,
    site_of: impl FnOnce(&str) -> ApiResult<Site>,
    policy: &Policy,
) -> AdmissionResponse {
    let response = AdmissionResponse::from(request);
    if !matches!(request.operation, Operation::Create | Operation::Update) {
        return response;
    }
    let Some(object) = request.object.as_ref() else { return response };
    let object = match read(object) {
        Ok(object) => object,
        Err(message) => return deny(response, &request.name, 400, &message, None),
    };
    if request.operation == Operation::Update {
        let old = request.old_object.as_ref().map(read);
        return match old {
            Some(Ok(old)) if old.spec != object.spec => deny(
                response,
                &request.name,
                422,
                "spec is immutable: an Evaluation runs the spec it was created with; delete it and create another",
                Some("spec"),
            ),
            _ => response,
        };
    }
    let namespace = request.namespace.as_deref().unwrap_or_default();
    let site = match site_of(namespace) {
        Ok(site) => site,
        Err(problem) => {
            let mut response = response;
            response.warnings = Some(vec![format!("{}; nothing will run this Evaluation", problem.problem().detail)]);
            return response;
        }
    };
    // The id only names what admission makes; a new object has no uid yet.
    let id = object.id().unwrap_or(Uuid::nil());
    match object.admit(id, &site, policy, OffsetDateTime::now_utc()) {
        Ok(_) => response,
        Err(problem) => {
            let problem = problem.problem();
            let field = problem.field.as_ref().map(|field| format!("spec.{field}"));
            deny(response, &request.name, problem.status, &problem.detail, field.as_deref())
        }
    }
}

fn read(object: &DynamicObject) -> Result<EvaluationObject, String> {
    let value = serde_json::to_value(object).map_err(|e| e.to_string())?;
    serde_json::from_value(value).map_err(|e| format!("not an Evaluation: {e}"))
}

/// A denial carrying the problem: `kubectl` prints the message; the code and cause are there for clients.
fn deny(response: AdmissionResponse, name: &str, code: u16, message: &str, field: Option<&str>) -> AdmissionResponse {
    let mut response = response.deny(message);
    let causes = field.map(|field| {
        vec![StatusCause { reason: "FieldValueInvalid".into(), message: message.into(), field: field.into() }]
    });
    response.result = Status::failure(message, "Invalid").with_code(code).with_details(StatusDetails {
        name: name.into(),
        group: GROUP.into(),
        kind: KIND.into(),
        uid: String::new(),
        causes: causes.unwrap_or_default(),
        retry_after_seconds: 0,
    });
    response
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::error::ApiError;

    fn review(operation: &str, object: Value, old: Option<Value>) -> AdmissionRequest<DynamicObject> {
        let review: kube::core::admission::AdmissionReview<DynamicObject> = serde_json::from_value(json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "7c1e", "operation": operation, "name": "e1", "namespace": "team-a",
                "kind": {"group": GROUP, "version": "v1alpha1", "kind": "Evaluation"},
                "resource": {"group": GROUP, "version": "v1alpha1", "resource": crate::k8s::resource::PLURAL},
                "userInfo": {"username": "alice"},
                "object": object, "oldObject": old,
            }
        }))
        .expect("review");
        review.try_into().expect("request")
    }

    fn evaluation(spec: Value) -> Value {
        json!({"apiVersion": "lm-eval-aas.io/v1alpha1", "kind": "Evaluation", "metadata": {"name": "e1", "namespace": "team-a"}, "spec": spec})
    }

    fn served(namespace: &str) -> ApiResult<Site> {
        Ok(crate::k8s::job::site(&crate::k8s::job::RunnerConfig::plain(), namespace))
    }

    #[test]
    fn a_valid_spec_is_admitted() {
        let request = review("CREATE", evaluation(json!({"model": "dummy", "tasks": ["arc_easy"]})), None);
        let response = judge(&request, served, &Policy::default());
        assert!(response.allowed, "{response:?}");
        assert_eq!(response.uid, "7c1e");
    }

    #[test]
    fn a_spec_the_rest_api_refuses_is_denied_with_the_same_detail_and_field() {
        let spec = json!({"model": "dummy", "tasks": ["arc_easy"], "limit": -1});
        let object: EvaluationObject = serde_json::from_value(evaluation(spec.clone())).expect("object");
        let expected = object
            .admit(Uuid::nil(), &served("team-a").unwrap(), &Policy::default(), OffsetDateTime::now_utc())
            .expect_err("refused")
            .problem();
        let response = judge(&review("CREATE", evaluation(spec), None), served, &Policy::default());
        assert!(!response.allowed);
        assert_eq!(response.result.message, expected.detail);
        assert_eq!(response.result.code, expected.status);
        let cause = &response.result.details.as_ref().expect("details").causes[0];
        assert_eq!(cause.field, format!("spec.{}", expected.field.expect("field")));
    }

    #[test]
    fn an_unknown_field_is_denied() {
        let spec = json!({"model": "dummy", "tasks": ["arc_easy"], "modle_args": "x"});
        let response = judge(&review("CREATE", evaluation(spec), None), served, &Policy::default());
        assert!(!response.allowed);
        assert!(response.result.message.contains("modle_args"), "{}", response.result.message);
    }

    #[test]
    fn the_spec_cannot_change_but_metadata_can() {
        let spec = json!({"model": "dummy", "tasks": ["arc_easy"]});
        let mut annotated = evaluation(spec.clone());
        annotated["metadata"]["annotations"] = json!({"lm-eval-aas.io/cancel": "true"});
        let cancel = review("UPDATE", annotated, Some(evaluation(spec.clone())));
        assert!(judge(&cancel, served, &Policy::default()).allowed);

        let changed =
            review("UPDATE", evaluation(json!({"model": "dummy", "tasks": ["other"]})), Some(evaluation(spec)));
        let response = judge(&changed, served, &Policy::default());
        assert!(!response.allowed);
        assert!(response.result.message.starts_with("spec is immutable"));
    }

    #[test]
    fn updates_are_not_judged_by_todays_policy() {
        let spec = json!({"model": "dummy", "tasks": ["arc_easy"], "allow_online": true});
        let mut labelled = evaluation(spec.clone());
        labelled["metadata"]["labels"] = json!({"team": "a"});
        let update = review("UPDATE", labelled, Some(evaluation(spec)));
        assert!(judge(&update, served, &Policy::default()).allowed);
    }

    #[test]
    fn a_namespace_not_served_is_allowed_with_a_warning() {
        let request = review("CREATE", evaluation(json!({"model": "dummy", "tasks": ["arc_easy"], "limit": -1})), None);
        let response = judge(&request, |ns| Err(ApiError::NamespaceNotServed(ns.into())), &Policy::default());
        assert!(response.allowed);
        assert!(response.warnings.expect("warning")[0].contains("team-a"));
    }

    #[test]
    fn deletes_are_allowed() {
        let request = review("DELETE", Value::Null, Some(evaluation(json!({"model": "x"}))));
        assert!(judge(&request, served, &Policy::default()).allowed);
    }
}
