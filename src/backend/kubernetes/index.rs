//! The joined cache of the Kubernetes backend: per evaluation, its Job, its Pods and its run record as the
//! watches last saw them, and the evaluation computed from them. Pure: it is fed watch events and a clock,
//! and answers reads; the watches themselves and every write are elsewhere.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use bytes::Bytes;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::Resource;
use kube::runtime::watcher;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::backend::{ListQuery, Listable, SortKey, paginate, sort_key};
use crate::error::{ApiError, ApiResult};
use crate::k8s::run_record::RunRecord;
use crate::k8s::status::{self, STUCK_REASONS};
use crate::k8s::{CREATOR_ANNOTATION, EVALUATION_ID_LABEL, object_name};
use crate::model::{Evaluation, EvaluationList, Reason, State};

/// The kinds of object the watches feed in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Job = 0,
    Pod = 1,
    RunRecord = 2,
}

impl Kind {
    pub fn plural(self) -> &'static str {
        match self {
            Kind::Job => "jobs",
            Kind::Pod => "pods",
            Kind::RunRecord => "configmaps",
        }
    }
}

/// A cached object, trimmed of what the service never reads.
pub enum Stored {
    Job(Box<Job>),
    Pod(Box<Pod>),
    Record(RunRecord),
}

impl From<Job> for Stored {
    fn from(mut job: Job) -> Self {
        job.metadata.managed_fields = None;
        if let Some(spec) = job.spec.as_mut() {
            spec.template = Default::default();
        }
        Stored::Job(Box::new(job))
    }
}

impl From<Pod> for Stored {
    fn from(mut pod: Pod) -> Self {
        pod.metadata.managed_fields = None;
        pod.spec = None;
        Stored::Pod(Box::new(pod))
    }
}

impl From<ConfigMap> for Stored {
    fn from(config_map: ConfigMap) -> Self {
        Stored::Record(RunRecord::from_config_map(&config_map))
    }
}

/// An object's place in the index: its evaluation and its name.
type Key = (Uuid, String);

/// The keys seen so far in a relist, to drop what the relist no longer has.
pub type Relist = Option<HashSet<Key>>;

#[derive(Default)]
struct Entry {
    job: Option<Job>,
    pods: BTreeMap<String, Pod>,
    record: Option<RunRecord>,
    view: Option<View>,
}

/// The evaluation as served: computed once per change, so reads copy bytes and nothing else.
pub struct View {
    pub evaluation: Evaluation,
    pub json: Bytes,
    key: SortKey,
}

impl Listable for View {
    fn state(&self) -> State {
        self.evaluation.state
    }

    fn has_label(&self, key: &str, value: &str) -> bool {
        self.evaluation.labels.get(key).is_some_and(|v| v == value)
    }

    fn evaluation(&self) -> ApiResult<Evaluation> {
        Ok(self.evaluation.clone())
    }
}

impl Entry {
    /// The evaluation as of `now`, from what the watches have seen; `None` without its Job.
    fn evaluation(&self, now: OffsetDateTime, stuck_after: Duration) -> Option<Evaluation> {
        let pods: Vec<&Pod> = self.pods.values().collect();
        status::evaluation(self.job.as_ref()?, &pods, self.record.as_ref(), now, stuck_after)
    }

    fn keys(&self, kind: Kind, id: Uuid) -> Vec<Key> {
        match kind {
            Kind::Job => self.job.iter().map(|_| (id, object_name(id))).collect(),
            Kind::Pod => self.pods.keys().map(|name| (id, name.clone())).collect(),
            Kind::RunRecord => self.record.iter().map(|_| (id, object_name(id))).collect(),
        }
    }
}

/// Where a log can be read from at the moment.
pub struct LogSource {
    /// The newest pod whose container has started.
    pub pod: Option<String>,
    pub terminal: bool,
    /// The run record's copy of the log's end.
    pub tail: Option<String>,
}

/// A pending evaluation whose pod has waited too long: to be failed with this reason and message.
pub struct Stuck {
    pub id: Uuid,
    pub reason: Reason,
    pub message: String,
}

pub struct Index {
    entries: HashMap<Uuid, Entry>,
    order: BTreeMap<SortKey, Uuid>,
    stuck_after: Duration,
}

fn key_of<K: Resource>(object: &K) -> Option<Key> {
    let id = object.meta().labels.as_ref()?.get(EVALUATION_ID_LABEL)?.parse().ok()?;
    Some((id, object.meta().name.clone()?))
}

impl Index {
    pub fn new(stuck_after: Duration) -> Self {
        Self { entries: HashMap::new(), order: BTreeMap::new(), stuck_after }
    }

    /// Applies one watch event of `kind` as of `now`; returns whether it completed a relist (the watch
    /// is then in sync). `relist` carries the keys seen between a relist's start and end.
    pub fn apply<K: Resource + Into<Stored>>(
        &mut self,
        kind: Kind,
        event: watcher::Event<K>,
        relist: &mut Relist,
        now: OffsetDateTime,
    ) -> bool {
        let mut touched = Vec::new();
        let mut synced = false;
        match event {
            watcher::Event::Init => *relist = Some(HashSet::new()),
            watcher::Event::InitApply(object) | watcher::Event::Apply(object) => {
                if let Some(key) = key_of(&object) {
                    if let Some(seen) = relist.as_mut() {
                        seen.insert(key.clone());
                    }
                    self.store(&key, object.into());
                    touched.push(key.0);
                }
            }
            watcher::Event::Delete(object) => {
                if let Some(key) = key_of(&object) {
                    self.remove(kind, &key);
                    touched.push(key.0);
                }
            }
            watcher::Event::InitDone => {
                if let Some(seen) = relist.take() {
                    let stale: Vec<Key> = self
                        .entries
                        .iter()
                        .flat_map(|(id, entry)| entry.keys(kind, *id))
                        .filter(|key| !seen.contains(key))
                        .collect();
                    for key in stale {
                        self.remove(kind, &key);
                        touched.push(key.0);
                    }
                }
                synced = true;
            }
        }
        for id in touched {
            self.refresh(id, now);
        }
        synced
    }

    /// Forgets a Job this replica has deleted, before its watch says so.
    pub fn forget_job(&mut self, id: Uuid, now: OffsetDateTime) {
        self.remove(Kind::Job, &(id, object_name(id)));
        self.refresh(id, now);
    }

    pub fn view(&self, id: Uuid) -> ApiResult<&View> {
        self.entries.get(&id).and_then(|e| e.view.as_ref()).ok_or_else(|| ApiError::NotFound(id.to_string()))
    }

    pub fn list(&self, query: &ListQuery) -> ApiResult<EvaluationList> {
        paginate(self.order.iter().filter_map(|(key, id)| Some((key, self.entries.get(id)?.view.as_ref()?))), query)
    }

    /// How many evaluations are pending, and how many of them `creator` submitted.
    pub fn pending(&self, creator: &str) -> (usize, usize) {
        let pending =
            self.entries.values().filter(|e| e.view.as_ref().is_some_and(|v| v.evaluation.state == State::Pending));
        pending.fold((0, 0), |(all, mine), entry| {
            let annotations = entry.job.as_ref().and_then(|job| job.metadata.annotations.as_ref());
            let by = annotations.and_then(|a| a.get(CREATOR_ANNOTATION)).map(String::as_str);
            (all + 1, mine + usize::from(by == Some(creator)))
        })
    }

    pub fn states(&self) -> impl Iterator<Item = State> + '_ {
        self.entries.values().filter_map(|e| Some(e.view.as_ref()?.evaluation.state))
    }

    /// The results JSON the run record holds.
    pub fn results(&self, id: Uuid) -> Option<Bytes> {
        self.entries.get(&id)?.record.as_ref()?.results.clone()
    }

    pub fn log_source(&self, id: Uuid) -> Option<LogSource> {
        let entry = self.entries.get(&id)?;
        let started: Vec<&Pod> = entry.pods.values().filter(|p| status::has_started(p)).collect();
        Some(LogSource {
            pod: status::newest(&started).and_then(|p| p.metadata.name.clone()),
            terminal: entry.view.as_ref().is_none_or(|v| v.evaluation.state.is_terminal()),
            tail: entry.record.as_ref().and_then(|r| r.log_tail.clone()),
        })
    }

    /// Pending evaluations whose pod has, by `now`, waited too long for something that will not come.
    pub fn stuck(&self, now: OffsetDateTime) -> Vec<Stuck> {
        self.entries
            .iter()
            .filter_map(|(id, entry)| {
                let view = entry.view.as_ref()?;
                if view.evaluation.state != State::Pending || !STUCK_REASONS.contains(&view.evaluation.reason?) {
                    return None;
                }
                let current = entry.evaluation(now, self.stuck_after)?;
                (current.state == State::Failed).then(|| Stuck {
                    id: *id,
                    reason: current.reason.unwrap_or(Reason::Unschedulable),
                    message: current.message.unwrap_or_default(),
                })
            })
            .collect()
    }

    fn store(&mut self, (id, name): &Key, object: Stored) {
        let entry = self.entries.entry(*id).or_default();
        match object {
            Stored::Job(job) => entry.job = Some(*job),
            Stored::Pod(pod) => {
                entry.pods.insert(name.clone(), *pod);
            }
            Stored::Record(record) => entry.record = Some(record),
        }
    }

    fn remove(&mut self, kind: Kind, (id, name): &Key) {
        let Some(entry) = self.entries.get_mut(id) else { return };
        match kind {
            Kind::Job => entry.job = None,
            Kind::Pod => {
                entry.pods.remove(name);
            }
            Kind::RunRecord => entry.record = None,
        }
    }

    fn refresh(&mut self, id: Uuid, now: OffsetDateTime) {
        let Some(entry) = self.entries.get_mut(&id) else { return };
        if let Some(old) = entry.view.take() {
            self.order.remove(&old.key);
        }
        let view = entry.evaluation(now, self.stuck_after).and_then(|evaluation| {
            let json = Bytes::from(serde_json::to_vec(&evaluation).ok()?);
            Some(View { key: sort_key(&evaluation), evaluation, json })
        });
        if let Some(view) = &view {
            self.order.insert(view.key, id);
        }
        entry.view = view;
        if entry.job.is_none() && entry.pods.is_empty() && entry.record.is_none() {
            self.entries.remove(&id);
        }
    }
}

#[cfg(test)]
#[path = "index_tests.rs"]
mod tests;
