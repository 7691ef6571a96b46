//! Streams an evaluation's log file as lines; with `follow`, until the evaluation has ended.

use std::path::PathBuf;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncSeekExt};
use uuid::Uuid;

use super::{POLL, Shared};
use crate::backend::{LogOptions, LogStream};

pub(super) fn stream_lines(shared: Arc<Shared>, id: Uuid, path: PathBuf, options: LogOptions) -> LogStream {
    let (tx, rx) = tokio::sync::mpsc::channel::<String>(256);
    tokio::spawn(async move {
        let mut offset = 0u64;
        let mut partial = String::new();
        let mut first = true;
        loop {
            let ended = shared.store.read().slot(id).map_or(true, |slot| slot.state.is_terminal());
            let mut chunk = Vec::new();
            if let Ok(mut file) = tokio::fs::File::open(&path).await
                && file.seek(std::io::SeekFrom::Start(offset)).await.is_ok()
            {
                let _ = file.read_to_end(&mut chunk).await;
            }
            offset += chunk.len() as u64;
            partial.push_str(&String::from_utf8_lossy(&chunk));
            let mut lines: Vec<String> = Vec::new();
            while let Some(end) = partial.find('\n') {
                lines.push(partial[..end].to_string());
                partial.drain(..=end);
            }
            if first {
                first = false;
                if let Some(n) = options.tail_lines {
                    lines.drain(..lines.len().saturating_sub(n));
                }
            }
            for line in lines {
                if tx.send(line).await.is_err() {
                    return;
                }
            }
            if !options.follow || ended {
                if !partial.is_empty() {
                    let _ = tx.send(std::mem::take(&mut partial)).await;
                }
                return;
            }
            tokio::select! {
                () = tokio::time::sleep(POLL) => {}
                () = tx.closed() => return,
            }
        }
    });
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}
