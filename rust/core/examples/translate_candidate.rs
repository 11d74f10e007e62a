//! The Rust candidate for where issue 14's translation runs, measured against the Python
//! one (python/gatewayd/translate) by bench/translate_bench.py, which runs this and reads
//! its JSON line. Not part of the library: it translates only what the bench's typical
//! request and stream chunk hold (the same work the Python code does for them: a typed
//! decode refusing unknown fields, the mapping, an encode).
//!
//!     cargo run --release -q -p gatewayd-core --example translate_candidate -- REQUEST_FILE CHUNK_FILE

use std::time::Instant;

use serde::{Deserialize, Serialize};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Part {
    #[serde(rename = "type")]
    _kind: String,
    text: String,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Content {
    Text(String),
    Parts(Vec<Part>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChatMessage<'a> {
    role: &'a str,
    content: Content,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChatRequest<'a> {
    model: &'a str,
    #[serde(borrow)]
    messages: Vec<ChatMessage<'a>>,
    max_tokens: Option<u32>,
    temperature: Option<f64>,
    stream: Option<bool>,
}

#[derive(Serialize)]
struct Block<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    text: String,
    #[serde(skip)]
    _p: std::marker::PhantomData<&'a ()>,
}

#[derive(Serialize)]
struct AnthropicMessage<'a> {
    role: &'a str,
    content: Vec<Block<'a>>,
}

#[derive(Serialize)]
struct MessagesRequest<'a> {
    model: &'a str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    system: Vec<Block<'a>>,
    messages: Vec<AnthropicMessage<'a>>,
    max_tokens: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream: Option<bool>,
}

fn blocks<'a>(content: &Content) -> Vec<Block<'a>> {
    let block = |text: &str| Block {
        kind: "text",
        text: text.to_string(),
        _p: std::marker::PhantomData,
    };
    match content {
        Content::Text(text) => vec![block(text)],
        Content::Parts(parts) => parts.iter().map(|p| block(&p.text)).collect(),
    }
}

fn request(body: &[u8]) -> Vec<u8> {
    let req: ChatRequest = serde_json::from_slice(body).expect("a chat request");
    let mut system = Vec::new();
    let mut messages = Vec::new();
    for m in &req.messages {
        if m.role == "system" {
            system.extend(blocks(&m.content));
        } else {
            messages.push(AnthropicMessage {
                role: m.role,
                content: blocks(&m.content),
            });
        }
    }
    let out = MessagesRequest {
        model: req.model,
        system,
        messages,
        max_tokens: req.max_tokens.unwrap_or(4096),
        temperature: req.temperature,
        stream: req.stream,
    };
    serde_json::to_vec(&out).unwrap()
}

#[derive(Deserialize)]
struct Delta<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    text: Option<String>,
}

#[derive(Deserialize)]
struct Event<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    #[serde(borrow)]
    delta: Option<Delta<'a>>,
}

/// One SSE event (`event:` and `data:` lines) as an OpenAI chunk, after a fixed prefix.
fn chunk(prefix: &[u8], event: &[u8], out: &mut Vec<u8>) {
    let data = event
        .split(|&b| b == b'\n')
        .find_map(|line| line.strip_prefix(b"data: "))
        .expect("a data line");
    let parsed: Event = serde_json::from_slice(data).expect("an event");
    if let (
        "content_block_delta",
        Some(Delta {
            kind: "text_delta",
            text: Some(text),
        }),
    ) = (parsed.kind, parsed.delta)
    {
        out.extend_from_slice(prefix);
        out.extend_from_slice(b"\"delta\":{\"content\":");
        serde_json::to_writer(&mut *out, &text).unwrap();
        out.extend_from_slice(b"},\"finish_reason\":null,\"logprobs\":null}]}\n\n");
    }
}

fn per_op_ns(runs: u32, mut op: impl FnMut()) -> f64 {
    for _ in 0..runs / 10 {
        op();
    }
    let mut best = f64::INFINITY;
    for _ in 0..5 {
        let started = Instant::now();
        for _ in 0..runs {
            op();
        }
        best = best.min(started.elapsed().as_nanos() as f64 / runs as f64);
    }
    best
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let body = std::fs::read(&args[1]).expect("request file");
    let event = std::fs::read(&args[2]).expect("chunk file");
    let prefix = br#"data: {"id":"msg_1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"#;
    let request_ns = per_op_ns(100_000, || {
        std::hint::black_box(request(std::hint::black_box(&body)));
    });
    let mut out = Vec::with_capacity(256);
    let chunk_ns = per_op_ns(200_000, || {
        out.clear();
        chunk(prefix, std::hint::black_box(&event), &mut out);
        std::hint::black_box(&out);
    });
    println!("{{\"request_ns\": {request_ns:.0}, \"chunk_ns\": {chunk_ns:.0}}}");
}
