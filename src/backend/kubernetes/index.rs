//! The controller's facts: per evaluation, its Job, its Pods and its run record as the watches last saw them
//! (trimmed to what a status is computed from). Pure: fed watch events, asked for an evaluation's state as of a
//! clock. Only the leader keeps it.
//!
//! An object belongs to an evaluation by its name and its owner, never by a label (a runner may write its own
//! record, and whoever may create objects in the namespace may label them as they like): the Job and the run
//! record are the ones named `lmeval-<id>`, the pods those the Job controls. An object is filed under the
//! evaluation its name says, and counts only when its owner is that evaluation's: the Job's owner is the
//! Evaluation (its uid), a pod's the Job (its uid), the record's the Evaluation (or, for records of an earlier
//! release, its Job).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use bytes::Bytes;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::Resource;
use kube::runtime::watcher;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::k8s::object_name;
use crate::k8s::run_record::RunRecord;
use crate::k8s::status;
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
    Record(Owned<RunRecord>),
}

/// A cached object with the uids of its owners.
pub struct Owned<T> {
    owners: Vec<String>,
    object: T,
}

impl<T> Owned<T> {
    fn owned_by(&self, uid: &str) -> bool {
        self.owners.iter().any(|owner| owner == uid)
    }
}

fn owner_uids(meta: &ObjectMeta) -> Vec<String> {
    meta.owner_references.iter().flatten().map(|o| o.uid.clone()).collect()
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
        pod.metadata.owner_references = pod
            .metadata
            .owner_references
            .map(|owners| owners.into_iter().filter(|o| o.controller == Some(true)).collect());
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
        Stored::Record(Owned {
            owners: owner_uids(&config_map.metadata),
            object: RunRecord::from_config_map(&config_map).summary(),
        })
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
    record: Option<Box<Owned<RunRecord>>>,
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

/// The evaluation `name` is the Job's and the run record's name of (`lmeval-<id>`), if it is one.
pub fn named_id(name: &str) -> Option<Uuid> {
    let id: Uuid = name.strip_prefix("lmeval-")?.parse().ok()?;
    (object_name(id) == name).then_some(id)
}

/// The evaluation an object is filed under, by its name (a Job, a run record) or its controlling Job's (a pod).
/// Whether it counts is decided by its owner's uid, when a status is computed.
pub fn evaluation_of<K: Resource>(kind: Kind, object: &K) -> Option<Uuid> {
    let meta = object.meta();
    match kind {
        Kind::Job | Kind::RunRecord => named_id(meta.name.as_deref()?),
        Kind::Pod => named_id(&controlling_job(meta)?.name),
    }
}

fn controlling_job(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true) && o.kind == "Job" && o.api_version == "batch/v1")
}

fn key_of<K: Resource>(kind: Kind, object: &K) -> Option<Key> {
    Some((evaluation_of(kind, object)?, object.meta().name.clone()?))
}

/// What an evaluation's status is computed from: its Job, if the Evaluation owns it, with the pods that Job
/// controls and the record the Evaluation (or that Job) owns.
struct Bound<'a> {
    job: Job,
    pods: Vec<Pod>,
    record: Option<&'a RunRecord>,
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
                if let Some(key) = key_of(kind, &object) {
                    if let Some(seen) = relist.as_mut() {
                        seen.insert(key.clone());
                    }
                    self.store(&key, object.into());
                    touched.push(key.0);
                }
            }
            watcher::Event::Delete(object) => {
                if let Some(key) = key_of(kind, &object) {
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
        if let Some(key) = key_of(Kind::Job, &job) {
            self.store(&key, job.into());
        }
    }

    /// Evaluation `id`'s Job, if the Evaluation whose uid is `owner` owns it.
    pub fn job(&self, id: Uuid, owner: &str) -> Option<Job> {
        let job: Job = serde_json::from_slice(self.entries.get(&id)?.job.as_ref()?).ok()?;
        owner_uids(&job.metadata).iter().any(|uid| uid == owner).then_some(job)
    }

    fn bound(&self, id: Uuid, owner: &str) -> Option<Bound<'_>> {
        let entry = self.entries.get(&id)?;
        let job = self.job(id, owner)?;
        let job_uid = job.metadata.uid.clone().unwrap_or_default();
        let pods = entry
            .pods
            .values()
            .filter_map(|json| serde_json::from_slice::<Pod>(json).ok())
            .filter(|pod| controlling_job(&pod.metadata).is_some_and(|o| !job_uid.is_empty() && o.uid == job_uid))
            .collect();
        let record = entry
            .record
            .as_deref()
            .filter(|r| r.owned_by(owner) || (!job_uid.is_empty() && r.owned_by(&job_uid)))
            .map(|r| &r.object);
        Some(Bound { job, pods, record })
    }

    /// The evaluation as of `now`, from what the watches have seen of the objects of the Evaluation whose uid is
    /// `owner`; `None` without its Job.
    pub fn evaluation(&self, id: Uuid, owner: &str, now: OffsetDateTime) -> Option<Evaluation> {
        let bound = self.bound(id, owner)?;
        let pods: Vec<&Pod> = bound.pods.iter().collect();
        status::evaluation(&bound.job, &pods, bound.record, now, self.stuck_after)
    }

    /// How many Jobs are still running or about to (not ended, not suspended by a cancel or a failure).
    pub fn unfinished_jobs(&self) -> usize {
        self.entries
            .values()
            .filter_map(|entry| serde_json::from_slice::<Job>(entry.job.as_ref()?).ok())
            .filter(|job| !crate::k8s::status::job_is_over(job))
            .count()
    }

    /// Whether the watches know a pod of evaluation `id` (of the Evaluation whose uid is `owner`).
    pub fn has_pod(&self, id: Uuid, owner: &str) -> bool {
        self.bound(id, owner).is_some_and(|bound| !bound.pods.is_empty())
    }

    /// When evaluation `id`'s waiting pod will count as stuck, if it waits on something that does not clear.
    pub fn stuck_at(&self, id: Uuid, owner: &str) -> Option<OffsetDateTime> {
        let bound = self.bound(id, owner)?;
        let pods: Vec<&Pod> = bound.pods.iter().collect();
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
