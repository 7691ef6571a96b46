//! Streams an evaluation's log file as lines; with `follow`, until the evaluation has ended. The file is read
//! in chunks with async I/O and split in one pass, so a read costs time linear in what it sends and yields
//! between chunks; it stops as soon as the client goes away; `tail_lines` starts from the end of the file.

use std::io::SeekFrom;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::mpsc::Sender;
use uuid::Uuid;

use super::{POLL, Shared};
use crate::backend::{LogOptions, LogStream};
use crate::log_lines::{LastLines, Lines};

const CHUNK_BYTES: usize = 64 * 1024;

pub(super) fn stream_lines(shared: Arc<Shared>, id: Uuid, path: PathBuf, options: LogOptions) -> LogStream {
    let (tx, rx) = tokio::sync::mpsc::channel::<String>(crate::backend::LOG_LINES_AHEAD);
    tokio::spawn(async move {
        let mut offset = match options.tail_lines {
            Some(n) => start_of_last_lines(&path, n).await,
            None => 0,
        };
        let mut lines = Lines::default();
        loop {
            // Whether it had ended before this read: then this read sees everything it wrote.
            let ended = shared.store.read().slot(id).map_or(true, |slot| slot.state.is_terminal());
            match send_new_lines(&path, &mut offset, &mut lines, &tx).await {
                Ok(()) => {}
                Err(Gone) => return,
            }
            if !options.follow || ended {
                if let Some(rest) = lines.rest() {
                    let _ = tx.send(rest).await;
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

/// The client went away.
struct Gone;

/// Sends the complete lines written after `offset`, and moves `offset` past what was read.
async fn send_new_lines(path: &Path, offset: &mut u64, lines: &mut Lines, tx: &Sender<String>) -> Result<(), Gone> {
    let Ok(mut file) = tokio::fs::File::open(path).await else { return Ok(()) };
    if file.seek(SeekFrom::Start(*offset)).await.is_err() {
        return Ok(());
    }
    let mut chunk = vec![0u8; CHUNK_BYTES];
    loop {
        let read = match file.read(&mut chunk).await {
            Ok(0) | Err(_) => return Ok(()),
            Ok(read) => read,
        };
        *offset += read as u64;
        for line in lines.push(&chunk[..read]) {
            tx.send(line).await.map_err(|_| Gone)?;
        }
    }
}

/// Where the last `n` complete lines of the file begin, found by reading backwards from its end.
async fn start_of_last_lines(path: &Path, n: usize) -> u64 {
    let Ok(mut file) = tokio::fs::File::open(path).await else { return 0 };
    let Ok(length) = file.metadata().await.map(|m| m.len()) else { return 0 };
    let mut end = length;
    let mut last = LastLines::new(n);
    let mut chunk = vec![0u8; CHUNK_BYTES];
    while end > 0 {
        let start = end.saturating_sub(CHUNK_BYTES as u64);
        #[allow(clippy::cast_possible_truncation)]
        let piece = &mut chunk[..(end - start) as usize];
        if file.seek(SeekFrom::Start(start)).await.is_err() || file.read_exact(piece).await.is_err() {
            return 0;
        }
        if let Some(found) = last.look_back(start, piece) {
            return found;
        }
        end = start;
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_last_lines_are_found_from_the_end() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("log.txt");
        let text: String = (0..50_000).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&path, format!("{text}partial")).expect("write");
        let start = start_of_last_lines(&path, 3).await as usize;
        assert_eq!(&format!("{text}partial")[start..], "line 49997\nline 49998\nline 49999\npartial");
        assert_eq!(start_of_last_lines(&path, 0).await as usize, text.len());
        assert_eq!(start_of_last_lines(&path, 1_000_000).await, 0);
        assert_eq!(start_of_last_lines(&dir.path().join("none"), 3).await, 0);
    }
}
