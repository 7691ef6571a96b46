//! An evaluation's output set: lm-eval's results and per-sample files, the whole log and a reproducibility
//! manifest, kept where the operator chooses (`store`), written by the driver (`upload`), indexed
//! (`index`), and served by streaming (`objects`, `archive`, `samples`) — never loaded whole.

pub mod archive;
pub mod index;
pub mod manifest;
pub mod objects;
pub mod samples;
pub mod store;
pub mod upload;

use bytes::Bytes;
use futures::StreamExt;

use crate::error::{ApiError, ApiResult};
use crate::log_lines::{LastLines, Lines};
use crate::model::State;
use index::{INDEX, Index, STORED_OBJECTS};
use objects::Objects;

/// The largest index or manifest read (each is one small JSON document).
const SMALL_OBJECT_LIMIT: u64 = 16 * 1024 * 1024;

/// Where one evaluation's output set is, and what the API needs to know of the evaluation to serve it.
#[derive(Debug, Clone)]
pub struct OutputSet {
    pub objects: Objects,
    /// The evaluation's part of `objects`.
    pub dir: String,
    /// Files kept where lm-eval wrote them (the local backend) rather than the stored objects of a run.
    pub in_place: bool,
    pub id: uuid::Uuid,
    pub state: State,
    pub log_samples: bool,
}

impl OutputSet {
    /// The index, once the run has written it.
    pub async fn index(&self) -> ApiResult<Index> {
        let Some(bytes) = self.objects.read_small(&self.dir, INDEX, SMALL_OBJECT_LIMIT).await? else {
            let id = self.id;
            return Err(ApiError::Conflict(if self.state.is_terminal() {
                format!("evaluation {id} ended ({}) without an output set", self.state.as_str())
            } else {
                format!("evaluation {id} is {}; its output set is written when it ends", self.state.as_str())
            }));
        };
        let objects = if self.in_place { None } else { Some(&STORED_OBJECTS[..]) };
        Index::parse(&bytes, objects).map_err(ApiError::internal)
    }

    /// The bytes `range` (relative to the artifact) of a stored artifact.
    pub async fn stream(&self, stored: &index::Stored, range: std::ops::Range<u64>) -> ApiResult<objects::ByteStream> {
        let start = stored.offset + range.start;
        let end = stored.offset + range.end.min(stored.artifact.size);
        self.objects.stream(&self.dir, &stored.object, start..end).await
    }

    pub async fn read_small(&self, stored: &index::Stored) -> ApiResult<Bytes> {
        if stored.artifact.size > SMALL_OBJECT_LIMIT {
            return Err(ApiError::internal(format!("{} is larger than expected", stored.artifact.path)));
        }
        objects::collect(self.stream(stored, 0..stored.artifact.size).await?).await
    }
}

/// The lines of a stored log (`size` bytes), or its last `tail_lines`: read from the end in chunks until
/// enough line ends are found (as the local backend reads its log file), then streamed.
pub async fn stored_log_lines(
    objects: &Objects,
    dir: &str,
    size: u64,
    tail_lines: Option<usize>,
) -> ApiResult<futures::stream::BoxStream<'static, String>> {
    const CHUNK: u64 = 64 * 1024;
    let mut start = 0;
    if let Some(wanted) = tail_lines {
        let mut last = LastLines::new(wanted);
        let mut end = size;
        while end > 0 {
            let from = end.saturating_sub(CHUNK);
            let piece = objects::collect(objects.stream(dir, index::LOG, from..end).await?).await?;
            if let Some(found) = last.look_back(from, &piece) {
                start = found;
                break;
            }
            end = from;
        }
    }
    let bytes = objects.stream(dir, index::LOG, start..size).await?;
    let mut lines = Lines::default();
    let lines = bytes
        .map(Some)
        .chain(futures::stream::once(async { None }))
        .map(move |chunk| match chunk {
            Some(Ok(chunk)) => lines.push(&chunk),
            // A read that failed ends the stream, as a local log's does.
            Some(Err(_)) => Vec::new(),
            None => lines.rest().into_iter().collect(),
        })
        .flat_map(futures::stream::iter);
    Ok(lines.boxed())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_stored_logs_tail_is_its_last_lines() {
        let root = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(root.path().join("e")).expect("mkdir");
        let log: String = (0..50_000).map(|i| format!("line {i}\n")).collect();
        std::fs::write(root.path().join("e/log.txt"), &log).expect("write");
        let objects = Objects::Files { root: root.path().to_path_buf() };
        let size = log.len() as u64;
        let tail: Vec<String> = stored_log_lines(&objects, "e", size, Some(3)).await.expect("tail").collect().await;
        assert_eq!(tail, ["line 49997", "line 49998", "line 49999"]);
        let all: Vec<String> = stored_log_lines(&objects, "e", size, None).await.expect("all").collect().await;
        assert_eq!((all.len(), all[12_345].as_str()), (50_000, "line 12345"));
        let none: Vec<String> = stored_log_lines(&objects, "e", size, Some(0)).await.expect("none").collect().await;
        assert!(none.is_empty());
        let more: Vec<String> =
            stored_log_lines(&objects, "e", size, Some(60_000)).await.expect("more").collect().await;
        assert_eq!(more.len(), 50_000);
        std::fs::write(root.path().join("e/log.txt"), format!("{log}partial")).expect("write");
        let tail: Vec<String> = stored_log_lines(&objects, "e", size + 7, Some(1)).await.expect("tail").collect().await;
        assert_eq!(tail, ["line 49999", "partial"], "an unfinished last line is a line too, as in a local log");
    }
}
