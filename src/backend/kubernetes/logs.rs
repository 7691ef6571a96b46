//! Evaluation logs on Kubernetes: `pods/log` of its newest started pod while there is one, else the copy in its
//! run record. Following waits for the pod to start (re-asking when the evaluation's state changes, and every few
//! seconds) and ends when the evaluation does. Pods and records are asked for, not cached: only the leader
//! caches them, and any replica serves logs.

use std::sync::Arc;
use std::time::Duration;

use futures::AsyncReadExt;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::Api;
use kube::api::LogParams;
use uuid::Uuid;

use super::{Shared, pods_of};
use crate::backend::LogOptions;
use crate::k8s::job::CONTAINER;
use crate::k8s::run_record::RunRecord;
use crate::k8s::{object_name, status};
use crate::log_lines::{Lines, cut_line};
use crate::outputs::index::LOG;
use crate::outputs::store::OutputStore;
use crate::outputs::stored_log_lines;
use futures::StreamExt;

/// How long a follower waits for a pod to start before asking again, without a change of the evaluation.
const ASK_AGAIN: Duration = Duration::from_secs(3);

pub(super) async fn stream(
    shared: Arc<Shared>,
    namespace: String,
    id: Uuid,
    options: LogOptions,
    tx: tokio::sync::mpsc::Sender<String>,
) {
    let mut changes = shared.changes.subscribe();
    loop {
        let Some(state) = shared.state_of(&namespace, id) else { return };
        let terminal = state.is_terminal();
        if let Some(pod) = started_pod(&shared, &namespace, id).await {
            let params = LogParams {
                container: Some(CONTAINER.into()),
                follow: options.follow && !terminal,
                tail_lines: options.tail_lines.map(|n| i64::try_from(n).unwrap_or(i64::MAX)),
                ..LogParams::default()
            };
            let pods: Api<Pod> = Api::namespaced(shared.client.clone(), &namespace);
            if let Ok(reader) = pods.log_stream(&pod, &params).await {
                send_pod_log(reader, &tx).await;
                return;
            }
        }
        if !options.follow || terminal {
            send_recorded(&shared, &namespace, id, options, &tx).await;
            return;
        }
        // Views change for every evaluation of every namespace: ask the API server again only once this one's
        // state has moved (its pod started, or it ended), or after a while.
        let asked = tokio::time::Instant::now();
        loop {
            tokio::select! {
                changed = changes.changed() => if changed.is_err() { return },
                () = tokio::time::sleep_until(asked + ASK_AGAIN) => break,
                () = tx.closed() => return,
            }
            if shared.state_of(&namespace, id).is_none_or(|now| now != state) {
                break;
            }
        }
    }
}

/// Sends a pod's log as lines, each cut at `MAX_LINE_BYTES`: read in chunks, so a line without an end is never
/// held whole.
async fn send_pod_log(reader: impl futures::AsyncRead, tx: &tokio::sync::mpsc::Sender<String>) {
    let mut reader = std::pin::pin!(reader);
    let mut lines = Lines::default();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let read = match reader.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(read) => read,
        };
        for line in lines.push(&chunk[..read]) {
            if tx.send(line).await.is_err() {
                return;
            }
        }
    }
    if let Some(rest) = lines.rest() {
        let _ = tx.send(rest).await;
    }
}

/// The newest of the evaluation's pods whose container has started (so it has a log).
async fn started_pod(shared: &Shared, namespace: &str, id: Uuid) -> Option<String> {
    let pods = pods_of(shared, namespace, id).await.ok()?;
    let started: Vec<&Pod> = pods.iter().filter(|p| status::has_started(p)).collect();
    status::newest(&started)?.metadata.name.clone()
}

/// The end of the log the driver kept in the run record, once the pod is gone.
async fn send_recorded(
    shared: &Shared,
    namespace: &str,
    id: Uuid,
    options: LogOptions,
    tx: &tokio::sync::mpsc::Sender<String>,
) {
    if let Some(objects) = &shared.config.output_store.objects {
        let dir = OutputStore::dir(namespace, &id.to_string());
        if let Ok(Some(size)) = objects.size(&dir, LOG).await
            && let Ok(mut lines) = stored_log_lines(objects, &dir, size, options.tail_lines).await
        {
            while let Some(line) = lines.next().await {
                if tx.send(line).await.is_err() {
                    return;
                }
            }
            return;
        }
    }
    let config_maps: Api<ConfigMap> = Api::namespaced(shared.client.clone(), namespace);
    let Ok(Some(record)) = shared.call(config_maps.get_opt(&object_name(id))).await else { return };
    let tail = RunRecord::from_config_map(&record).log_tail.unwrap_or_default();
    let lines: Vec<&str> = tail.lines().collect();
    let skip = options.tail_lines.map_or(0, |n| lines.len().saturating_sub(n));
    for line in &lines[skip..] {
        if tx.send(cut_line(line).into_owned()).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_pods_log_is_sent_as_cut_lines() {
        let mut log = b"first\n".to_vec();
        log.extend(std::iter::repeat_n(b'x', 3 * 1024 * 1024));
        log.extend_from_slice(b"\nlast without an end");
        let (tx, mut rx) = tokio::sync::mpsc::channel(16);
        send_pod_log(futures::io::Cursor::new(log), &tx).await;
        drop(tx);
        let mut lines = Vec::new();
        while let Some(line) = rx.recv().await {
            lines.push(line);
        }
        assert_eq!(lines.len(), 3);
        assert_eq!((lines[0].as_str(), lines[2].as_str()), ("first", "last without an end"));
        assert!(lines[1].ends_with(&format!("[line cut at 65536 of its {} bytes]", 3 * 1024 * 1024)));
        assert!(lines[1].len() < crate::log_lines::MAX_LINE_BYTES + 100);
    }
}
