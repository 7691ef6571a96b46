//! Output sets on the local backend, from its data directory: the same routes as on Kubernetes, hostile
//! artifact paths refused, links that task code plants never followed, a samples file of over 100 MB served to
//! four downloaders at once while the service's memory hardly moves, and a 64 MiB samples record and 100 MiB log
//! lines read every way at once in bounded memory.

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

/// What a streamed body held: its size, its longest line, its lines' count, its first bytes and last line, and
/// the log lines marked as cut. Read chunk by chunk, so the test does not hold 64 MiB either.
#[derive(Debug, Default)]
struct Read {
    bytes: u64,
    lines: u64,
    longest: u64,
    head: Vec<u8>,
    last: Vec<u8>,
    cut: Vec<String>,
}

async fn read_streamed(url: String, accept: &str) -> Read {
    let mut response = client().get(&url).header("accept", accept).send().await.expect("GET");
    assert_eq!(response.status(), 200, "{url}");
    let mut read = Read::default();
    let mut line = 0u64;
    while let Some(chunk) = response.chunk().await.expect("chunk") {
        read.bytes += chunk.len() as u64;
        if read.head.len() < 100 {
            read.head.extend_from_slice(&chunk[..chunk.len().min(100)]);
        }
        for piece in chunk.split_inclusive(|b| *b == b'\n') {
            if line == 0 || read.last.ends_with(b"\n") {
                read.last.clear();
            }
            line += piece.len() as u64;
            if read.last.len() < 200_000 {
                read.last.extend_from_slice(piece);
            }
            if piece.ends_with(b"\n") {
                read.lines += 1;
                read.longest = read.longest.max(line - 1);
                let text = String::from_utf8_lossy(&read.last);
                if let Some(at) = text.find("… [line cut at") {
                    read.cut.push(text[at.saturating_sub(10)..].trim_end().to_string());
                }
                line = 0;
            }
        }
    }
    read
}

/// Task code writes one 64 MiB samples record (an array of numbers: about 1 GiB as a JSON tree) and prints a
/// 100 MiB line without an end; the log file gets one more. Filtering the samples, and reading the log whole,
/// by its tail, following it and as server-sent events, all at once, grow the service by less than 50 MB, and
/// /healthz answers all along. (The figures, and the slowest /healthz, are in `scripts/bench-hostile`.)
#[tokio::test(flavor = "multi_thread")]
async fn a_64_mib_samples_record_and_a_100_mib_log_line_are_read_in_bounded_memory() {
    // Just under 64 MiB: the largest record the reader before this one parsed whole.
    const RECORD_NUMBERS: u64 = 32 * 1024 * 1024 - 64;
    let data = tempfile::tempdir().expect("tempdir");
    let service = Service::start(data.path(), &[]);
    // Once per run (lm-eval renders a prompt many times): the planted samples of task lmeval_aas_huge, doc 1's
    // record holding 32 Mi numbers, then 100 MiB of `x` on lm_eval's standard error without a newline.
    let script = format!(
        "mkdir output/.once 2>/dev/null || exit 0; mkdir -p output/m; \
         {{ printf '{{\"doc_id\": 0, \"metrics\": [\"acc\"], \"acc\": 0.0}}\\n{{\"doc_id\": 1, \"metrics\": [\"acc\"], \"resps\": ['; \
         yes 0, | tr -d '\\n' | head -c {}; printf '0], \"acc\": 1.0}}\\n{{\"doc_id\": 2, \"metrics\": [\"acc\"], \"acc\": 1}}\\n'; }} \
         > output/m/samples_lmeval_aas_huge_2026-01-01T00-00-00.000001.jsonl; \
         head -c 104857600 /dev/zero | tr '\\0' x >&2",
        2 * (RECORD_NUMBERS - 1)
    );
    let inline = common::task_running("lmeval_aas_hostile", &script);
    let submitted = submit(
        &service,
        json!({"model": "dummy", "tasks": ["lmeval_aas_hostile"], "limit": 2, "log_samples": true, "inline_tasks": {"hostile.yaml": inline}}),
    )
    .await;
    let id = submitted["id"].as_str().expect("id").to_string();
    let ended = wait_terminal(&service, &id).await;
    assert_eq!(ended["state"], "succeeded", "{ended}");
    let items = listed(&service, &id).await;
    let huge = items.iter().find(|a| a["path"] == "samples/lmeval_aas_huge.jsonl").expect("the planted samples");
    assert!(huge["size"].as_u64().expect("size") > 63 * 1024 * 1024, "{huge}");
    // And a line the driver never saw: whatever wrote the log, its reader holds no more than a cut line.
    {
        use std::io::Write;
        let log = data.path().join("evaluations").join(&id).join("log.txt");
        let mut log = std::fs::OpenOptions::new().append(true).open(log).expect("the log");
        let line = vec![b'y'; 1024 * 1024];
        for _ in 0..100 {
            log.write_all(&line).expect("write");
        }
    }

    let pid = service.child.id();
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").expect("reset the peak RSS");
    let before = rss_kib(pid, "VmRSS:");
    let probing = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let prober = {
        let probing = std::sync::Arc::clone(&probing);
        let address = service.base.trim_start_matches("http://").to_string();
        std::thread::spawn(move || {
            use std::io::{Read as _, Write as _};
            let mut took = Vec::new();
            while probing.load(std::sync::atomic::Ordering::Relaxed) {
                let started = std::time::Instant::now();
                let mut stream = std::net::TcpStream::connect(&address).expect("connect");
                stream.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").expect("send");
                let mut answer = Vec::new();
                stream.read_to_end(&mut answer).expect("/healthz");
                assert!(answer.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&answer));
                took.push(started.elapsed());
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            took.sort();
            took
        })
    };
    let samples = service.url(&format!("/api/v1/evaluations/{id}/samples?task=lmeval_aas_huge"));
    let logs = service.url(&format!("/api/v1/evaluations/{id}/logs"));
    let (correct, incorrect, whole, tail, followed, events) = tokio::join!(
        read_streamed(format!("{samples}&outcome=correct"), "*/*"),
        read_streamed(format!("{samples}&outcome=incorrect"), "*/*"),
        read_streamed(logs.clone(), "*/*"),
        read_streamed(format!("{logs}?tail_lines=1"), "*/*"),
        read_streamed(format!("{logs}?follow=true"), "*/*"),
        read_streamed(format!("{logs}?follow=true"), "text/event-stream"),
    );
    probing.store(false, std::sync::atomic::Ordering::Relaxed);
    let took = prober.join().expect("prober");
    let (median, slowest) = (took[took.len() / 2], took[took.len() - 1]);
    let peak = rss_kib(pid, "VmHWM:");
    let grew = peak.saturating_sub(before);
    println!(
        "service RSS {before} KiB before, peak {peak} KiB: grew {grew} KiB; /healthz median {median:?}, p90 {:?}, slowest {slowest:?} of {}",
        took[took.len() * 9 / 10],
        took.len()
    );

    // The samples: the 64 MiB record kept whole, and the right ones of the small records.
    let (start, end, last) = (
        r#"{"doc_id": 1, "metrics": ["acc"], "resps": ["#,
        "0], \"acc\": 1.0}\n",
        "{\"doc_id\": 2, \"metrics\": [\"acc\"], \"acc\": 1}\n",
    );
    assert_eq!(correct.lines, 2);
    let expected = (start.len() + end.len() + last.len()) as u64 + 2 * (RECORD_NUMBERS - 1);
    assert_eq!(correct.bytes, expected, "{:?}", String::from_utf8_lossy(&correct.head));
    assert!(correct.head.starts_with(format!("{start}0,0,0,").as_bytes()));
    assert_eq!(correct.last, last.as_bytes());
    assert_eq!(incorrect.last, b"{\"doc_id\": 0, \"metrics\": [\"acc\"], \"acc\": 0.0}\n");
    assert_eq!(incorrect.lines, 1);
    // The log: both long lines cut at 64 KiB and marked, however it is read.
    let longest = 64 * 1024 + 100;
    let of_x = |read: &Read| read.cut.iter().any(|cut| cut.starts_with("xxxxxxxxxx… [line cut at 65536 of its "));
    let of_y = "yyyyyyyyyy… [line cut at 65536 of its 104857600 bytes]";
    for (name, read) in [("whole", &whole), ("followed", &followed), ("events", &events)] {
        assert!(read.longest < longest, "{name}: a line of {} bytes", read.longest);
        assert!(of_x(read) && read.cut.iter().any(|cut| cut == of_y), "{name}: {:?}", read.cut);
    }
    assert_eq!(tail.lines, 2, "the last line and the unfinished one");
    assert!(tail.longest < longest && tail.cut.last().map(String::as_str) == Some(of_y), "{:?}", tail.cut);

    assert!(grew < 50 * 1024, "the service grew by {grew} KiB");
    // Every probe was answered meanwhile, most at once; the slowest depends on what else this machine runs (a
    // debug build, other tests' lm_eval on the same cores), so its figure is measured by `scripts/bench-hostile`.
    // Afterwards at once, given a core: the best of up to 50 probes, as a probe may lose its core to another test.
    assert!(median < std::time::Duration::from_millis(50), "/healthz took {median:?} (median) during the reads");
    let mut best = std::time::Duration::MAX;
    for _ in 0..50 {
        let started = std::time::Instant::now();
        assert_eq!(client().get(service.url("/healthz")).send().await.expect("/healthz").status(), 200);
        best = best.min(started.elapsed());
        if best < std::time::Duration::from_millis(50) {
            break;
        }
    }
    assert!(best < std::time::Duration::from_millis(50), "/healthz took {best:?} at best after the reads");
}
