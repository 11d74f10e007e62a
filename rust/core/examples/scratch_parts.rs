use std::time::Instant;
use gatewayd_core::audit::{leaf_hash, Frontier, frame_record};
use serde_json::{json, Value, Map};
fn cpu_ns() -> u64 { std::fs::read_to_string("/proc/thread-self/schedstat").unwrap().split_whitespace().next().unwrap().parse().unwrap() }
fn main() {
    let n: u64 = std::env::args().nth(1).map_or(500_000, |a| a.parse().unwrap());
    let payload = vec![b'a'; 712];
    let c = cpu_ns(); let mut h = [0u8;32];
    for _ in 0..n { h = leaf_hash(&payload); }
    println!("leaf_hash 712B: {:.0} ns cpu {:?}", (cpu_ns()-c) as f64 / n as f64, h[0]);
    let c = cpu_ns(); let mut x = 0u32;
    for _ in 0..n { x ^= crc32c::crc32c(&payload); }
    println!("crc: {:.0} ns {x}", (cpu_ns()-c) as f64 / n as f64);
    let c = cpu_ns(); let mut t = Frontier::new();
    for _ in 0..n { t.push(h); }
    println!("push: {:.0} ns", (cpu_ns()-c) as f64 / n as f64);
    let Value::Object(m) = json!({"kind":"request","request_id":"0123456789abcdef0123456789abcdef","tenant":"acme","api":"chat","model":"gpt-4o-mini","decision":"allow","rule":null,"rules":["redact-emails"],"redacted":true,"policy_version":12,"routing_version":4,"config_version":7,"upstream":"openai","upstream_model":"gpt-4o-mini-2024-07-18","stream":false,"status":200,"error":null,"latency_us":1834,"cache":"miss","prompt_sha256":"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08","response_sha256":"60303ae22b998861bce3b28f33eec1be758a213c86c93c076dbe9f558c11c752","shadow":null}) else { panic!() };
    let mut out = Vec::with_capacity(1024);
    let c = cpu_ns();
    for i in 0..n*4 { out.clear(); h = frame_record(&mut out, "bench", i+1, &h, 1_700_000_000_000_000, &m).unwrap(); }
    println!("frame_record: {:.0} ns len {}", (cpu_ns()-c) as f64 / n as f64, out.len());
    let c = cpu_ns();
    for _ in 0..n { out.clear(); serde_json::to_writer(&mut out, &m).unwrap(); }
    println!("serde to_writer map: {:.0} ns", (cpu_ns()-c) as f64 / n as f64);
    let _: Map<String,Value> = m;
}
