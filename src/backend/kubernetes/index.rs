//! The controller's facts: per evaluation, its Job, its Pods and its run record as the watches last saw them
//! (trimmed to what a status is computed from). Pure: fed watch events, asked for an evaluation's state as of a
//! clock. Only the leader keeps it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use bytes::Bytes;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::Resource;
use kube::runtime::watcher;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::k8s::run_record::RunRecord;
use crate::k8s::status;
use crate::k8s::{EVALUATION_ID_LABEL, object_name};
use crate::model::Evaluation;

/// The kinds of object the watches feed in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Job,
    Pod,
    RunRecord,
}

/// A cached object, trimmed of what the status is not computed from. Jobs and Pods are kept as their
/// trimmed JSON and read back when a status is computed (on a change, not per read): a k8s-openapi Job or Pod
/// is kilobytes inline even when trimmed, several times its JSON, and the leader holds one of each per
/// evaluation.
pub enum Stored {
    Job(Bytes),
    Pod(Bytes),
    Record(RunRecord),
}

impl From<Job> for Stored {
    fn from(mut job: Job) -> Self {
        job.metadata.managed_fields = None;
        job.spec = None;
        Stored::Job(serde_json::to_vec(&job).map(Bytes::from).unwrap_or_default())
    }
}

impl From<Pod> for Stored {
    fn from(mut pod: Pod) -> Self {
        pod.metadata.managed_fields = None;
        pod.metadata.owner_references = None;
        pod.spec = None;
        if let Some(status) = pod.status.as_mut() {
            for container in status.container_statuses.iter_mut().flatten() {
                container.image = String::new();
                container.image_id = String::new();
                container.container_id = None;
                container.volume_mounts = None;
                container.resources = None;
                container.allocated_resources = None;
            }
            status.host_ip = None;
            status.host_ips = None;
            status.pod_ip = None;
            status.pod_ips = None;
        }
        Stored::Pod(serde_json::to_vec(&pod).map(Bytes::from).unwrap_or_default())
    }
}

impl From<ConfigMap> for Stored {
    fn from(config_map: ConfigMap) -> Self {
        Stored::Record(RunRecord::from_config_map(&config_map).summary())
    }
}

/// An object's place in the index: its evaluation and its name.
type Key = (Uuid, String);

/// The keys seen so far in a relist.
pub type Relist = Option<HashSet<Key>>;

#[derive(Default)]
struct Entry {
    job: Option<Bytes>,
    pods: BTreeMap<String, Bytes>,
    // Boxed: a B-tree or hash-map slot reserves room for a whole value.
    record: Option<Box<RunRecord>>,
}

impl Entry {
    fn keys(&self, kind: Kind, id: Uuid) -> Vec<Key> {
        match kind {
            Kind::Job => self.job.iter().map(|_| (id, object_name(id))).collect(),
            Kind::Pod => self.pods.keys().map(|name| (id, name.clone())).collect(),
            Kind::RunRecord => self.record.iter().map(|_| (id, object_name(id))).collect(),
        }
    }
}

pub struct Index {
    entries: HashMap<Uuid, Entry>,
    stuck_after: Duration,
}

/// The evaluation id an object is labelled with.
pub fn evaluation_id<K: Resource>(object: &K) -> Option<Uuid> {
    object.meta().labels.as_ref()?.get(EVALUATION_ID_LABEL)?.parse().ok()
}

fn key_of<K: Resource>(object: &K) -> Option<Key> {
    Some((evaluation_id(object)?, object.meta().name.clone()?))
}

impl Index {
    pub fn new(stuck_after: Duration) -> Self {
        Self { entries: HashMap::new(), stuck_after }
    }

    /// Applies one watch event of `kind`; `relist` carries the keys seen between a relist's start and end.
    /// Returns the evaluations it touched.
    pub fn apply<K: Resource + Into<Stored>>(
        &mut self,
        kind: Kind,
        event: watcher::Event<K>,
        relist: &mut Relist,
    ) -> Vec<Uuid> {
        let mut touched = Vec::new();
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
            }
        }
        touched
    }

    /// Records a Job this replica has just written, before its watch says so.
    pub fn job_written(&mut self, job: Job) {
        if let Some(key) = key_of(&job) {
            self.store(&key, job.into());
        }
    }

    pub fn job(&self, id: Uuid) -> Option<Job> {
        serde_json::from_slice(self.entries.get(&id)?.job.as_ref()?).ok()
    }

    fn pods(entry: &Entry) -> Vec<Pod> {
        entry.pods.values().filter_map(|json| serde_json::from_slice(json).ok()).collect()
    }

    /// The evaluation as of `now`, from what the watches have seen; `None` without its Job.
    pub fn evaluation(&self, id: Uuid, now: OffsetDateTime) -> Option<Evaluation> {
        let entry = self.entries.get(&id)?;
        let job: Job = serde_json::from_slice(entry.job.as_ref()?).ok()?;
        let pods = Self::pods(entry);
        let pods: Vec<&Pod> = pods.iter().collect();
        status::evaluation(&job, &pods, entry.record.as_deref(), now, self.stuck_after)
    }

    /// How many Jobs are still running or about to (not ended, not suspended by a cancel or a failure).
    pub fn unfinished_jobs(&self) -> usize {
        self.entries
            .values()
            .filter_map(|entry| serde_json::from_slice::<Job>(entry.job.as_ref()?).ok())
            .filter(|job| !crate::k8s::status::job_is_over(job))
            .count()
    }

    /// Whether the watches know a pod of evaluation `id`.
    pub fn has_pod(&self, id: Uuid) -> bool {
        self.entries.get(&id).is_some_and(|entry| !entry.pods.is_empty())
    }

    /// When evaluation `id`'s waiting pod will count as stuck, if it waits on something that does not clear.
    pub fn stuck_at(&self, id: Uuid) -> Option<OffsetDateTime> {
        let pods = Self::pods(self.entries.get(&id)?);
        let pods: Vec<&Pod> = pods.iter().collect();
        status::stuck_at(&pods, self.stuck_after)
    }

    fn store(&mut self, (id, name): &Key, object: Stored) {
        let entry = self.entries.entry(*id).or_default();
        match object {
            Stored::Job(job) => entry.job = Some(job),
            Stored::Pod(pod) => {
                entry.pods.insert(name.clone(), pod);
            }
            Stored::Record(record) => entry.record = Some(Box::new(record)),
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
        if entry.job.is_none() && entry.pods.is_empty() && entry.record.is_none() {
            self.entries.remove(id);
        }
    }
}

#[cfg(test)]
#[path = "index_tests.rs"]
mod tests;
