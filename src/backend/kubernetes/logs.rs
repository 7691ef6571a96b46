//! Evaluation logs on Kubernetes: `pods/log` while there is a pod with a started container, else the copy
//! in the run record. Following waits for the pod to start and ends when the evaluation does.

use std::sync::Arc;

use futures::{AsyncBufReadExt, TryStreamExt};
use kube::api::LogParams;
use uuid::Uuid;

use super::Shared;
use crate::backend::LogOptions;
use crate::k8s::job::CONTAINER;

pub(super) async fn stream(shared: Arc<Shared>, id: Uuid, options: LogOptions, tx: tokio::sync::mpsc::Sender<String>) {
    let mut changes = shared.changes.subscribe();
    loop {
        let Some(source) = shared.index.read().log_source(id) else { return };
        if let Some(pod) = source.pod {
            let params = LogParams {
                container: Some(CONTAINER.into()),
                follow: options.follow,
                tail_lines: options.tail_lines.map(|n| i64::try_from(n).unwrap_or(i64::MAX)),
                ..LogParams::default()
            };
            if let Ok(reader) = shared.pods.log_stream(&pod, &params).await {
                let mut lines = std::pin::pin!(reader.lines());
                while let Ok(Some(line)) = lines.try_next().await {
                    if tx.send(line).await.is_err() {
                        return;
                    }
                }
                return;
            }
        }
        if !options.follow || source.terminal {
            let tail = source.tail.unwrap_or_default();
            let lines: Vec<&str> = tail.lines().collect();
            let skip = options.tail_lines.map_or(0, |n| lines.len().saturating_sub(n));
            for line in &lines[skip..] {
                if tx.send((*line).to_string()).await.is_err() {
                    return;
                }
            }
            return;
        }
        if changes.changed().await.is_err() {
            return;
        }
    }
}
