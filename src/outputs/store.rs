//! `--output-store`: where evaluations' output sets are kept on the kubernetes backend, and what the service
//! does with it — read objects (see `Objects`), hand each run upload rights to its own objects, delete them.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::signer::{Method, Signer};
use object_store::{ClientOptions, RetryConfig};

use super::index::STORED_OBJECTS;
use super::objects::{Objects, object_key};

/// What `--output-store` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreKind {
    /// The run record ConfigMap (results up to ~1 MiB, the log's last 256 KiB, no samples).
    ConfigMap,
    /// `s3://BUCKET/PREFIX`
    Bucket { bucket: String, prefix: String },
    /// `pvc:NAME`
    Claim { name: String },
}

impl std::str::FromStr for StoreKind {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, String> {
        if value == "configmap" {
            return Ok(Self::ConfigMap);
        }
        if let Some(rest) = value.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            let bucket_ok = (3..=63).contains(&bucket.len())
                && bucket.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
            if !bucket_ok {
                return Err(format!("s3://BUCKET/PREFIX: {bucket:?} is not a bucket name"));
            }
            let prefix = prefix.trim_matches('/');
            if prefix.split('/').any(|s| s == "." || s == "..") || prefix.contains("//") {
                return Err(format!("s3://BUCKET/PREFIX: {prefix:?} is not a usable prefix"));
            }
            return Ok(Self::Bucket { bucket: bucket.to_string(), prefix: prefix.to_string() });
        }
        if let Some(name) = value.strip_prefix("pvc:") {
            if crate::validate::names::is_dns_subdomain(name) {
                return Ok(Self::Claim { name: name.to_string() });
            }
            return Err(format!("pvc:NAME: {name:?} is not a claim name"));
        }
        Err(format!("{value:?}: expected configmap, s3://BUCKET/PREFIX or pvc:NAME"))
    }
}

/// How the service reaches an S3-compatible store (credentials come from `AWS_ACCESS_KEY_ID` and
/// `AWS_SECRET_ACCESS_KEY`, e.g. from a Secret).
#[derive(Debug, Clone, Default)]
pub struct BucketAccess {
    pub endpoint: Option<String>,
    pub region: String,
    pub virtual_hosted: bool,
    /// An access key pair to use instead of the environment's.
    pub credentials: Option<(String, String)>,
}

/// The configured store, ready to use.
#[derive(Clone)]
pub struct OutputStore {
    pub kind: StoreKind,
    /// Reading and deleting (none for the ConfigMap store).
    pub objects: Option<Objects>,
    signer: Option<Arc<AmazonS3>>,
    prefix: String,
}

impl std::fmt::Debug for OutputStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.kind)
    }
}

impl OutputStore {
    pub fn config_map() -> Self {
        Self { kind: StoreKind::ConfigMap, objects: None, signer: None, prefix: String::new() }
    }

    /// `claim_mount` is where the claim is mounted in the service's own pod (for `pvc:`).
    pub fn open(kind: StoreKind, access: &BucketAccess, claim_mount: &std::path::Path) -> anyhow::Result<Self> {
        match &kind {
            StoreKind::ConfigMap => Ok(Self::config_map()),
            StoreKind::Bucket { bucket, prefix } => {
                let mut builder = AmazonS3Builder::from_env()
                    .with_bucket_name(bucket)
                    .with_region(&access.region)
                    .with_virtual_hosted_style_request(access.virtual_hosted)
                    .with_retry(RetryConfig {
                        max_retries: 2,
                        retry_timeout: Duration::from_secs(10),
                        ..RetryConfig::default()
                    })
                    // Downloads of gigabytes take longer than any whole-request timeout; connecting must not.
                    .with_client_options(
                        ClientOptions::new().with_timeout_disabled().with_connect_timeout(Duration::from_secs(5)),
                    );
                if let Some((key, secret)) = &access.credentials {
                    builder = builder.with_access_key_id(key).with_secret_access_key(secret);
                }
                if let Some(endpoint) = &access.endpoint {
                    builder = builder.with_endpoint(endpoint).with_allow_http(endpoint.starts_with("http://"));
                }
                let store = Arc::new(builder.build()?);
                Ok(Self {
                    objects: Some(Objects::Bucket { store: Arc::clone(&store) as _, prefix: prefix.clone() }),
                    signer: Some(store),
                    prefix: prefix.clone(),
                    kind,
                })
            }
            StoreKind::Claim { .. } => Ok(Self {
                objects: Some(Objects::Files { root: PathBuf::from(claim_mount) }),
                signer: None,
                prefix: String::new(),
                kind,
            }),
        }
    }

    /// Whether runs get presigned upload URLs (a bucket), and so a Secret holding them.
    pub fn signs_uploads(&self) -> bool {
        self.signer.is_some()
    }

    /// An evaluation's own part of the store.
    pub fn dir(namespace: &str, id: &str) -> String {
        format!("{namespace}/{id}")
    }

    /// For a bucket: one presigned PUT URL per object a run writes, each good for exactly that object, for
    /// `valid_for`; the run holds these and no credentials.
    pub async fn upload_urls(
        &self,
        dir: &str,
        valid_for: Duration,
    ) -> anyhow::Result<Option<BTreeMap<String, String>>> {
        let Some(signer) = &self.signer else { return Ok(None) };
        let mut urls = BTreeMap::new();
        for object in STORED_OBJECTS {
            let url = signer.signed_url(Method::PUT, &object_key(&self.prefix, dir, object), valid_for).await?;
            urls.insert(object.to_string(), url.to_string());
        }
        Ok(Some(urls))
    }
}

/// How long a run without `timeout_seconds` is taken to last when its upload URLs are signed: past this, its
/// uploads are refused (`OutputUploadFailed`). Give a longer run a `timeout_seconds`.
pub const UNTIMED_RUN: Duration = Duration::from_secs(24 * 3600);

/// What an upload URL lasts beyond the run's time and the driver's upload patience: a pod's start and clock skew.
pub const UPLOAD_MARGIN: Duration = Duration::from_secs(5 * 60);

/// How long a run's upload URLs last: its `timeout_seconds` (`UNTIMED_RUN` without one), then the driver's
/// `--output-upload-patience-seconds` for its last upload, then `UPLOAD_MARGIN` — with the default patience,
/// the timeout and 10 minutes; at most the 7 days S3 allows. URLs that leak out of a run stop working soon
/// after it, not a week later.
pub fn upload_validity(timeout_seconds: Option<u64>, upload_patience_seconds: u64) -> Duration {
    const WEEK: u64 = 7 * 24 * 3600;
    let run = timeout_seconds.unwrap_or(UNTIMED_RUN.as_secs());
    Duration::from_secs(run.saturating_add(upload_patience_seconds).saturating_add(UPLOAD_MARGIN.as_secs()).min(WEEK))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_values_parse_or_say_what_is_expected() {
        assert_eq!("configmap".parse(), Ok(StoreKind::ConfigMap));
        assert_eq!(
            "s3://evals/team/a/".parse(),
            Ok(StoreKind::Bucket { bucket: "evals".into(), prefix: "team/a".into() })
        );
        assert_eq!("s3://evals".parse(), Ok(StoreKind::Bucket { bucket: "evals".into(), prefix: String::new() }));
        assert_eq!("pvc:outputs".parse(), Ok(StoreKind::Claim { name: "outputs".into() }));
        for bad in ["s3://", "s3://Evals/x", "s3://ok/../x", "pvc:", "pvc:Bad_Name", "gs://x", ""] {
            assert!(bad.parse::<StoreKind>().is_err(), "{bad}");
        }
    }

    #[test]
    fn upload_urls_last_the_runs_timeout_its_last_upload_and_a_margin_at_most_a_week() {
        assert_eq!(upload_validity(Some(60), 300), Duration::from_secs(60 + 600), "the defaults: timeout + 10 min");
        assert_eq!(upload_validity(Some(60), 900), Duration::from_secs(60 + 900 + 300), "a longer patience counts");
        assert_eq!(upload_validity(None, 300), Duration::from_secs(24 * 3600 + 600), "no timeout: a day");
        assert_eq!(upload_validity(Some(604_800), 300), Duration::from_secs(7 * 24 * 3600), "S3's most");
        assert_eq!(upload_validity(Some(u64::MAX), u64::MAX), Duration::from_secs(7 * 24 * 3600));
    }

    #[tokio::test]
    async fn each_upload_url_is_signed_for_its_own_key_only() {
        let store = OutputStore::open(
            StoreKind::Bucket { bucket: "evals".into(), prefix: "p".into() },
            &BucketAccess {
                endpoint: Some("http://127.0.0.1:9".into()),
                region: "us-east-1".into(),
                virtual_hosted: false,
                credentials: Some(("key".into(), "secret".into())),
            },
            std::path::Path::new("/"),
        )
        .expect("open");
        let urls = store.upload_urls("ns/id", Duration::from_secs(60)).await.expect("sign").expect("bucket");
        assert_eq!(urls.len(), 4);
        assert!(urls["log.txt"].starts_with("http://127.0.0.1:9/evals/p/ns/id/log.txt?"), "{}", urls["log.txt"]);
        assert!(urls["log.txt"].contains("X-Amz-Signature="));
        assert!(urls["log.txt"].contains("X-Amz-Expires=60"));
    }
}
