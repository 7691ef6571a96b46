//! The `Evaluation` custom resource (`evaluations.lm-eval-aas.io/v1alpha1`): its spec is exactly the REST
//! request body, its status the evaluation as the REST API shows it, plus what Kubernetes tooling expects
//! (`observedGeneration`, `jobName`, `conditions`). Pure: types and conversions, no I/O.

use std::borrow::Cow;
use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

use super::{EVALUATION_ID_LABEL, MANAGED_BY, MANAGED_BY_LABEL, object_name};
use crate::error::ApiError;
use crate::lifecycle::admission::{self, NewEvaluation, Site, Submission};
use crate::model::{Evaluation, EvaluationRequest, Links, MetricRow, Progress, Reason, State};
use crate::validate::Policy;
use crate::validate::json::parse_json;

pub const GROUP: &str = "lm-eval-aas.io";
pub const VERSION: &str = "v1alpha1";
pub const KIND: &str = "Evaluation";
pub const PLURAL: &str = "evaluations";
pub const SHORT_NAME: &str = "lmeval";
pub const API_VERSION: &str = "lm-eval-aas.io/v1alpha1";

/// `kubectl annotate lmeval NAME lm-eval-aas.io/cancel=true` cancels a pending or running evaluation.
pub const CANCEL_ANNOTATION: &str = "lm-eval-aas.io/cancel";
/// When the service accepted it (RFC 3339, microseconds): `creationTimestamp` has whole seconds only.
pub const CREATED_AT_ANNOTATION: &str = "lm-eval-aas.io/created-at";

/// An Evaluation as stored. The spec is kept as JSON: a spec the validator would refuse must still be read
/// (and failed with its problem), never break the watch that reads every Evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvaluationObject {
    #[serde(rename = "apiVersion", default = "api_version")]
    pub api_version: String,
    #[serde(default = "kind")]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: Map<String, Value>,
    #[serde(default, deserialize_with = "lenient", skip_serializing_if = "Option::is_none")]
    pub status: Option<EvaluationStatus>,
}

fn api_version() -> String {
    API_VERSION.into()
}

fn kind() -> String {
    KIND.into()
}

/// A status this service did not write is treated as none, so one odd object cannot stop the watch.
fn lenient<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<EvaluationStatus>, D::Error> {
    Ok(Option::<Value>::deserialize(deserializer)?.and_then(|value| serde_json::from_value(value).ok()))
}

impl kube::Resource for EvaluationObject {
    type DynamicType = ();
    type Scope = k8s_openapi::NamespaceResourceScope;

    fn kind(_: &()) -> Cow<'_, str> {
        KIND.into()
    }

    fn group(_: &()) -> Cow<'_, str> {
        GROUP.into()
    }

    fn version(_: &()) -> Cow<'_, str> {
        VERSION.into()
    }

    fn plural(_: &()) -> Cow<'_, str> {
        PLURAL.into()
    }

    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// The evaluation as the REST API shows it, and the Kubernetes conventions beside it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct EvaluationStatus {
    /// The id the REST API knows it by.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<State>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<Reason>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    /// The exact argv that runs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<Progress>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<Vec<MetricRow>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub links: Option<Links>,
    #[serde(rename = "observedGeneration", default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(rename = "jobName", default, skip_serializing_if = "Option::is_none")]
    pub job_name: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// A standard Kubernetes condition (`metav1.Condition`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Condition {
    /// `Accepted`, `Running`, `Succeeded` or `Failed`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    #[serde(rename = "lastTransitionTime")]
    pub last_transition_time: String,
    pub reason: String,
    #[serde(default)]
    pub message: String,
    #[serde(rename = "observedGeneration", default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

impl EvaluationObject {
    /// A new Evaluation for an admitted evaluation: named after its id, labelled with it and the request's
    /// labels, the request as its spec.
    pub fn new(evaluation: &Evaluation, namespace: &str) -> Result<Self, serde_json::Error> {
        let spec = match serde_json::to_value(&evaluation.request)? {
            Value::Object(spec) => spec,
            _ => Map::new(),
        };
        let mut labels = evaluation.labels.clone();
        labels.insert(MANAGED_BY_LABEL.into(), MANAGED_BY.into());
        labels.insert(EVALUATION_ID_LABEL.into(), evaluation.id.to_string());
        let created_at = evaluation.created_at.format(&Rfc3339).unwrap_or_default();
        Ok(Self {
            api_version: api_version(),
            kind: kind(),
            metadata: ObjectMeta {
                name: Some(object_name(evaluation.id)),
                namespace: Some(namespace.into()),
                labels: Some(labels),
                annotations: Some(BTreeMap::from([(CREATED_AT_ANNOTATION.to_string(), created_at)])),
                ..ObjectMeta::default()
            },
            spec,
            status: None,
        })
    }

    /// The id the REST API knows it by: the label the service sets on what it creates (named after the id),
    /// else its uid. A label that does not match the name is ignored, so nobody can claim another's id.
    pub fn id(&self) -> Option<Uuid> {
        let labelled = self.metadata.labels.as_ref().and_then(|l| l.get(EVALUATION_ID_LABEL));
        let labelled =
            labelled.and_then(|id| id.parse().ok()).filter(|id| self.metadata.name == Some(object_name(*id)));
        labelled.or_else(|| self.metadata.uid.as_ref()?.parse().ok())
    }

    /// When it was accepted: the service's annotation, else the object's creation time.
    pub fn created_at(&self) -> Option<OffsetDateTime> {
        let annotated = self.metadata.annotations.as_ref().and_then(|a| a.get(CREATED_AT_ANNOTATION));
        match annotated.and_then(|at| OffsetDateTime::parse(at, &Rfc3339).ok()) {
            Some(at) => Some(at),
            None => self.metadata.creation_timestamp.as_ref().map(super::status::to_time),
        }
    }

    /// Whether cancelling was asked for with the annotation.
    pub fn cancel_requested(&self) -> bool {
        self.metadata.annotations.as_ref().and_then(|a| a.get(CANCEL_ANNOTATION)).is_some_and(|v| v == "true")
    }

    /// The spec admitted as the REST API would admit it as a request body, with the object's id and creation
    /// time: the problem the REST API would give, else the evaluation it stands for.
    pub fn admit(
        &self,
        id: Uuid,
        site: &Site,
        policy: &Policy,
        created_at: OffsetDateTime,
    ) -> Result<NewEvaluation, ApiError> {
        let spec = serde_json::to_vec(&Value::Object(self.spec.clone())).map_err(ApiError::internal)?;
        let request: EvaluationRequest = parse_json(&spec)?;
        admission::admit(Submission::anonymous(request), policy, site, id, created_at)
    }

    /// The spec as a request as far as it reads as one (a refused spec still shows what was asked).
    pub fn request(&self) -> EvaluationRequest {
        if let Ok(request) = serde_json::from_value(Value::Object(self.spec.clone())) {
            return request;
        }
        let text = |value: &Value| value.as_str().map(str::to_string);
        EvaluationRequest {
            model: self.spec.get("model").and_then(text).unwrap_or_default(),
            tasks: self.spec.get("tasks").and_then(Value::as_array).into_iter().flatten().filter_map(text).collect(),
            ..EvaluationRequest::default()
        }
    }

    /// An owner reference to this Evaluation: what it owns is deleted with it.
    pub fn owner_reference(&self) -> Option<OwnerReference> {
        Some(OwnerReference {
            api_version: API_VERSION.into(),
            kind: KIND.into(),
            name: self.metadata.name.clone()?,
            uid: self.metadata.uid.clone()?,
            controller: Some(true),
            block_owner_deletion: Some(true),
        })
    }
}

impl EvaluationStatus {
    /// The status without what an evaluation's spec and id fix once and for all (its command and links): the
    /// part a controller keeps of each status, to tell whether a new one changes anything.
    pub fn without_fixed_parts(mut self) -> Self {
        self.command = Vec::new();
        self.links = None;
        self
    }

    /// Whether `self` and `other` differ at most in their fixed parts.
    pub fn same_as(&self, other: &Self) -> bool {
        self.clone().without_fixed_parts() == other.clone().without_fixed_parts()
    }

    /// The status that shows `evaluation`, with `previous`'s conditions carried over where they still hold.
    pub fn of(
        evaluation: &Evaluation,
        job_name: &str,
        generation: Option<i64>,
        previous: Option<&Self>,
        now: OffsetDateTime,
    ) -> Self {
        let time = |at: Option<OffsetDateTime>| at.and_then(|at| at.format(&Rfc3339).ok());
        let mut status = Self {
            id: Some(evaluation.id.to_string()),
            state: Some(evaluation.state),
            reason: evaluation.reason,
            message: evaluation.message.clone(),
            created_at: time(Some(evaluation.created_at)),
            started_at: time(evaluation.started_at),
            finished_at: time(evaluation.finished_at),
            command: evaluation.command.clone(),
            progress: evaluation.progress,
            metrics: evaluation.metrics.clone(),
            links: Some(evaluation.links.clone()),
            observed_generation: generation,
            job_name: Some(job_name.into()),
            conditions: Vec::new(),
        };
        status.conditions = conditions(evaluation, generation, previous.map_or(&[][..], |p| &p.conditions), now);
        status
    }
}

/// `Accepted` always; `Running` while it runs; `Succeeded` or `Failed` (a cancellation is `Failed` with reason
/// `Cancelled`) once it has ended. A condition keeps its transition time while its status stays the same.
fn conditions(
    evaluation: &Evaluation,
    generation: Option<i64>,
    previous: &[Condition],
    now: OffsetDateTime,
) -> Vec<Condition> {
    let reason = evaluation.reason.map_or("", Reason::as_str);
    let message = evaluation.message.clone().unwrap_or_default();
    let state = evaluation.state;
    let mut wanted = vec![("Accepted", true, "Admitted", String::new())];
    wanted.push((
        "Running",
        state == State::Running,
        if state == State::Running { "Started" } else { state.as_str() },
        String::new(),
    ));
    if state.is_terminal() {
        let ended = if reason.is_empty() { "Completed" } else { reason };
        wanted.push(("Succeeded", state == State::Succeeded, ended, String::new()));
        wanted.push(("Failed", state != State::Succeeded, ended, message));
    }
    let at = now.format(&Rfc3339).unwrap_or_default();
    wanted
        .into_iter()
        .map(|(type_, holds, reason, message)| {
            let status = if holds { "True" } else { "False" }.to_string();
            let since = previous
                .iter()
                .find(|c| c.type_ == type_ && c.status == status)
                .map_or_else(|| at.clone(), |c| c.last_transition_time.clone());
            let reason = if reason.is_empty() { "Pending".to_string() } else { reason.to_string() };
            Condition {
                type_: type_.into(),
                status,
                last_transition_time: since,
                reason,
                message,
                observed_generation: generation,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn evaluation(state: State, reason: Option<Reason>) -> Evaluation {
        let request = serde_json::from_value(json!({"model": "dummy", "tasks": ["t"], "labels": {"team": "nlp"}}))
            .expect("request");
        let mut e = Evaluation::pending(
            Uuid::from_u128(3),
            request,
            vec!["lm_eval".into()],
            time::macros::datetime!(2026-11-30 12:00:00.123456 UTC),
        );
        e.state = state;
        e.reason = reason;
        e
    }

    #[test]
    fn a_status_kept_without_its_fixed_parts_still_tells_a_change() {
        let t0 = time::macros::datetime!(2026-11-30 12:01 UTC);
        let running = EvaluationStatus::of(&evaluation(State::Running, None), "job", Some(1), None, t0);
        let kept = running.clone().without_fixed_parts();
        assert!(kept.command.is_empty() && kept.links.is_none());
        assert!(kept.same_as(&running), "the same status, command and links aside");
        let failed = EvaluationStatus::of(&evaluation(State::Failed, None), "job", Some(1), Some(&kept), t0);
        assert!(!kept.same_as(&failed));
    }

    #[test]
    fn a_request_becomes_an_object_named_and_labelled_after_it() {
        let object = EvaluationObject::new(&evaluation(State::Pending, None), "team-a").expect("object");
        assert_eq!(object.metadata.name.as_deref(), Some("lmeval-00000000000000000000000000000003"));
        assert_eq!(object.spec["tasks"], json!(["t"]));
        assert_eq!(object.metadata.labels.as_ref().expect("labels")["team"], "nlp");
        assert_eq!(object.id(), Some(Uuid::from_u128(3)));
        assert_eq!(object.created_at(), Some(time::macros::datetime!(2026-11-30 12:00:00.123456 UTC)));
        let json = serde_json::to_value(&object).expect("json");
        assert_eq!((json["apiVersion"].as_str(), json["kind"].as_str()), (Some(API_VERSION), Some(KIND)));
        let odd: EvaluationObject = serde_json::from_value(json!({"metadata": {"uid": "00000000-0000-0000-0000-000000000009"}, "spec": {"x": 1}, "status": {"state": "exploded"}})).expect("read anyway");
        assert_eq!(
            (odd.id(), odd.status),
            (Some(Uuid::from_u128(9)), None),
            "a made-by-kubectl id; an odd status is none"
        );
    }

    #[test]
    fn nobody_claims_another_evaluations_id_by_labelling_theirs_with_it() {
        let claimed = Uuid::from_u128(3);
        let spoof: EvaluationObject = serde_json::from_value(json!({"metadata": {
            "name": "mine", "uid": "00000000-0000-0000-0000-000000000009",
            "labels": {EVALUATION_ID_LABEL: claimed.to_string()}}}))
        .expect("object");
        assert_eq!(spoof.id(), Some(Uuid::from_u128(9)));
    }

    #[test]
    fn conditions_follow_the_state_and_keep_their_transition_times() {
        let t0 = time::macros::datetime!(2026-11-30 12:00 UTC);
        let t1 = time::macros::datetime!(2026-11-30 12:05 UTC);
        let running = EvaluationStatus::of(&evaluation(State::Running, None), "job", Some(1), None, t0);
        let kinds: Vec<(&str, &str)> =
            running.conditions.iter().map(|c| (c.type_.as_str(), c.status.as_str())).collect();
        assert_eq!(kinds, [("Accepted", "True"), ("Running", "True")]);
        let failed =
            EvaluationStatus::of(&evaluation(State::Failed, Some(Reason::Timeout)), "job", Some(1), Some(&running), t1);
        let by_type = |t: &str| failed.conditions.iter().find(|c| c.type_ == t).expect("condition").clone();
        assert_eq!(by_type("Accepted").last_transition_time, "2026-11-30T12:00:00Z", "unchanged, so its time is kept");
        assert_eq!(
            (by_type("Running").status.as_str(), by_type("Running").last_transition_time.as_str()),
            ("False", "2026-11-30T12:05:00Z")
        );
        assert_eq!((by_type("Failed").status.as_str(), by_type("Failed").reason.as_str()), ("True", "Timeout"));
        assert_eq!(by_type("Succeeded").status, "False");
    }
}
