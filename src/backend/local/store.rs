//! The local backend's in-memory index of its records: reads, listing, the queue and the count of
//! running evaluations. Pure: the records come from and go to disk elsewhere.

use std::collections::{BTreeMap, HashMap, VecDeque};

use bytes::Bytes;
use time::OffsetDateTime;
use uuid::Uuid;

use super::record::Record;
use crate::backend::{ListQuery, Listable, SortKey, paginate, sort_key};
use crate::driver::lock::DriverState;
use crate::error::{ApiError, ApiResult};
use crate::model::{Evaluation, EvaluationList, State};

/// One evaluation in memory: its JSON exactly as served (reads copy nothing), and the few fields that
/// listing and control look at. Compact, so a large history costs little memory.
pub struct Slot {
    pub json: Bytes,
    pub state: State,
    labels: Box<[(Box<str>, Box<str>)]>,
    control: super::record::Control,
}

impl Slot {
    fn new(record: &Record) -> Self {
        let evaluation = &record.evaluation;
        Self {
            json: serde_json::to_vec(evaluation).map(Bytes::from).unwrap_or_default(),
            state: evaluation.state,
            labels: evaluation.labels.iter().map(|(k, v)| (k.as_str().into(), v.as_str().into())).collect(),
            control: record.control.clone(),
        }
    }

    pub fn record(&self) -> Option<Record> {
        Some(Record { evaluation: self.evaluation().ok()?, control: self.control.clone() })
    }

    pub fn control(&self) -> &super::record::Control {
        &self.control
    }
}

impl Listable for Slot {
    fn state(&self) -> State {
        self.state
    }

    fn has_label(&self, key: &str, value: &str) -> bool {
        self.labels.iter().any(|(k, v)| &**k == key && &**v == value)
    }

    fn created_by(&self) -> Option<&str> {
        self.control.creator.as_deref()
    }

    fn evaluation(&self) -> ApiResult<Evaluation> {
        serde_json::from_slice(&self.json).map_err(ApiError::internal)
    }
}

/// What to do with a record found on disk at start-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Adopted {
    /// Pending: queued again, in creation order.
    Queued,
    /// Its process still runs: watch it to its end (it holds a running slot).
    Running,
    /// It was running and its process is gone: settle how it ended.
    Ended,
    /// Already finished.
    Finished,
}

#[derive(Default)]
pub struct Store {
    records: HashMap<Uuid, Slot>,
    order: BTreeMap<SortKey, Uuid>,
    queue: VecDeque<Uuid>,
    running: usize,
}

impl Store {
    pub fn insert(&mut self, record: &Record) {
        let id = record.evaluation.id;
        if let Some(old) = self.records.insert(id, Slot::new(record))
            && let Ok(evaluation) = old.evaluation()
        {
            self.order.remove(&sort_key(&evaluation));
        }
        self.order.insert(sort_key(&record.evaluation), id);
    }

    /// Adds a new evaluation to the end of the queue.
    pub fn enqueue(&mut self, record: &Record) {
        self.insert(record);
        self.queue.push_back(record.evaluation.id);
    }

    /// Takes in a record found at start-up (oldest first), given what its driver lock says: a live driver makes
    /// it running whatever the record says; a claim whose driver never ran goes back to the queue; one whose driver
    /// ran and is gone has ended.
    pub fn adopt(&mut self, record: &mut Record, driver: DriverState, now: OffsetDateTime) -> Adopted {
        let adopted = match (record.evaluation.state, driver) {
            (state, _) if state.is_terminal() => Adopted::Finished,
            (_, DriverState::Live(_)) => {
                record.evaluation.state = State::Running;
                record.evaluation.started_at = record.evaluation.started_at.or(Some(now));
                self.running += 1;
                Adopted::Running
            }
            (_, DriverState::NeverStarted) => {
                record.evaluation.state = State::Pending;
                record.evaluation.started_at = None;
                record.control.process = None;
                self.queue.push_back(record.evaluation.id);
                Adopted::Queued
            }
            (_, DriverState::Gone) => Adopted::Ended,
        };
        self.insert(record);
        adopted
    }

    pub fn slot(&self, id: Uuid) -> ApiResult<&Slot> {
        self.records.get(&id).ok_or_else(|| ApiError::NotFound(id.to_string()))
    }

    pub fn record(&self, id: Uuid) -> Option<Record> {
        self.records.get(&id)?.record()
    }

    /// Applies `change` to the evaluation `id`; returns the updated record.
    pub fn update(&mut self, id: Uuid, change: impl FnOnce(&mut Record)) -> Option<Record> {
        let slot = self.records.get_mut(&id)?;
        let mut record = slot.record()?;
        change(&mut record);
        *slot = Slot::new(&record);
        Some(record)
    }

    /// Puts an updated record back, unless the evaluation was deleted meanwhile.
    pub fn replace(&mut self, record: &Record) -> bool {
        match self.records.get_mut(&record.evaluation.id) {
            Some(slot) => {
                *slot = Slot::new(record);
                true
            }
            None => false,
        }
    }

    pub fn remove(&mut self, id: Uuid) {
        let Some(slot) = self.records.remove(&id) else { return };
        if let Ok(evaluation) = slot.evaluation() {
            self.order.remove(&sort_key(&evaluation));
        }
        self.queue.retain(|q| *q != id);
    }

    /// The next queued evaluation, marked running at `now`, if fewer than `max_running` run.
    pub fn start_next(&mut self, max_running: usize, now: OffsetDateTime) -> Option<Record> {
        while self.running < max_running {
            let id = self.queue.pop_front()?;
            if self.records.get(&id).is_some_and(|slot| slot.state == State::Pending) {
                self.running += 1;
                return self.update(id, |record| {
                    record.evaluation.state = State::Running;
                    record.evaluation.started_at = Some(now);
                });
            }
        }
        None
    }

    /// A running evaluation has ended (or was never started): its slot is free.
    pub fn release(&mut self) {
        self.running = self.running.saturating_sub(1);
    }

    /// Cancels an evaluation still waiting in the queue; `None` if it has left the queue.
    pub fn cancel_pending(&mut self, id: Uuid, now: OffsetDateTime) -> Option<Record> {
        self.queue.retain(|q| *q != id);
        if self.records.get(&id)?.state != State::Pending {
            return None;
        }
        self.update(id, |record| record.cancel_unstarted(now))
    }

    pub fn list(&self, query: &ListQuery) -> ApiResult<EvaluationList> {
        paginate(self.order.iter().filter_map(|(key, id)| Some((key, self.records.get(id)?))), query)
    }

    /// How many evaluations are pending, and how many of them `creator` submitted.
    pub fn pending(&self, creator: &str) -> (usize, usize) {
        let pending = self.records.values().filter(|slot| slot.state == State::Pending);
        pending.fold((0, 0), |(all, mine), slot| {
            (all + 1, mine + usize::from(slot.control.creator.as_deref() == Some(creator)))
        })
    }

    pub fn states(&self) -> impl Iterator<Item = State> + '_ {
        self.records.values().map(|slot| slot.state)
    }
}

#[cfg(test)]
mod tests {
    use super::super::record::{Control, StopReason};
    use super::*;
    use crate::model::{EvaluationRequest, Reason};

    const T0: OffsetDateTime = time::macros::datetime!(2026-11-30 12:00 UTC);

    fn record(n: u128, state: State) -> Record {
        let request: EvaluationRequest = serde_json::from_value(
            serde_json::json!({"model": "dummy", "tasks": ["t"], "labels": {"n": n.to_string()}}),
        )
        .expect("request");
        let mut evaluation =
            Evaluation::pending(Uuid::from_u128(n), request, vec![], T0 + time::Duration::seconds(n as i64));
        evaluation.state = state;
        Record { evaluation, control: Control::default() }
    }

    fn ids(store: &Store, query: &ListQuery) -> Vec<u128> {
        store.list(query).expect("list").items.iter().map(|e| e.id.as_u128()).collect()
    }

    #[test]
    fn the_queue_starts_in_order_within_the_limit() {
        let mut store = Store::default();
        for n in 1..=3 {
            store.enqueue(&record(n, State::Pending));
        }
        let first = store.start_next(2, T0).expect("first");
        assert_eq!((first.evaluation.id.as_u128(), first.evaluation.state), (1, State::Running));
        assert_eq!(first.evaluation.started_at, Some(T0));
        assert_eq!(store.start_next(2, T0).map(|r| r.evaluation.id.as_u128()), Some(2));
        assert!(store.start_next(2, T0).is_none(), "two run at most");
        store.release();
        assert_eq!(store.start_next(2, T0).map(|r| r.evaluation.id.as_u128()), Some(3));
        assert_eq!(store.slot(Uuid::from_u128(3)).expect("slot").state, State::Running);
    }

    #[test]
    fn a_cancelled_or_deleted_pending_evaluation_is_skipped() {
        let mut store = Store::default();
        for n in 1..=3 {
            store.enqueue(&record(n, State::Pending));
        }
        let cancelled = store.cancel_pending(Uuid::from_u128(1), T0).expect("cancelled");
        assert_eq!(
            (cancelled.evaluation.state, cancelled.evaluation.reason),
            (State::Cancelled, Some(Reason::Cancelled))
        );
        assert_eq!(cancelled.control.stopping, Some(StopReason::Cancelled));
        store.remove(Uuid::from_u128(2));
        assert_eq!(store.start_next(4, T0).map(|r| r.evaluation.id.as_u128()), Some(3));
        assert!(store.cancel_pending(Uuid::from_u128(3), T0).is_none(), "it has started");
        assert!(store.slot(Uuid::from_u128(2)).is_err());
    }

    #[test]
    fn a_restart_re_adopts_each_record_by_its_driver_lock() {
        let mut store = Store::default();
        let mut adopt = |n, state, driver| store.adopt(&mut record(n, state), driver, T0);
        assert_eq!(adopt(1, State::Succeeded, DriverState::Gone), Adopted::Finished);
        assert_eq!(adopt(2, State::Running, DriverState::Live(Some(7))), Adopted::Running);
        assert_eq!(adopt(3, State::Running, DriverState::Gone), Adopted::Ended);
        assert_eq!(adopt(4, State::Pending, DriverState::NeverStarted), Adopted::Queued);
        assert_eq!(
            adopt(5, State::Pending, DriverState::Live(None)),
            Adopted::Running,
            "a live driver is never doubled"
        );
        assert_eq!(adopt(6, State::Running, DriverState::NeverStarted), Adopted::Queued, "claimed, never started");
        assert_eq!(store.slot(Uuid::from_u128(5)).expect("slot").state, State::Running);
        assert_eq!(store.slot(Uuid::from_u128(6)).expect("slot").state, State::Pending);
        // The live ones hold the only slots; the pending ones wait for them.
        assert!(store.start_next(2, T0).is_none());
        store.release();
        assert_eq!(store.start_next(2, T0).map(|r| r.evaluation.id.as_u128()), Some(4));
        store.release();
        assert_eq!(store.start_next(2, T0).map(|r| r.evaluation.id.as_u128()), Some(6));
        assert_eq!(ids(&store, &ListQuery { page_size: 10, ..ListQuery::default() }), [6, 5, 4, 3, 2, 1]);
    }

    #[test]
    fn lists_newest_first_with_filters_and_pages() {
        let mut store = Store::default();
        for n in 1..=5 {
            store.insert(&record(n, if n % 2 == 0 { State::Failed } else { State::Succeeded }));
        }
        let page = store.list(&ListQuery { page_size: 2, ..ListQuery::default() }).expect("list");
        assert_eq!(page.items.iter().map(|e| e.id.as_u128()).collect::<Vec<_>>(), [5, 4]);
        let rest = ListQuery { page_size: 10, page_token: page.next_page_token, ..ListQuery::default() };
        assert_eq!(ids(&store, &rest), [3, 2, 1]);
        assert_eq!(
            ids(&store, &ListQuery { page_size: 10, state: Some(State::Failed), ..ListQuery::default() }),
            [4, 2]
        );
        let labelled = ListQuery { page_size: 10, labels: vec![("n".into(), "3".into())], ..ListQuery::default() };
        assert_eq!(ids(&store, &labelled), [3]);
        let mut updated = record(3, State::Succeeded);
        updated.evaluation.message = Some("re-read".into());
        assert!(store.replace(&updated));
        assert_eq!(store.record(Uuid::from_u128(3)).expect("record").evaluation.message.as_deref(), Some("re-read"));
        store.remove(Uuid::from_u128(3));
        assert!(!store.replace(&updated), "a deleted evaluation is not brought back");
        assert_eq!(crate::backend::count_by_state(store.states())[&State::Failed], 2);
    }

    #[test]
    fn pending_evaluations_are_counted_in_all_and_by_creator() {
        let mut store = Store::default();
        for n in 1..=4 {
            let mut pending = record(n, State::Pending);
            pending.control.creator = Some(if n == 1 { "10.0.0.1" } else { "10.0.0.2" }.into());
            store.enqueue(&pending);
        }
        store.insert(&record(5, State::Succeeded));
        assert_eq!(store.pending("10.0.0.2"), (4, 3));
        store.start_next(1, T0);
        assert_eq!(store.pending("10.0.0.1"), (3, 0), "the first has started");
    }
}
