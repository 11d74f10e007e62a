//! Writer-level audit figures as one JSON object; bench/audit_bench.py runs it.
//!
//!     cargo run --release -p gatewayd-core --example audit_bench -- MEM_DIR DISK_DIR [RECORDS]
//!
//! MEM_DIR should be on tmpfs, so the CPU cost of an append is not hidden behind the disk;
//! DISK_DIR is where fsync'd appends are measured. Each gets a fresh subdirectory.
//!
//! CPU figures are this thread's CPU time (from /proc/thread-self/schedstat), so they hold
//! on a shared, busy machine; wall-clock figures are given beside them.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use gatewayd_core::audit::{
    frame_record, leaf_hash, verify_chain, AuditOptions, AuditWriter, Frontier, SyncPolicy,
};
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
    let Value::Object(map) = record else {
        unreachable!("json! object literal")
    };
    map
}

fn fresh(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    let _ = fs::remove_dir_all(&path);
    fs::create_dir_all(&path).expect("create bench dir");
    path
}

/// Nanoseconds this thread has spent on a CPU.
fn cpu_ns() -> u64 {
    let stat = fs::read_to_string("/proc/thread-self/schedstat").expect("schedstat");
    stat.split_whitespace()
        .next()
        .and_then(|ns| ns.parse().ok())
        .expect("schedstat field")
}

/// (wall, CPU) nanoseconds per operation of `run`, which does `ops` of them.
fn measure(ops: u64, run: impl FnOnce()) -> (f64, f64) {
    let mut total = (0, 0);
    timed(&mut total, run);
    per_op(total, ops)
}

/// Adds the (wall, CPU) nanoseconds `run` takes to `total`.
fn timed(total: &mut (u64, u64), run: impl FnOnce()) {
    let (wall, cpu) = (Instant::now(), cpu_ns());
    run();
    total.1 += cpu_ns() - cpu;
    total.0 += wall.elapsed().as_nanos() as u64;
}

fn per_op((wall, cpu): (u64, u64), ops: u64) -> (f64, f64) {
    (wall as f64 / ops as f64, cpu as f64 / ops as f64)
}

/// Records are made in batches small enough to stay in cache, as the gateway's record of a
/// request is built just before it is appended; only the appending is timed.
const BATCH: u64 = 256;

fn main() {
    let args: Vec<String> = env::args().collect();
    let mem = PathBuf::from(args.get(1).expect("MEM_DIR"));
    let disk = PathBuf::from(args.get(2).expect("DISK_DIR"));
    let records: u64 = args
        .get(3)
        .map_or(1_000_000, |n| n.parse().expect("RECORDS"));
    let options = AuditOptions {
        segment_bytes: 64 << 20,
        sync: SyncPolicy::Never,
    };

    // Everything an append does but the write(2): canonical JSON encoding, CRC-32C,
    // SHA-256 leaf hash, frontier update.
    let mut frame = Vec::with_capacity(1024);
    let mut tree = Frontier::new();
    let mut prev = [0; 32];
    let mut total = (0, 0);
    for start in (1..=records).step_by(BATCH as usize) {
        let batch: Vec<_> = (start..(start + BATCH).min(records + 1))
            .map(|seq| (seq, request_record(seq)))
            .collect();
        timed(&mut total, || {
            for (seq, record) in &batch {
                frame.clear();
                prev = frame_record(
                    &mut frame,
                    CHAIN,
                    *seq,
                    &prev,
                    1_700_000_000_000_000 + seq,
                    record,
                )
                .expect("frame");
                tree.push(prev);
            }
        });
    }
    let (frame_wall, frame_cpu) = per_op(total, records);
    let frame_bytes = frame.len();

    // Of that, hashing and framing alone: SHA-256 leaf hash, CRC-32C, frame header and the
    // frontier update, over a payload of that size.
    let payload = frame[8..].to_vec();
    let mut header = [0u8; 8];
    let mut tree = Frontier::new();
    let (_, hash_cpu) = measure(records, || {
        for _ in 0..records {
            header[..4].copy_from_slice(&(payload.len() as u32).to_le_bytes());
            header[4..].copy_from_slice(&crc32c::crc32c(&payload).to_le_bytes());
            tree.push(leaf_hash(&payload));
        }
    });
    assert_ne!(header, [0; 8]);

    // The whole append, write(2) included, to tmpfs.
    let root = fresh(&mem, "append");
    let (mut writer, _) = AuditWriter::open(&root, CHAIN, options).expect("open");
    let mut total = (0, 0);
    for start in (0..records).step_by(BATCH as usize) {
        let batch: Vec<_> = (start..(start + BATCH).min(records))
            .map(request_record)
            .collect();
        timed(&mut total, || {
            for record in batch {
                writer.append(record).expect("append");
            }
        });
    }
    let (append_wall, append_cpu) = per_op(total, records);
    drop(writer);
    let chain_bytes: u64 = fs::read_dir(root.join(CHAIN))
        .expect("list")
        .map(|e| e.expect("entry").metadata().expect("meta").len())
        .sum();

    // Verify: every frame, link, header and the Merkle tree; one thread, warm page cache.
    verify_chain(&root, CHAIN).expect("verify");
    let mut verified = 0;
    let (verify_wall, verify_cpu) = measure(records, || {
        verified = verify_chain(&root, CHAIN).expect("verify").records;
    });
    assert_eq!(verified, records);

    // Durable appends, one at a time: every append waits for its own fdatasync.
    let root = fresh(&disk, "always");
    let always = AuditOptions {
        sync: SyncPolicy::Always,
        ..options
    };
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
        "hash_and_frame_cpu_ns": hash_cpu,
        "encode_hash_frame_cpu_ns": frame_cpu,
        "encode_hash_frame_wall_ns": frame_wall,
        "append_cpu_ns": append_cpu,
        "append_wall_ns": append_wall,
        "verify_records_per_cpu_s": 1e9 / verify_cpu,
        "verify_records_per_wall_s": 1e9 / verify_wall,
        "verify_mb_per_cpu_s": chain_bytes as f64 / (verify_cpu * records as f64) * 1e3,
        "always_appends_per_s": durable as f64 / always_s,
        "always_append_us": always_s * 1e6 / durable as f64,
    });
    println!("{out}");
}
