//! Writer-level audit figures as one JSON object; bench/audit_bench.py runs it.
//!
//!     cargo run --release -p gatewayd-core --example audit_bench -- MEM_DIR DISK_DIR [RECORDS]
//!
//! MEM_DIR should be on tmpfs, so the CPU cost of an append is not hidden behind the disk;
//! DISK_DIR is where fsync'd appends are measured. Each gets a fresh subdirectory.

use std::env;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use gatewayd_core::audit::{leaf_hash, verify_chain, AuditOptions, AuditWriter, Frontier, SyncPolicy};
use serde_json::{json, Map, Value};

const CHAIN: &str = "bench";

/// A record shaped like the gateway's request records (about 700 bytes once chained).
fn request_record(n: u64) -> Map<String, Value> {
    let record = json!({
        "kind": "request",
        "request_id": format!("{n:032x}"),
        "tenant": "acme",
        "api": "chat",
        "model": "gpt-4o-mini",
        "decision": "allow",
        "rule": null,
        "rules": ["redact-emails"],
        "redacted": true,
        "policy_version": 12,
        "routing_version": 4,
        "config_version": 7,
        "upstream": "openai",
        "upstream_model": "gpt-4o-mini-2024-07-18",
        "stream": false,
        "status": 200,
        "error": null,
        "latency_us": 1834 + n % 1000,
        "cache": "miss",
        "prompt_sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
        "response_sha256": "60303ae22b998861bce3b28f33eec1be758a213c86c93c076dbe9f558c11c752",
        "shadow": null,
    });
    let Value::Object(map) = record else { unreachable!("json! object literal") };
    map
}

fn fresh(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    let _ = fs::remove_dir_all(&path);
    fs::create_dir_all(&path).expect("create bench dir");
    path
}

fn per_op_ns(elapsed: Duration, ops: u64) -> f64 {
    elapsed.as_nanos() as f64 / ops as f64
}

fn main() {
    let args: Vec<String> = env::args().collect();
    let mem = PathBuf::from(args.get(1).expect("MEM_DIR"));
    let disk = PathBuf::from(args.get(2).expect("DISK_DIR"));
    let records: u64 = args.get(3).map_or(1_000_000, |n| n.parse().expect("RECORDS"));
    let options = AuditOptions { segment_bytes: 64 << 20, sync: SyncPolicy::Never };

    // Append: canonical encoding, CRC-32C, SHA-256 leaf hash, frontier update, write(2).
    let root = fresh(&mem, "append");
    let (mut writer, _) = AuditWriter::open(&root, CHAIN, options).expect("open");
    let fields: Vec<_> = (0..records).map(request_record).collect();
    let started = Instant::now();
    for record in fields {
        writer.append(record).expect("append");
    }
    let append_ns = per_op_ns(started.elapsed(), records);
    drop(writer);
    let chain_bytes: u64 = fs::read_dir(root.join(CHAIN))
        .expect("list")
        .map(|e| e.expect("entry").metadata().expect("meta").len())
        .sum();
    let frame_bytes = (chain_bytes / records) as usize;

    // write(2) of a frame that size, alone: the part of an append that is the kernel's.
    let path = fresh(&mem, "write").join("frames");
    let mut file = File::options().create(true).append(true).open(&path).expect("open");
    let frame = vec![b'x'; frame_bytes];
    let started = Instant::now();
    for _ in 0..records {
        file.write_all(&frame).expect("write");
    }
    let write_ns = per_op_ns(started.elapsed(), records);

    // Leaf hash and frontier update alone, over payloads that size.
    let payload = vec![b'{'; frame_bytes - 8];
    let mut tree = Frontier::new();
    let started = Instant::now();
    for _ in 0..records {
        tree.push(leaf_hash(&payload));
    }
    let hash_ns = per_op_ns(started.elapsed(), records);

    // Verify: every frame, link, header and the Merkle tree, one thread, warm page cache.
    verify_chain(&root, CHAIN).expect("verify");
    let started = Instant::now();
    let report = verify_chain(&root, CHAIN).expect("verify");
    let verify_s = started.elapsed().as_secs_f64();
    assert_eq!(report.records, records);

    // Durable appends, one at a time: every append waits for its own fdatasync.
    let root = fresh(&disk, "always");
    let always = AuditOptions { sync: SyncPolicy::Always, ..options };
    let (mut writer, _) = AuditWriter::open(&root, CHAIN, always).expect("open");
    let started = Instant::now();
    let mut durable = 0;
    while started.elapsed() < Duration::from_secs(3) {
        writer.append(request_record(durable)).expect("append");
        durable += 1;
    }
    let always_s = started.elapsed().as_secs_f64();

    let out = json!({
        "records": records,
        "frame_bytes": frame_bytes,
        "append_ns": append_ns,
        "write_syscall_ns": write_ns,
        "append_minus_write_ns": append_ns - write_ns,
        "leaf_hash_and_frontier_ns": hash_ns,
        "verify_records_per_s": records as f64 / verify_s,
        "verify_mb_per_s": chain_bytes as f64 / verify_s / 1e6,
        "always_appends_per_s": durable as f64 / always_s,
        "always_append_us": always_s * 1e6 / durable as f64,
    });
    println!("{out}");
}
