//! Reading an evaluation's stored objects, wherever the operator keeps them: an S3-compatible bucket, or a
//! directory (the local backend's data directory, or a claim mounted in the service's pod). Streams only:
//! nothing here holds an object in memory but the small ones asked for as such.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt, TryStreamExt};
use object_store::path::Path as ObjectPath;
use object_store::{GetOptions, GetRange, ObjectStore, ObjectStoreExt};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use crate::error::{ApiError, ApiResult};

pub type ByteStream = BoxStream<'static, std::io::Result<Bytes>>;

const CHUNK: usize = 64 * 1024;

/// Where an evaluation's objects are kept. `dir` below is the evaluation's own part of it:
/// `<namespace>/<id>` on a store shared by namespaces, `<id>` in the local data directory.
#[derive(Clone)]
pub enum Objects {
    /// Objects at `<prefix>/<dir>/<object>` in a bucket.
    Bucket { store: Arc<dyn ObjectStore>, prefix: String },
    /// Files at `<root>/<dir>/<object>`; never followed out of `<root>/<dir>` (evaluation code writes there).
    Files { root: PathBuf },
}

impl std::fmt::Debug for Objects {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Bucket { store, prefix } => write!(f, "{store}/{prefix}"),
            Self::Files { root } => write!(f, "{}", root.display()),
        }
    }
}

/// An object's key in a bucket: `<prefix>/<dir>/<object>`, the empty parts left out. The service reads and
/// deletes by it and signs the runs' upload URLs for it.
pub fn object_key(prefix: &str, dir: &str, object: &str) -> ObjectPath {
    let joined = [prefix, dir, object].iter().filter(|p| !p.is_empty()).copied().collect::<Vec<_>>().join("/");
    ObjectPath::from(joined)
}

impl Objects {
    /// The object's size, `None` when there is none.
    pub async fn size(&self, dir: &str, object: &str) -> ApiResult<Option<u64>> {
        match self {
            Self::Bucket { store, prefix } => match store.head(&object_key(prefix, dir, object)).await {
                Ok(meta) => Ok(Some(meta.size)),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(unavailable(&e)),
            },
            Self::Files { root } => {
                let file = open_beneath(&root.join(dir), object).map_err(|e| files_error(&e))?;
                Ok(match file {
                    Some(file) => Some(file.metadata().map_err(|e| files_error(&e))?.len()),
                    None => None,
                })
            }
        }
    }

    /// A small object whole (an index, a manifest), `None` when there is none; one larger than `limit` is an error.
    pub async fn read_small(&self, dir: &str, object: &str, limit: u64) -> ApiResult<Option<Bytes>> {
        let too_large =
            |size: u64| ApiError::internal(format!("stored {object} is {size} bytes, more than the {limit} expected"));
        // One request (one open): the size comes with the object.
        match self {
            Self::Bucket { store, prefix } => match store.get(&object_key(prefix, dir, object)).await {
                Ok(result) if result.meta.size > limit => Err(too_large(result.meta.size)),
                Ok(result) => Ok(Some(result.bytes().await.map_err(|e| unavailable(&e))?)),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(unavailable(&e)),
            },
            Self::Files { root } => {
                let Some(file) = open_beneath(&root.join(dir), object).map_err(|e| files_error(&e))? else {
                    return Ok(None);
                };
                let size = file.metadata().map_err(|e| files_error(&e))?.len();
                if size > limit {
                    return Err(too_large(size));
                }
                Ok(Some(collect(file_range(tokio::fs::File::from_std(file), 0..size)).await?))
            }
        }
    }

    /// The bytes `range` of an object, as they arrive.
    pub async fn stream(&self, dir: &str, object: &str, range: Range<u64>) -> ApiResult<ByteStream> {
        if range.is_empty() {
            return Ok(futures::stream::empty().boxed());
        }
        match self {
            Self::Bucket { store, prefix } => {
                let options = GetOptions { range: Some(GetRange::Bounded(range)), ..GetOptions::default() };
                match store.get_opts(&object_key(prefix, dir, object), options).await {
                    Ok(result) => Ok(result.into_stream().map_err(std::io::Error::other).boxed()),
                    Err(object_store::Error::NotFound { .. }) => {
                        Err(ApiError::NotFound(format!("{dir}: stored object {object}")))
                    }
                    Err(e) => Err(unavailable(&e)),
                }
            }
            Self::Files { root } => {
                let file = open_beneath(&root.join(dir), object)
                    .map_err(|e| files_error(&e))?
                    .ok_or_else(|| ApiError::NotFound(format!("{dir}: stored object {object}")))?;
                Ok(file_range(tokio::fs::File::from_std(file), range))
            }
        }
    }

    /// Removes every object of the evaluation.
    pub async fn delete_all(&self, dir: &str) -> ApiResult<()> {
        match self {
            Self::Bucket { store, prefix } => {
                let locations = store.list(Some(&object_key(prefix, dir, ""))).map_ok(|meta| meta.location).boxed();
                let mut deleted = store.delete_stream(locations);
                while let Some(result) = deleted.next().await {
                    match result {
                        Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
                        Err(e) => return Err(unavailable(&e)),
                    }
                }
                Ok(())
            }
            Self::Files { root } => match tokio::fs::remove_dir_all(root.join(dir)).await {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(files_error(&e)),
            },
        }
    }
}

/// A stream's bytes, all of them (for small objects and chunks of a known size).
pub async fn collect(stream: ByteStream) -> ApiResult<Bytes> {
    let chunks: Vec<Bytes> = stream.try_collect().await.map_err(|e| files_error(&e))?;
    Ok(chunks.concat().into())
}

fn unavailable(error: &object_store::Error) -> ApiError {
    tracing::warn!(%error, "the output store did not answer");
    ApiError::Unavailable { detail: "the output store is not reachable; retry later".into(), retry_after_seconds: 5 }
}

fn files_error(error: &std::io::Error) -> ApiError {
    ApiError::internal(format!("reading the output directory: {error}"))
}

/// Opens `object` under `base` for reading, refusing any path that leads out of `base` (a symbolic link
/// evaluation code left there) and anything but a regular file; `None` when there is nothing.
pub fn open_beneath(base: &Path, object: &str) -> std::io::Result<Option<std::fs::File>> {
    use std::os::unix::fs::OpenOptionsExt;
    let not_found = |e: &std::io::Error| e.kind() == std::io::ErrorKind::NotFound;
    let base = match base.canonicalize() {
        Ok(base) => base,
        Err(e) if not_found(&e) => return Ok(None),
        Err(e) => return Err(e),
    };
    let real = match base.join(object).canonicalize() {
        Ok(real) => real,
        Err(e) if not_found(&e) => return Ok(None),
        Err(e) => return Err(e),
    };
    if !real.starts_with(&base) || real == base {
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!("{object} leads out of its directory"),
        ));
    }
    let file = std::fs::OpenOptions::new().read(true).custom_flags(nix::libc::O_NOFOLLOW).open(&real)?;
    if !file.metadata()?.is_file() {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{object} is not a regular file")));
    }
    Ok(Some(file))
}

fn file_range(file: tokio::fs::File, range: Range<u64>) -> ByteStream {
    let state = (file, range.start, range.end, false);
    futures::stream::try_unfold(state, |(mut file, at, end, positioned)| async move {
        if at >= end {
            return Ok(None);
        }
        if !positioned {
            file.seek(std::io::SeekFrom::Start(at)).await?;
        }
        let want = usize::try_from(end - at).unwrap_or(CHUNK).min(CHUNK);
        let mut buf = vec![0u8; want];
        let n = file.read(&mut buf).await?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the stored file is shorter than its index says",
            ));
        }
        buf.truncate(n);
        Ok(Some((Bytes::from(buf), (file, at + n as u64, end, true))))
    })
    .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_out_of_the_evaluations_directory_is_not_followed() {
        let root = tempfile::tempdir().expect("tempdir");
        let mine = root.path().join("ns/a");
        let theirs = root.path().join("ns/b");
        std::fs::create_dir_all(&mine).expect("mkdir");
        std::fs::create_dir_all(&theirs).expect("mkdir");
        std::fs::write(theirs.join("log.txt"), "secret").expect("write");
        std::fs::write(mine.join("log.txt"), "mine").expect("write");
        std::os::unix::fs::symlink(theirs.join("log.txt"), mine.join("outputs.bin")).expect("symlink");
        std::os::unix::fs::symlink(&theirs, mine.join("output")).expect("symlink");
        assert!(open_beneath(&mine, "log.txt").expect("open").is_some());
        assert!(open_beneath(&mine, "outputs.bin").is_err());
        assert!(open_beneath(&mine, "output/log.txt").is_err());
        assert!(open_beneath(&mine, "missing").expect("open").is_none());
    }

    #[tokio::test]
    async fn ranges_of_files_stream_in_chunks() {
        let root = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(root.path().join("e")).expect("mkdir");
        let content: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(root.path().join("e/outputs.bin"), &content).expect("write");
        let objects = Objects::Files { root: root.path().to_path_buf() };
        assert_eq!(objects.size("e", "outputs.bin").await.expect("size"), Some(200_000));
        let chunks: Vec<Bytes> =
            objects.stream("e", "outputs.bin", 10..150_010).await.expect("stream").try_collect().await.expect("read");
        assert!(chunks.len() >= 3);
        assert_eq!(chunks.concat(), content[10..150_010]);
        assert!(objects.stream("e", "nothing", 0..1).await.is_err());
        objects.delete_all("e").await.expect("delete");
        assert_eq!(objects.size("e", "outputs.bin").await.expect("size"), None);
    }
}
