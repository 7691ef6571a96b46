//! What every replica reads from: the Evaluation objects of the served namespaces, as the REST API shows them,
//! kept up to date by a watch. Pure: fed watch events, a clock and the admission inputs; answers reads.
//!
//! An Evaluation's status, written by the controller, is the evaluation as REST shows it. Before the controller
//! has written one (just created, or the leader is away), the view is computed from the spec the same way the
//! controller will: admitted, pending with its command, or failed with `InvalidRequest`.

use std::collections::{BTreeMap, HashMap, HashSet};

use bytes::Bytes;
use kube::runtime::watcher;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

use crate::backend::{ListQuery, Listable, SortKey, Waiting, paginate, sort_key};
use crate::error::{ApiError, ApiResult};
use crate::k8s::CREATOR_ANNOTATION;
use crate::k8s::resource::{EvaluationObject, EvaluationStatus};
use crate::lifecycle::admission::{Site, refused};
use crate::model::{Evaluation, EvaluationList, EvaluationRequest, State};
use crate::validate::Policy;

/// One Evaluation as served: its REST JSON, ready to send, and what lists filter on. The evaluation itself
/// is read back from the JSON when asked for (a list page, a write's answer); every replica holds one of
/// these per evaluation, so it holds nothing twice.
pub struct View {
    pub json: Bytes,
    pub state: State,
    labels: BTreeMap<String, String>,
    /// The object's name, for writes.
    pub name: String,
    pub creator: Option<String>,
    key: SortKey,
}

impl View {
    pub fn evaluation(&self) -> ApiResult<Evaluation> {
        serde_json::from_slice(&self.json).map_err(ApiError::internal)
    }
}

impl Listable for View {
    fn state(&self) -> State {
        self.state
    }

    fn has_label(&self, key: &str, value: &str) -> bool {
        self.labels.get(key).is_some_and(|v| v == value)
    }

    fn created_by(&self) -> Option<&str> {
        self.creator.as_deref()
    }

    fn evaluation(&self) -> ApiResult<Evaluation> {
        View::evaluation(self)
    }
}

#[derive(Default)]
struct Namespace {
    views: HashMap<Uuid, View>,
    order: BTreeMap<SortKey, Uuid>,
    /// Object name → id, for what is named by the object (deletions, the controller's mappings).
    ids: HashMap<String, Uuid>,
}

/// The names seen so far in a relist.
pub type Relist = Option<HashSet<String>>;

pub struct Views {
    namespaces: HashMap<String, Namespace>,
    sites: HashMap<String, Site>,
    policy: Policy,
}

impl Views {
    pub fn new(sites: HashMap<String, Site>, policy: Policy) -> Self {
        let namespaces = sites.keys().map(|ns| (ns.clone(), Namespace::default())).collect();
        Self { namespaces, sites, policy }
    }

    /// Applies one watch event of `namespace`'s Evaluations; returns whether it completed a relist.
    pub fn apply(&mut self, namespace: &str, event: watcher::Event<EvaluationObject>, relist: &mut Relist) -> bool {
        match event {
            watcher::Event::Init => *relist = Some(HashSet::new()),
            watcher::Event::InitApply(object) | watcher::Event::Apply(object) => {
                if let (Some(seen), Some(name)) = (relist.as_mut(), object.metadata.name.as_ref()) {
                    seen.insert(name.clone());
                }
                self.store(namespace, &object);
            }
            watcher::Event::Delete(object) => {
                if let Some(name) = &object.metadata.name {
                    self.remove(namespace, name);
                }
            }
            watcher::Event::InitDone => {
                if let Some(seen) = relist.take()
                    && let Some(ns) = self.namespaces.get(namespace)
                {
                    let stale: Vec<String> = ns.ids.keys().filter(|name| !seen.contains(*name)).cloned().collect();
                    for name in stale {
                        self.remove(namespace, &name);
                    }
                }
                return true;
            }
        }
        false
    }

    /// Puts an object this replica just wrote (or read), so its next read sees it.
    pub fn store(&mut self, namespace: &str, object: &EvaluationObject) {
        let (Some(site), Some(name)) = (self.sites.get(namespace), object.metadata.name.clone()) else { return };
        let Some(mut evaluation) = evaluation_of(object, site, &self.policy) else { return };
        evaluation.created_by = object.metadata.annotations.as_ref().and_then(|a| a.get(CREATOR_ANNOTATION)).cloned();
        let Ok(json) = serde_json::to_vec(&evaluation).map(Bytes::from) else { return };
        let id = evaluation.id;
        let view = View {
            key: sort_key(&evaluation),
            name: name.clone(),
            creator: evaluation.created_by.clone(),
            json,
            state: evaluation.state,
            labels: evaluation.labels,
        };
        let ns = self.namespaces.entry(namespace.to_string()).or_default();
        if let Some(old) = ns.views.remove(&id) {
            ns.order.remove(&old.key);
        }
        ns.order.insert(view.key, id);
        ns.ids.insert(name, id);
        ns.views.insert(id, view);
    }

    pub fn remove(&mut self, namespace: &str, name: &str) {
        let Some(ns) = self.namespaces.get_mut(namespace) else { return };
        if let Some(id) = ns.ids.remove(name)
            && let Some(view) = ns.views.remove(&id)
        {
            ns.order.remove(&view.key);
        }
    }

    pub fn view(&self, namespace: &str, id: Uuid) -> ApiResult<&View> {
        self.namespaces
            .get(namespace)
            .ok_or_else(|| ApiError::NamespaceNotServed(namespace.to_string()))?
            .views
            .get(&id)
            .ok_or_else(|| ApiError::NotFound(id.to_string()))
    }

    /// The name of the Evaluation `id` in `namespace`.
    pub fn name_of(&self, namespace: &str, id: Uuid) -> Option<String> {
        Some(self.namespaces.get(namespace)?.views.get(&id)?.name.clone())
    }

    pub fn list(&self, namespace: &str, query: &ListQuery) -> ApiResult<EvaluationList> {
        let ns = self.namespaces.get(namespace).ok_or_else(|| ApiError::NamespaceNotServed(namespace.to_string()))?;
        paginate(ns.order.iter().filter_map(|(key, id)| Some((key, ns.views.get(id)?))), query)
    }

    /// One list over `namespaces`, newest first (the page token is the same sort key, so pages run across them).
    pub fn list_across(&self, namespaces: &[&str], query: &ListQuery) -> ApiResult<EvaluationList> {
        let mut merged: Vec<(&SortKey, &View)> = namespaces
            .iter()
            .filter_map(|name| self.namespaces.get(*name))
            .flat_map(|ns| ns.order.iter().filter_map(|(key, id)| Some((key, ns.views.get(id)?))))
            .collect();
        merged.sort_unstable_by(|a, b| a.0.cmp(b.0));
        paginate(merged.into_iter(), query)
    }

    /// How many evaluations are pending in all served namespaces, how many of them `creator` submitted, and how
    /// many are in `namespace`.
    pub fn pending(&self, creator: &str, namespace: &str) -> Waiting {
        self.waiting(namespace, Some(creator), |_| true)
    }

    /// What `pending` counted when evaluation `id` of `namespace` was created: the pending evaluations created
    /// before it (sort keys run newest first, so theirs are greater). `None` until it is in the cache.
    pub fn pending_ahead_of(&self, namespace: &str, id: Uuid) -> Option<Waiting> {
        let this = self.namespaces.get(namespace)?.views.get(&id)?;
        Some(self.waiting(namespace, this.creator.as_deref(), |view| view.key > this.key))
    }

    /// The pending evaluations `counted` selects: in all, of `creator`, in `namespace`.
    fn waiting(&self, namespace: &str, creator: Option<&str>, counted: impl Fn(&View) -> bool) -> Waiting {
        let mut waiting = Waiting::default();
        for (name, ns) in &self.namespaces {
            for view in ns.views.values().filter(|v| v.state == State::Pending && counted(v)) {
                waiting.all += 1;
                waiting.of_creator += usize::from(creator.is_some() && view.creator.as_deref() == creator);
                waiting.in_namespace += usize::from(name == namespace);
            }
        }
        waiting
    }

    pub fn states(&self) -> impl Iterator<Item = State> + '_ {
        self.namespaces.values().flat_map(|ns| ns.views.values()).map(|v| v.state)
    }
}

/// The evaluation an Evaluation object stands for, as the REST API shows it; `None` without an id.
pub fn evaluation_of(object: &EvaluationObject, site: &Site, policy: &Policy) -> Option<Evaluation> {
    let id = object.id()?;
    let created_at = object.created_at().unwrap_or(OffsetDateTime::UNIX_EPOCH);
    let mut evaluation = match &object.status {
        Some(status) if status.state.is_some() => from_status(id, status, object.request(), created_at),
        // Admitted only while the controller has written no status: a status write is not a reason to validate
        // the spec again on every replica.
        _ => match object.admit(id, site, policy, created_at) {
            Ok(new) => new.evaluation,
            Err(problem) => refused(id, object.request(), created_at, &problem),
        },
    };
    evaluation = evaluation.in_namespace(&site.namespace, site.default_namespace);
    // The object's own labels count too (kubectl get -l and ?label= agree), ours aside.
    for (key, value) in object.metadata.labels.iter().flatten() {
        if !key.starts_with("lm-eval-aas.io/") && !key.starts_with("app.kubernetes.io/") {
            evaluation.labels.entry(key.clone()).or_insert_with(|| value.clone());
        }
    }
    Some(evaluation)
}

fn from_status(
    id: Uuid,
    status: &EvaluationStatus,
    request: EvaluationRequest,
    created_at: OffsetDateTime,
) -> Evaluation {
    let time = |at: &Option<String>| at.as_deref().and_then(|at| OffsetDateTime::parse(at, &Rfc3339).ok());
    let mut evaluation =
        Evaluation::pending(id, request, status.command.clone(), time(&status.created_at).unwrap_or(created_at));
    evaluation.state = status.state.unwrap_or(State::Pending);
    evaluation.reason = status.reason;
    evaluation.message = status.message.clone();
    evaluation.started_at = time(&status.started_at);
    evaluation.finished_at = time(&status.finished_at);
    evaluation.progress = status.progress;
    evaluation.metrics = status.metrics.clone();
    evaluation
}

#[cfg(test)]
#[path = "views_tests.rs"]
mod tests;
