//! The driver's side of the output set: what lm-eval left (its output directory and the whole log) named,
//! hashed, and written where the operator keeps outputs — beside the files (local backend), into a claim's
//! directory, or to a bucket through presigned URLs that allow writing this evaluation's objects and
//! nothing else. Writes are retried with back-off for a while; what was written stays.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use sha2::{Digest, Sha256};

use super::index::{self, Artifact, BUNDLE, INDEX, Index, LOG, MANIFEST, Stored};
use super::manifest::sha256_hex;

/// Where the driver writes the output set.
pub enum Destination {
    /// The local backend: the files stay where lm-eval wrote them (under `dir`); index and manifest go beside.
    InPlace { dir: PathBuf },
    /// A directory of this evaluation on a claim (mounted with its `subPath`).
    Directory(PathBuf),
    /// One presigned PUT URL per stored object, each in a file of that object's name in this directory.
    Presigned { urls: BTreeMap<String, String>, client: reqwest::Client },
}

/// A file of the output set before it is written: its artifact and where it is on the runner.
#[derive(Debug, Clone)]
pub struct Gathered {
    pub artifact: Artifact,
    pub source: PathBuf,
}

/// The bytes an object is made of.
pub enum Body {
    Bytes(Bytes),
    /// The first `len` bytes of each file, one after another.
    Files(Vec<(PathBuf, u64)>),
}

impl Body {
    fn len(&self) -> u64 {
        match self {
            Self::Bytes(bytes) => bytes.len() as u64,
            Self::Files(files) => files.iter().map(|(_, len)| len).sum(),
        }
    }
}

impl Destination {
    /// `urls_dir` holds a file per stored object with its presigned URL (a Secret mounted in the pod).
    pub fn presigned(urls_dir: &Path) -> std::io::Result<Self> {
        let mut urls = BTreeMap::new();
        for object in index::STORED_OBJECTS {
            let url = std::fs::read_to_string(urls_dir.join(object))?;
            urls.insert(object.to_string(), url.trim().to_string());
        }
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(std::io::Error::other)?;
        Ok(Self::Presigned { urls, client })
    }

    pub fn keeps_files_in_place(&self) -> bool {
        matches!(self, Self::InPlace { .. })
    }

    /// One attempt at writing `object`.
    pub async fn put(&self, object: &str, body: Body) -> Result<(), String> {
        match self {
            Self::InPlace { dir } | Self::Directory(dir) => {
                let (dir, name) = (dir.clone(), object.to_string());
                tokio::task::spawn_blocking(move || write_file(&dir, &name, &body))
                    .await
                    .map_err(|e| e.to_string())?
                    .map_err(|e| format!("writing {object}: {e}"))
            }
            Self::Presigned { urls, client } => {
                let url = urls.get(object).ok_or_else(|| format!("no upload URL for {object}"))?;
                let len = body.len();
                let request = client.put(url).header(reqwest::header::CONTENT_LENGTH, len);
                let request = match body {
                    Body::Bytes(bytes) => request.body(bytes),
                    Body::Files(files) => request.body(reqwest::Body::wrap_stream(files_stream(files))),
                };
                let response = request.send().await.map_err(|e| format!("uploading {object}: {e}"))?;
                if response.status().is_success() {
                    Ok(())
                } else {
                    let status = response.status();
                    let text = response.text().await.unwrap_or_default();
                    Err(format!("uploading {object}: {status}: {}", text.chars().take(300).collect::<String>()))
                }
            }
        }
    }

    /// Writes `object`, retrying with back-off (250 ms doubling to 5 s) until `patience` has passed.
    pub async fn put_patiently(&self, object: &str, body: impl Fn() -> Body, patience: Duration) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + patience;
        let mut pause = Duration::from_millis(250);
        let mut attempts = 0;
        loop {
            attempts += 1;
            match self.put(object, body()).await {
                Ok(()) => return Ok(()),
                Err(e) if tokio::time::Instant::now() + pause < deadline => {
                    eprintln!("lm-eval-aas driver: {e}; retrying in {} ms", pause.as_millis());
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(5));
                }
                Err(e) => return Err(format!("{e} (gave up after {attempts} attempts in {} s)", patience.as_secs())),
            }
        }
    }

    /// Writes the whole output set: the files, the manifest, and last the index (so an index means a
    /// complete set).
    pub async fn write_set(
        &self,
        files: &[Gathered],
        log: Option<&Gathered>,
        manifest: Bytes,
        patience: Duration,
    ) -> Result<(), String> {
        let manifest_artifact = Artifact {
            path: MANIFEST.into(),
            size: manifest.len() as u64,
            sha256: sha256_hex(&manifest),
            content_type: "application/json".into(),
            task: None,
        };
        let mut stored = Vec::new();
        match self {
            Self::InPlace { dir } => {
                for file in files.iter().chain(log) {
                    let object = file
                        .source
                        .strip_prefix(dir)
                        .map_err(|_| format!("{} is not in {}", file.source.display(), dir.display()))?;
                    stored.push(Stored {
                        artifact: file.artifact.clone(),
                        object: object.to_string_lossy().into_owned(),
                        offset: 0,
                    });
                }
            }
            Self::Directory(_) | Self::Presigned { .. } => {
                if let Some(log) = log {
                    let source = (log.source.clone(), log.artifact.size);
                    self.put_patiently(LOG, || Body::Files(vec![source.clone()]), patience).await?;
                    stored.push(Stored { artifact: log.artifact.clone(), object: LOG.into(), offset: 0 });
                }
                let mut offset = 0;
                let mut parts = Vec::new();
                for file in files {
                    stored.push(Stored { artifact: file.artifact.clone(), object: BUNDLE.into(), offset });
                    offset += file.artifact.size;
                    parts.push((file.source.clone(), file.artifact.size));
                }
                self.put_patiently(BUNDLE, || Body::Files(parts.clone()), patience).await?;
            }
        }
        self.put_patiently(MANIFEST, || Body::Bytes(manifest.clone()), patience).await?;
        stored.push(Stored { artifact: manifest_artifact, object: MANIFEST.into(), offset: 0 });
        let index = Bytes::from(serde_json::to_vec_pretty(&Index { artifacts: stored }).map_err(|e| e.to_string())?);
        self.put_patiently(INDEX, || Body::Bytes(index.clone()), patience).await
    }
}

fn write_file(dir: &Path, object: &str, body: &Body) -> std::io::Result<()> {
    use std::io::{Read, Write};
    crate::fsutil::write_atomic_with(&dir.join(object), |out| match body {
        Body::Bytes(bytes) => out.write_all(bytes),
        Body::Files(files) => {
            for (source, len) in files {
                let copied = std::io::copy(&mut std::fs::File::open(source)?.take(*len), out)?;
                if copied != *len {
                    return Err(std::io::Error::other(format!("{} shrank while being written", source.display())));
                }
            }
            Ok(())
        }
    })
}

fn files_stream(files: Vec<(PathBuf, u64)>) -> impl futures::Stream<Item = std::io::Result<Bytes>> + Send + 'static {
    use tokio::io::AsyncReadExt;
    futures::stream::try_unfold(
        (files.into_iter(), None::<(tokio::io::Take<tokio::fs::File>, PathBuf)>),
        |(mut files, mut current)| async move {
            loop {
                if current.is_none() {
                    let Some((path, len)) = files.next() else { return Ok(None) };
                    current = Some((tokio::fs::File::open(&path).await?.take(len), path));
                }
                let Some((reader, _)) = current.as_mut() else { continue };
                let mut buf = vec![0u8; 256 * 1024];
                let n = reader.read(&mut buf).await?;
                if n == 0 {
                    current = None;
                    continue;
                }
                buf.truncate(n);
                return Ok(Some((Bytes::from(buf), (files, current))));
            }
        },
    )
}

/// Every regular file under lm-eval's output directory (symbolic links are not followed), named for the
/// output set and hashed.
pub fn gather(output_dir: &Path) -> std::io::Result<Vec<Gathered>> {
    let mut found = Vec::new();
    walk(output_dir, output_dir, &mut found)?;
    found.sort();
    let mut named: Vec<(String, Option<String>, String)> = found
        .iter()
        .map(|relative| {
            let (name, task) = index::name_of_output(relative);
            (name, task, relative.clone())
        })
        .collect();
    index::unique_names(&mut named);
    named
        .into_iter()
        .map(|(name, task, relative)| {
            let source = output_dir.join(&relative);
            let artifact = hashed(&source, &name, task)?;
            Ok(Gathered { artifact, source })
        })
        .collect()
}

/// The artifact of a file: its size and SHA-256 as of now.
pub fn hashed(source: &Path, name: &str, task: Option<String>) -> std::io::Result<Artifact> {
    use std::io::Read;
    let mut file = std::fs::File::open(source)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok(Artifact {
        path: name.to_string(),
        size,
        sha256: format!("{:x}", hasher.finalize()),
        content_type: index::content_type_of(name).to_string(),
        task,
    })
}

fn walk(root: &Path, dir: &Path, found: &mut Vec<String>) -> std::io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let kind = entry.file_type()?;
        let path = entry.path();
        if kind.is_dir() {
            walk(root, &path, found)?;
        } else if kind.is_file()
            && let Ok(relative) = path.strip_prefix(root)
            && let Some(relative) = relative.to_str()
            && index::checked_path(relative).is_ok()
        {
            found.push(relative.to_string());
        }
    }
    Ok(())
}

/// `(name, SHA-256)` of each file directly in `dir` (the inline tasks), sorted by name.
pub fn hashes_of_files_in(dir: &Path) -> Vec<(String, String)> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut hashes: Vec<(String, String)> = entries
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file() || t.is_symlink()))
        .filter_map(|e| {
            let bytes = std::fs::read(e.path()).ok()?;
            Some((e.file_name().to_string_lossy().into_owned(), sha256_hex(&bytes)))
        })
        .collect();
    hashes.sort();
    hashes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_set_written_to_a_directory_is_one_bundle_and_an_index_that_finds_each_file() {
        let run = tempfile::tempdir().expect("tempdir");
        let output = run.path().join("output/model");
        std::fs::create_dir_all(&output).expect("mkdir");
        std::fs::write(output.join("results_2026-11-30T12-00-00.000001.json"), b"{\"results\": {}}").expect("write");
        std::fs::write(output.join("samples_t_2026-11-30T12-00-00.000001.jsonl"), b"{\"doc_id\": 0}\n").expect("write");
        std::fs::write(run.path().join("log.txt"), b"line\n").expect("write");
        let files = gather(&run.path().join("output")).expect("gather");
        let names: Vec<&str> = files.iter().map(|f| f.artifact.path.as_str()).collect();
        assert_eq!(names, ["results.json", "samples/t.jsonl"]);
        let log = Gathered {
            artifact: hashed(&run.path().join("log.txt"), LOG, None).expect("hash"),
            source: run.path().join("log.txt"),
        };
        let store = tempfile::tempdir().expect("tempdir");
        let destination = Destination::Directory(store.path().to_path_buf());
        destination
            .write_set(&files, Some(&log), Bytes::from_static(b"{}"), Duration::from_secs(1))
            .await
            .expect("write");
        let index =
            Index::parse(&std::fs::read(store.path().join(INDEX)).expect("index"), Some(&index::STORED_OBJECTS))
                .expect("parse");
        let bundle = std::fs::read(store.path().join(BUNDLE)).expect("bundle");
        let samples = index.samples("t").expect("samples");
        let start = usize::try_from(samples.offset).expect("offset");
        assert_eq!(&bundle[start..start + 14], b"{\"doc_id\": 0}\n");
        assert_eq!(samples.artifact.sha256, sha256_hex(b"{\"doc_id\": 0}\n"));
        assert_eq!(std::fs::read(store.path().join(LOG)).expect("log"), b"line\n");
        assert!(index.find(MANIFEST).is_some());
    }

    #[tokio::test]
    async fn a_destination_that_refuses_is_retried_until_patience_runs_out() {
        let missing = Destination::Directory(PathBuf::from("/nonexistent/lm-eval-aas"));
        let error = missing
            .put_patiently(LOG, || Body::Bytes(Bytes::from_static(b"x")), Duration::from_millis(900))
            .await
            .expect_err("no directory");
        assert!(error.contains("gave up after 3 attempts"), "{error}");
    }
}
