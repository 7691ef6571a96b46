//! Output sets on the local backend, from its data directory: the same routes as on Kubernetes, hostile
//! artifact paths refused, links that task code plants never followed, and a samples file of over 100 MB
//! served to four downloaders at once while the service's memory hardly moves.

mod common;

use common::{Service, client, submit, wait_terminal};
use lm_eval_aas::outputs::manifest::sha256_hex;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

async fn listed(service: &Service, id: &str) -> Vec<Value> {
    let response = client().get(service.url(&format!("/api/v1/evaluations/{id}/artifacts"))).send().await.expect("GET");
    assert_eq!(response.status(), 200);
    let list: Value = response.json().await.expect("list");
    list["items"].as_array().expect("items").clone()
}

/// Task code plants links in its output directory; hostile paths ask for files outside the evaluation. Neither
/// is served: only what the index lists, by the names it lists.
#[tokio::test(flavor = "multi_thread")]
async fn hostile_paths_and_planted_links_never_reach_a_file_outside_the_evaluation() {
    let data = tempfile::tempdir().expect("tempdir");
    let service = Service::start(data.path(), &[]);
    let plant = "mkdir -p output/m && ln -sf /etc/passwd output/planted.txt && ln -sf ../../record.json output/m/samples_lmeval_aas_plant_2026-01-01T00-00-00.000001.jsonl && ln -sfn /etc output/etc";
    let inline = common::task_running("lmeval_aas_plant", plant);
    let submitted = submit(
        &service,
        json!({"model": "dummy", "tasks": ["lmeval_aas_plant"], "limit": 2, "log_samples": true, "inline_tasks": {"plant.yaml": inline}}),
    )
    .await;
    let id = submitted["id"].as_str().expect("id").to_string();
    let ended = wait_terminal(&service, &id).await;
    assert_eq!(ended["state"], "succeeded", "{ended}");
    let evaluation_dir = data.path().join("evaluations").join(&id);
    assert!(evaluation_dir.join("output/planted.txt").is_symlink(), "the task planted its links");

    let items = listed(&service, &id).await;
    let paths: Vec<&str> = items.iter().map(|a| a["path"].as_str().expect("path")).collect();
    assert!(paths.contains(&"samples/lmeval_aas_plant.jsonl"), "{paths:?}");
    assert!(
        !paths.iter().any(|p| p.contains("planted") || p.starts_with("output/etc")),
        "no link is listed: {paths:?}"
    );
    let samples = items.iter().find(|a| a["path"] == "samples/lmeval_aas_plant.jsonl").expect("samples");
    let real = std::fs::read_dir(evaluation_dir.join("output"))
        .expect("output")
        .flatten()
        .find(|e| e.path().is_dir() && e.file_name() != "m" && e.file_name() != "etc")
        .expect("lm-eval's model directory");
    let written = std::fs::read_dir(real.path())
        .expect("dir")
        .flatten()
        .find(|e| e.file_name().to_string_lossy().starts_with("samples_"))
        .expect("samples file");
    assert_eq!(
        samples["sha256"],
        sha256_hex(&std::fs::read(written.path()).expect("read")),
        "the file lm-eval wrote, not the planted link"
    );

    let passwd = std::fs::read("/etc/passwd").expect("passwd");
    for hostile in [
        "..%2F..%2F..%2Fetc%2Fpasswd",
        "../../../etc/passwd",
        "%2Fetc%2Fpasswd",
        "output%2Fplanted.txt",
        "output/planted.txt",
        "output/etc/passwd",
        "record.json",
        "a%00b",
        "samples%2F..%2F..%2Frecord.json",
        "%2e%2e/record.json",
        "%5c..%5crecord.json",
    ] {
        let url = service.url(&format!("/api/v1/evaluations/{id}/artifacts/{hostile}"));
        let response = client().get(&url).send().await.expect("GET");
        let status = response.status().as_u16();
        let content_type = response.headers().get("content-type").map(|v| v.to_str().unwrap_or_default().to_string());
        let body = response.bytes().await.expect("body");
        assert!((400..500).contains(&status), "{hostile}: {status}");
        assert_eq!(content_type.as_deref(), Some("application/problem+json"), "{hostile}");
        assert!(!body.windows(passwd.len().min(32)).any(|w| w == &passwd[..passwd.len().min(32)]), "{hostile}");
        let problem: Value = serde_json::from_slice(&body).expect("problem");
        assert!(problem["field"] == "path" || status == 404, "{hostile}: {problem}");
    }
    let encoded = client()
        .get(service.url(&format!("/api/v1/evaluations/{id}/artifacts/samples%2Flmeval_aas_plant.jsonl")))
        .send()
        .await
        .expect("GET");
    assert_eq!(encoded.status(), 200, "an encoded slash names the same artifact");
    let range = client()
        .get(service.url(&format!("/api/v1/evaluations/{id}/artifacts/samples/lmeval_aas_plant.jsonl")))
        .header("Range", "bytes=0-9")
        .send()
        .await
        .expect("GET");
    assert_eq!(range.status(), 206);
    assert_eq!(range.headers()["content-range"].to_str().expect("ascii"), format!("bytes 0-9/{}", samples["size"]));
    assert_eq!(range.bytes().await.expect("body").as_ref(), b"{\"doc_id\":");
    let past = client()
        .get(service.url(&format!("/api/v1/evaluations/{id}/artifacts/log.txt")))
        .header("Range", "bytes=999999999-")
        .send()
        .await
        .expect("GET");
    assert_eq!(past.status(), 416);

    // The manifest names the inline task file by its hash, and the exact argv.
    let manifest: Value = client()
        .get(service.url(&format!("/api/v1/evaluations/{id}/manifest")))
        .send()
        .await
        .expect("GET")
        .json()
        .await
        .expect("manifest");
    assert_eq!(manifest["inline_tasks_sha256"]["plant.yaml"], sha256_hex(inline.as_bytes()));
    assert_eq!(manifest["argv"], submitted["command"]);
}

fn rss_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|rest| rest.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// Samples of over 100 MB (a generated task of long documents, on the dummy model), downloaded by four clients
/// at once: each gets every byte (the listed SHA-256), and the service's resident memory grows by less than 20 MB.
#[tokio::test(flavor = "multi_thread")]
async fn a_hundred_megabytes_of_samples_reach_four_downloaders_without_growing_the_service() {
    let data = tempfile::tempdir().expect("tempdir");
    let dataset = data.path().join("long.jsonl");
    {
        use std::io::Write;
        let mut out = std::io::BufWriter::new(std::fs::File::create(&dataset).expect("dataset"));
        for i in 0..3600 {
            let text: String = (0..2000).map(|w| format!("w{} ", (i * 7 + w) % 997)).collect();
            writeln!(out, "{}", json!({"text": text, "choices": ["yes", "no"], "answer": i % 2})).expect("write");
        }
    }
    let inline = format!(
        "task: lmeval_aas_long\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {}\ntest_split: test\n\
         output_type: multiple_choice\ndoc_to_text: \"{{{{text}}}}\\nAnswer:\"\ndoc_to_choice: \"{{{{choices}}}}\"\n\
         doc_to_target: answer\nmetric_list:\n  - metric: acc\nmetadata:\n  version: 1.0\n",
        dataset.display()
    );
    let service = Service::start(&data.path().join("service"), &[]);
    let submitted = submit(
        &service,
        json!({"model": "dummy", "tasks": ["lmeval_aas_long"], "log_samples": true, "inline_tasks": {"long.yaml": inline}}),
    )
    .await;
    let id = submitted["id"].as_str().expect("id").to_string();
    let ended = common::wait_until(&service, &id, std::time::Duration::from_secs(900), "the end", |e| {
        matches!(e["state"].as_str(), Some("succeeded" | "failed" | "cancelled"))
    })
    .await;
    assert_eq!(ended["state"], "succeeded", "{ended}");
    let items = listed(&service, &id).await;
    let samples = items.iter().find(|a| a["path"] == "samples/lmeval_aas_long.jsonl").expect("samples").clone();
    let size = samples["size"].as_u64().expect("size");
    assert!(size > 100_000_000, "the samples are over 100 MB: {size}");

    let pid = service.child.id();
    // Resets the peak (VmHWM) to the current resident size, so the peak read below is the downloads'.
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").expect("reset the peak RSS");
    let before = rss_kib(pid, "VmRSS:");
    let url = service.url(&format!("/api/v1/evaluations/{id}/artifacts/samples/lmeval_aas_long.jsonl"));
    let downloads = (0..4).map(|_| {
        let url = url.clone();
        tokio::spawn(async move {
            let mut response = client().get(&url).send().await.expect("GET");
            assert_eq!(response.status(), 200);
            let (mut hasher, mut received) = (Sha256::new(), 0u64);
            while let Some(chunk) = response.chunk().await.expect("chunk") {
                received += chunk.len() as u64;
                hasher.update(&chunk);
            }
            (received, format!("{:x}", hasher.finalize()))
        })
    });
    for download in futures::future::join_all(downloads).await {
        let (received, sha256) = download.expect("download");
        assert_eq!((received, sha256.as_str()), (size, samples["sha256"].as_str().expect("sha256")));
    }
    let peak = rss_kib(pid, "VmHWM:");
    let grew = peak.saturating_sub(before);
    println!("service RSS {before} KiB before, peak {peak} KiB: grew {grew} KiB for 4 x {size} bytes");
    assert!(grew < 20 * 1024, "the service grew by {grew} KiB serving 4 x {size} bytes");
}
