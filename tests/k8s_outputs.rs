//! Output sets on the test cluster, in a real S3-compatible store (versitygw, which checks every signature) and
//! on a claim: per-sample records page by page, artifacts with their SHA-256, one tar.gz, the manifest, the
//! whole log once the pod is gone, deletion; a store that goes down while a run uploads; and task code that
//! tries to use its upload URLs for another evaluation's objects.

mod common;

use std::io::Read;

use common::cluster::TestNamespace;
use common::s3::{BUCKET, S3Server};
use common::{Service, client, submit, wait_for_async, wait_terminal};
use lm_eval_aas::lifecycle::admission::IdempotencyKey;
use lm_eval_aas::outputs::manifest::sha256_hex;
use object_store::ObjectStoreExt;
use serde_json::{Value, json};

fn s3_service(ns: &TestNamespace, s3: &S3Server, extra: &[&str]) -> Service {
    let mut flags = s3.service_flags("runs");
    flags.extend(extra.iter().map(|s| (*s).to_string()));
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let env = s3.service_env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    ns.service_with_env(&flags, &env)
}

/// How many upload Secrets the evaluation's Job names (`lmeval-<id>-upload-…`), and those of them that exist.
fn upload_secrets(ns: &TestNamespace, id: &str) -> (usize, Vec<String>) {
    let job = ns.kubectl_json(&["get", "job", &format!("lmeval-{}", id.replace('-', ""))]);
    let named: Vec<String> = job["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .filter_map(|v| v["secret"]["secretName"].as_str())
        .filter(|name| name.contains("-upload-"))
        .map(str::to_string)
        .collect();
    let existing = named
        .iter()
        .filter(|name| ns.kubectl(&["get", "secret", name.as_str(), "-o", "name"]).status.success())
        .cloned()
        .collect();
    (named.len(), existing)
}

/// A run's upload URLs last its timeout and the driver's upload patience and 5 minutes (300 s each by default),
/// and their Secret is deleted when the run ends, here by a cancel.
#[tokio::test(flavor = "multi_thread")]
async fn upload_urls_last_the_runs_timeout_and_a_margin_and_go_when_it_ends() {
    let Some(s3) = S3Server::start() else { return };
    let Some(ns) = TestNamespace::create("upload-life") else { return };
    let service = s3_service(&ns, &s3, &[]);
    let submitted = submit(
        &service,
        json!({"model": "dummy", "tasks": ["lmeval_aas_slow"], "limit": 2000, "timeout_seconds": 900}),
    )
    .await;
    let id = submitted["id"].as_str().expect("id").to_string();
    common::wait_until(&service, &id, std::time::Duration::from_secs(120), "running", |e| e["state"] == "running")
        .await;
    let (named, existing) = upload_secrets(&ns, &id);
    assert_eq!((named, existing.len()), (1, 1), "while it runs, its Secret is there");
    let secret = ns.kubectl_json(&["get", "secret", &existing[0]]);
    for (object, url) in secret["data"].as_object().expect("data") {
        use base64::Engine;
        let url = base64::engine::general_purpose::STANDARD.decode(url.as_str().expect("base64")).expect("decode");
        let url = String::from_utf8(url).expect("a URL");
        let expires = url.split(['?', '&']).find_map(|pair| pair.strip_prefix("X-Amz-Expires="));
        assert_eq!(expires, Some("1500"), "{object}: 900 s of timeout + 300 + 300, not a week: {url}");
    }
    let response =
        client().post(service.url(&format!("/api/v1/evaluations/{id}/cancel"))).send().await.expect("cancel");
    assert_eq!(response.status(), 202);
    let ended = wait_terminal(&service, &id).await;
    assert_eq!(ended["state"], "cancelled", "{ended}");
    assert_eq!(upload_secrets(&ns, &id), (1, Vec::new()), "its upload Secret went when it ended");
}

async fn get(service: &Service, path: &str) -> reqwest::Response {
    client().get(service.url(path)).send().await.expect("GET")
}

async fn bytes(service: &Service, path: &str) -> Vec<u8> {
    let response = get(service, path).await;
    assert_eq!(response.status(), 200, "{path}");
    response.bytes().await.expect("body").to_vec()
}

/// Every record of `task`, following `Link: rel="next"` from the first page; and how many pages it took.
async fn all_samples(service: &Service, id: &str, task: &str, page_size: usize) -> (Vec<Value>, usize) {
    let mut next = Some(format!("/api/v1/evaluations/{id}/samples?task={task}&page_size={page_size}"));
    let (mut records, mut pages) = (Vec::new(), 0);
    while let Some(path) = next.take() {
        let response = get(service, &path).await;
        assert_eq!(response.status(), 200, "{path}");
        assert_eq!(response.headers()["content-type"], "application/x-ndjson");
        next = response.headers().get("link").map(|link| {
            let link = link.to_str().expect("ascii");
            assert!(link.ends_with(">; rel=\"next\""), "{link}");
            link.trim_start_matches('<').split('>').next().expect("url").to_string()
        });
        let text = response.text().await.expect("text");
        let page: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).expect("a JSON record")).collect();
        assert!(page.len() <= page_size);
        records.extend(page);
        pages += 1;
    }
    (records, pages)
}

#[tokio::test(flavor = "multi_thread")]
async fn an_output_set_in_a_bucket_is_served_whole_and_deleted_with_its_evaluation() {
    let Some(s3) = S3Server::start() else { return };
    let Some(ns) = TestNamespace::create("outputs") else { return };
    let service = s3_service(&ns, &s3, &[]);
    let submitted = submit(
        &service,
        json!({"model": "dummy", "tasks": ["lmeval_aas_mc", "lmeval_aas_gen"], "limit": 5, "log_samples": true}),
    )
    .await;
    let id = submitted["id"].as_str().expect("id").to_string();
    let ended = wait_terminal(&service, &id).await;
    assert_eq!(ended["state"], "succeeded", "{ended}\n{}", service.log_text());
    assert_eq!(upload_secrets(&ns, &id), (1, Vec::new()), "its upload Secret went when it ended");

    // Page by page: 5 records in pages of 2 is three pages, the last without a Link.
    for task in ["lmeval_aas_mc", "lmeval_aas_gen"] {
        let (records, pages) = all_samples(&service, &id, task, 2).await;
        let doc_ids: Vec<i64> = records.iter().map(|r| r["doc_id"].as_i64().expect("doc_id")).collect();
        assert_eq!((doc_ids, pages), ((0..5).collect(), 3), "{task}");
    }
    let wrong = get(&service, &format!("/api/v1/evaluations/{id}/samples?task=lmeval_aas_mc&outcome=incorrect")).await;
    let wrong = wrong.text().await.expect("text");
    assert!(wrong.lines().all(|l| serde_json::from_str::<Value>(l).expect("record")["acc"] == 0.0), "{wrong}");

    // Every artifact downloads with the size and SHA-256 it is listed with.
    let listed: Value =
        serde_json::from_slice(&bytes(&service, &format!("/api/v1/evaluations/{id}/artifacts")).await).expect("list");
    let items = listed["items"].as_array().expect("items").clone();
    let paths: Vec<&str> = items.iter().map(|a| a["path"].as_str().expect("path")).collect();
    for expected in
        ["results.json", "samples/lmeval_aas_mc.jsonl", "samples/lmeval_aas_gen.jsonl", "log.txt", "manifest.json"]
    {
        assert!(paths.contains(&expected), "{expected} in {paths:?}");
    }
    let mut contents = std::collections::BTreeMap::new();
    for item in &items {
        let path = item["path"].as_str().expect("path");
        let content = bytes(&service, &format!("/api/v1/evaluations/{id}/artifacts/{path}")).await;
        assert_eq!(content.len() as u64, item["size"].as_u64().expect("size"), "{path}");
        assert_eq!(sha256_hex(&content), item["sha256"], "{path}");
        contents.insert(path.to_string(), content);
    }
    let results = bytes(&service, &format!("/api/v1/evaluations/{id}/results")).await;
    assert_eq!(results, contents["results.json"], "the whole results, from the bucket");
    let flask = bytes(&service, &format!("/job_results?task_id={id}")).await;
    assert_eq!(flask, contents["results.json"], "the Flask route's results too");

    // The archive holds exactly the listed files.
    let archive = bytes(&service, &format!("/api/v1/evaluations/{id}/artifacts.tar.gz")).await;
    let mut unpacked = std::collections::BTreeMap::new();
    for entry in tar::Archive::new(flate2::read::GzDecoder::new(&archive[..])).entries().expect("tar") {
        let mut entry = entry.expect("entry");
        let mut content = Vec::new();
        entry.read_to_end(&mut content).expect("read");
        unpacked.insert(entry.path().expect("path").to_string_lossy().into_owned(), content);
    }
    assert_eq!(unpacked, contents);

    // The manifest says what a rerun needs.
    let manifest: Value = serde_json::from_slice(&contents["manifest.json"]).expect("manifest");
    assert_eq!(manifest["lm_eval_version"], "0.4.13");
    assert_eq!(manifest["runner_image"], "ghcr.io/lm-eval-aas/runner:0.1.0");
    assert_eq!(manifest["argv"], submitted["command"], "the exact argv");
    assert_eq!(manifest["request"]["tasks"], json!(["lmeval_aas_mc", "lmeval_aas_gen"]));
    for task in ["lmeval_aas_mc", "lmeval_aas_gen"] {
        assert_eq!(manifest["task_config_sha256"][task].as_str().map(str::len), Some(64), "{manifest}");
        assert!(manifest["task_hashes"][task].is_string(), "{manifest}");
    }
    assert_eq!(
        manifest["seeds"],
        json!({"random_seed": 0, "numpy_seed": 1234, "torch_seed": 1234, "fewshot_seed": 1234})
    );
    assert!(manifest["started_at"].as_str() < manifest["finished_at"].as_str(), "{manifest}");
    assert_eq!(manifest["exit"]["code"], 0);
    assert_eq!(bytes(&service, &format!("/api/v1/evaluations/{id}/manifest")).await, contents["manifest.json"]);

    // What the bucket holds, and that the run record keeps only small things.
    let prefix = format!("runs/{}/{id}", ns.name);
    let keys = s3.keys(&prefix).await;
    let names: Vec<&str> = keys.iter().map(|k| k.rsplit('/').next().expect("name")).collect();
    assert_eq!(names, ["artifacts.json", "log.txt", "manifest.json", "outputs.bin"]);
    let record = ns.kubectl_json(&["get", "configmap", &format!("lmeval-{}", id.replace('-', ""))]);
    assert_eq!(record["data"]["outputs"], "stored");
    assert!(record.to_string().len() < 64 * 1024, "the record is small: {}", record.to_string().len());

    // The pod gone (and the record's copy of the log's end changed), the whole log comes from the bucket.
    let label = format!("lm-eval-aas.io/evaluation-id={id}");
    let deleted = ns.kubectl(&["delete", "pod", "-l", &label, "--wait=true"]);
    assert!(deleted.status.success(), "{}", String::from_utf8_lossy(&deleted.stderr));
    let patch = r#"{"data":{"log":"not the stored log\n"}}"#;
    let patched =
        ns.kubectl(&["patch", "configmap", &format!("lmeval-{}", id.replace('-', "")), "--type", "merge", "-p", patch]);
    assert!(patched.status.success(), "{}", String::from_utf8_lossy(&patched.stderr));
    let log = bytes(&service, &format!("/api/v1/evaluations/{id}/logs")).await;
    assert_eq!(log, contents["log.txt"], "the whole log, from the bucket");
    let tail = get(&service, &format!("/api/v1/evaluations/{id}/logs?tail_lines=2")).await.text().await.expect("tail");
    let last_two: Vec<&str> = std::str::from_utf8(&contents["log.txt"]).expect("utf-8").lines().rev().take(2).collect();
    assert_eq!(tail.lines().rev().collect::<Vec<_>>(), last_two);

    // DELETE removes the objects too.
    let response = client().delete(service.url(&format!("/api/v1/evaluations/{id}"))).send().await.expect("DELETE");
    assert_eq!(response.status(), 204);
    assert_eq!(s3.keys(&prefix).await, Vec::<String>::new(), "nothing of it is left in the bucket");
}

#[tokio::test(flavor = "multi_thread")]
async fn samples_need_log_samples_and_outputs_need_an_ended_run() {
    let Some(s3) = S3Server::start() else { return };
    let Some(ns) = TestNamespace::create("nosamples") else { return };
    let service = s3_service(&ns, &s3, &[]);
    let submitted = submit(&service, json!({"model": "dummy", "tasks": ["lmeval_aas_mc"], "limit": 2})).await;
    let id = submitted["id"].as_str().expect("id").to_string();
    assert_eq!(wait_terminal(&service, &id).await["state"], "succeeded");
    let response = get(&service, &format!("/api/v1/evaluations/{id}/samples?task=lmeval_aas_mc")).await;
    assert_eq!(response.status(), 409);
    let problem: Value = response.json().await.expect("problem");
    assert!(problem["detail"].as_str().is_some_and(|d| d.contains("log_samples")), "{problem}");
    assert_eq!(get(&service, &format!("/api/v1/evaluations/{id}/artifacts")).await.status(), 200);
}

/// The run's upload URLs are presigned for its own objects: task code that finds them cannot write or read
/// another evaluation's objects with them, nor without a signature, and holds no credentials.
#[tokio::test(flavor = "multi_thread")]
async fn task_code_cannot_use_its_upload_urls_on_another_evaluations_outputs() {
    let Some(s3) = S3Server::start() else { return };
    let Some(ns) = TestNamespace::create("upload-probe") else { return };
    let service = s3_service(&ns, &s3, &[]);
    let first = submit(&service, json!({"model": "dummy", "tasks": ["lmeval_aas_mc"], "limit": 1})).await;
    let first_id = first["id"].as_str().expect("id").to_string();
    assert_eq!(wait_terminal(&service, &first_id).await["state"], "succeeded");
    let store = s3.client();
    let other_log = object_store::path::Path::from(format!("runs/{}/{first_id}/log.txt", ns.name));
    let before = store.get(&other_log).await.expect("the first run's log").bytes().await.expect("bytes");
    let keys_before = s3.keys(&format!("runs/{}/{first_id}", ns.name)).await;

    let key = IdempotencyKey { key: "upload-probe".into(), body_digest: String::new() };
    let id = key.evaluation_id(&format!("{}\0127.0.0.1", ns.name)).to_string();
    let endpoint = s3.endpoint();
    let other = format!("{endpoint}/{BUCKET}/runs/{}/{first_id}", ns.name);
    let script = format!(
        r#"U=$(cat /lmeval/upload/log.txt)
O=$(printf %s "$U" | sed 's#/{id}/#/{first_id}/#')
code() {{ /usr/bin/curl -s -o /dev/null -w '%{{http_code}}' "$@"; }}
echo "probe put-with-url $(code -X PUT --data-binary forged "$O")" >&2
echo "probe get-with-url $(code "$O")" >&2
echo "probe put-unsigned $(code -X PUT --data-binary forged {other}/log.txt)" >&2
echo "probe get-unsigned $(code {other}/log.txt)" >&2
echo "probe list-unsigned $(code '{endpoint}/{BUCKET}?list-type=2')" >&2
echo "probe put-own $(code -X PUT --data-binary own "$U")" >&2
echo "probe credentials $(env | grep -c -i -e aws_ -e secret)" >&2
"#
    );
    let inline = common::task_running("lmeval_aas_upload_probe", &script);
    let response = client()
        .post(service.url("/api/v1/evaluations"))
        .header("Idempotency-Key", "upload-probe")
        .json(&json!({"model": "dummy", "tasks": ["lmeval_aas_upload_probe"], "limit": 1, "inline_tasks": {"probe.yaml": inline}}))
        .send()
        .await
        .expect("POST");
    assert_eq!(response.status(), 202);
    let ended = wait_terminal(&service, &id).await;
    let log = get(&service, &format!("/api/v1/evaluations/{id}/logs")).await.text().await.expect("log");
    let said = |probe: &str| {
        log.lines()
            .find_map(|line| line.strip_prefix(&format!("probe {probe} ")))
            .unwrap_or_else(|| panic!("the probe did not report {probe}; ended {ended}\nlog:\n{log}"))
            .trim()
            .to_string()
    };
    assert_eq!(said("put-with-url"), "403", "its URL, pointed at another evaluation's object");
    assert_eq!(said("get-with-url"), "403", "its URL cannot read another's object either");
    assert_eq!(said("put-unsigned"), "403");
    assert_eq!(said("get-unsigned"), "403");
    assert_eq!(said("list-unsigned"), "403");
    assert_eq!(said("put-own"), "200", "its own object is what its URL is for");
    assert_eq!(said("credentials"), "0", "no credentials in its environment");
    let after = store.get(&other_log).await.expect("the first run's log").bytes().await.expect("bytes");
    assert_eq!(after, before, "another evaluation's log is untouched");
    assert_eq!(s3.keys(&format!("runs/{}/{first_id}", ns.name)).await, keys_before);
}

/// The store goes down while a run uploads: the driver retries with back-off, the evaluation fails
/// `OutputUploadFailed` only after the retries, and the log it uploaded before is still there.
#[tokio::test(flavor = "multi_thread")]
async fn a_store_that_goes_down_fails_the_run_after_retries_and_keeps_what_was_written() {
    let Some(mut s3) = S3Server::start() else { return };
    let Some(ns) = TestNamespace::create("store-down") else { return };
    let service = s3_service(&ns, &s3, &["--output-upload-patience-seconds", "6"]);
    let submitted = submit(&service, json!({"model": "dummy", "tasks": ["lmeval_aas_slow"], "limit": 400})).await;
    let id = submitted["id"].as_str().expect("id").to_string();
    let log_key = format!("runs/{}/{id}/log.txt", ns.name);
    let store = s3.client();
    let location = object_store::path::Path::from(log_key.as_str());
    let uploaded =
        wait_for_async(std::time::Duration::from_secs(120), || async { store.head(&location).await.ok().map(|_| ()) })
            .await;
    assert!(uploaded.is_some(), "the log was uploaded while the run went on; {}", service.log_text());
    let state = common::evaluation(&service, &id).await;
    assert_eq!(state["state"], "running", "the store goes down while the run still runs: {state}");
    s3.stop();

    let ended = wait_terminal(&service, &id).await;
    assert_eq!(
        (ended["state"].as_str(), ended["reason"].as_str()),
        (Some("failed"), Some("OutputUploadFailed")),
        "{ended}"
    );
    let message = ended["message"].as_str().expect("message");
    assert!(message.contains("gave up after") && message.contains("attempts"), "{message}");
    let pod_log = get(&service, &format!("/api/v1/evaluations/{id}/logs")).await.text().await.expect("log");
    assert!(pod_log.contains("retrying in"), "the driver retried:\n{pod_log}");

    s3.restart();
    let kept = s3.client().get(&location).await.expect("still there");
    let kept = kept.bytes().await.expect("bytes");
    assert!(!kept.is_empty());
    assert!(pod_log.as_bytes().starts_with(&kept), "what was uploaded is the log's beginning, kept");
}

/// The same output set on a ReadWriteMany claim (a hostPath PersistentVolume here), mounted in the runner with
/// the evaluation's own directory as its subPath, and read by the service where the claim is mounted for it.
#[tokio::test(flavor = "multi_thread")]
async fn an_output_set_on_a_claim_is_served_and_deleted() {
    let Some(ns) = TestNamespace::create("claim") else { return };
    let volume = tempfile::tempdir().expect("tempdir");
    let pv = format!("lmeval-outputs-{}", ns.name);
    let manifests = format!(
        "apiVersion: v1\nkind: PersistentVolume\nmetadata: {{name: {pv}}}\nspec:\n  capacity: {{storage: 1Gi}}\n  accessModes: [ReadWriteMany]\n  persistentVolumeReclaimPolicy: Retain\n  storageClassName: ''\n  hostPath: {{path: {path}, type: Directory}}\n---\n\
         apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {{name: outputs, namespace: {ns}}}\nspec:\n  accessModes: [ReadWriteMany]\n  storageClassName: ''\n  volumeName: {pv}\n  resources: {{requests: {{storage: 1Gi}}}}\n",
        path = volume.path().display(),
        ns = ns.name
    );
    let applied = ns.kubectl_apply(&manifests);
    assert!(applied.status.success(), "{}", String::from_utf8_lossy(&applied.stderr));
    let mount = volume.path().to_string_lossy().into_owned();
    let service = ns.service(&["--output-store", "pvc:outputs", "--output-store-mount", &mount]);
    let submitted =
        submit(&service, json!({"model": "dummy", "tasks": ["lmeval_aas_mc"], "limit": 3, "log_samples": true})).await;
    let id = submitted["id"].as_str().expect("id").to_string();
    let ended = wait_terminal(&service, &id).await;
    assert_eq!(ended["state"], "succeeded", "{ended}");
    let (records, pages) = all_samples(&service, &id, "lmeval_aas_mc", 2).await;
    assert_eq!((records.len(), pages), (3, 2));
    let dir = volume.path().join(&ns.name).join(&id);
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .expect("the evaluation's directory")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(files, ["artifacts.json", "log.txt", "manifest.json", "outputs.bin"]);
    let listed: Value =
        serde_json::from_slice(&bytes(&service, &format!("/api/v1/evaluations/{id}/artifacts")).await).expect("list");
    let samples = listed["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|a| a["path"] == "samples/lmeval_aas_mc.jsonl")
        .expect("samples")
        .clone();
    let content = bytes(&service, &format!("/api/v1/evaluations/{id}/artifacts/samples%2Flmeval_aas_mc.jsonl")).await;
    assert_eq!(sha256_hex(&content), samples["sha256"]);

    let response = client().delete(service.url(&format!("/api/v1/evaluations/{id}"))).send().await.expect("DELETE");
    assert_eq!(response.status(), 204);
    assert!(!dir.exists(), "its directory is gone with it");
    drop(service);
    let _ = ns.kubectl(&["delete", "pvc", "outputs", "--wait=false"]);
    let _ = ns.kubectl(&["delete", "pv", &pv, "--wait=false"]);
}
