use serde_json::Value;

use super::*;

const ANTHROPIC: &str = concat!(
    "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-x\",\"content\":[],\"stop_reason\":null,\"usage\":{\"input_tokens\":7,\"output_tokens\":1}}}\n\n",
    "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
    "event: ping\ndata: {\"type\":\"ping\"}\n\n",
    "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"he said \\\"hi\\\"\"}}\n\n",
    "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
    "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_1\",\"name\":\"weather\",\"input\":{}}}\n\n",
    "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"city\\\":\"}}\n\n",
    "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"\\\"Oslo\\\"}\"}}\n\n",
    "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":1}\n\n",
    "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":12}}\n\n",
    "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
);

const OPENAI: &str = concat!(
    "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-x\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}]}\n\n",
    "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-x\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"let me look\"},\"finish_reason\":null}]}\n\n",
    "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-x\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_1\",\"type\":\"function\",\"function\":{\"name\":\"weather\",\"arguments\":\"\"}}]},\"finish_reason\":null}]}\n\n",
    "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-x\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{\\\"city\\\":\\\"Oslo\\\"}\"}}]},\"finish_reason\":null}]}\n\n",
    "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-x\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"tool_calls\"}]}\n\n",
    "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-x\",\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":4,\"total_tokens\":13}}\n\n",
    "data: [DONE]\n\n",
);

/// Feeds `stream` in pieces of `size` bytes (0: whole); the caller's bytes, or the error.
fn translated(from_anthropic: bool, stream: &str, size: usize) -> Result<String, StreamError> {
    let mut t = StreamTranslation::new(from_anthropic, true);
    let mut out = Vec::new();
    let bytes = stream.as_bytes();
    for piece in bytes.chunks(if size == 0 { bytes.len() } else { size }) {
        t.feed(piece, &mut out)?;
    }
    Ok(String::from_utf8(out).unwrap())
}

/// The (event name, data) pairs of an SSE text.
fn events(text: &str) -> Vec<(String, Value)> {
    text.split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|e| {
            let name = e
                .lines()
                .find_map(|l| l.strip_prefix("event: "))
                .unwrap_or("");
            let data = e.lines().find_map(|l| l.strip_prefix("data: ")).unwrap();
            let value = if data == "[DONE]" {
                Value::from("[DONE]")
            } else {
                serde_json::from_str(data).unwrap()
            };
            (name.to_string(), value)
        })
        .collect()
}

/// `events` with each chunk's `created` (the wall-clock second) taken out.
fn undated(text: &str) -> Vec<(String, Value)> {
    let mut all = events(text);
    for (_, data) in &mut all {
        if let Some(chunk) = data.as_object_mut() {
            chunk.remove("created");
        }
    }
    all
}

#[test]
fn anthropic_events_become_openai_chunks_whatever_the_chunk_boundaries() {
    let whole = translated(true, ANTHROPIC, 0).unwrap();
    for size in [1, 7, 64] {
        // `created` is the second each translation started in: compared apart.
        let pieces = translated(true, ANTHROPIC, size).unwrap();
        assert_eq!(undated(&pieces), undated(&whole), "pieces of {size}");
    }
    let chunks: Vec<Value> = events(&whole).into_iter().map(|(_, v)| v).collect();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    for chunk in chunks.iter().filter(|c| c.is_object()) {
        let created = chunk["created"].as_u64().expect("every chunk is dated");
        assert!(now - created <= 5, "created {created}, now {now}");
    }
    assert_eq!(
        chunks[0]["choices"][0]["delta"],
        serde_json::json!({"role": "assistant", "content": ""})
    );
    assert_eq!(chunks[0]["id"], "msg_1");
    assert_eq!(chunks[0]["model"], "claude-x");
    assert_eq!(
        chunks[0]["usage"],
        Value::Null,
        "null until the last, as OpenAI sends it"
    );
    assert_eq!(
        chunks[1]["choices"][0]["delta"]["content"],
        "he said \"hi\""
    );
    assert_eq!(
        chunks[2]["choices"][0]["delta"]["tool_calls"][0],
        serde_json::json!({"index": 0, "id": "toolu_1", "type": "function", "function": {"name": "weather", "arguments": ""}})
    );
    let arguments: String = chunks[3..5]
        .iter()
        .map(|c| {
            c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"]
                .as_str()
                .unwrap()
        })
        .collect();
    assert_eq!(arguments, "{\"city\":\"Oslo\"}");
    assert_eq!(chunks[5]["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(chunks[6]["choices"], serde_json::json!([]));
    assert_eq!(
        chunks[6]["usage"],
        serde_json::json!({"prompt_tokens": 7, "completion_tokens": 12, "total_tokens": 19})
    );
    assert_eq!(chunks[7], "[DONE]");
    assert_eq!(chunks.len(), 8);
}

#[test]
fn openai_chunks_become_anthropic_events_in_order() {
    let whole = translated(false, OPENAI, 0).unwrap();
    assert_eq!(translated(false, OPENAI, 5).unwrap(), whole);
    let got = events(&whole);
    let names: Vec<&str> = got.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "message_start",
            "content_block_start",
            "ping",
            "content_block_delta",
            "content_block_stop",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    for (name, data) in &got {
        assert_eq!(
            data["type"],
            name.as_str(),
            "an event's name is its data's type"
        );
    }
    assert_eq!(got[0].1["message"]["id"], "chatcmpl-1");
    assert_eq!(
        got[3].1["delta"],
        serde_json::json!({"type": "text_delta", "text": "let me look"})
    );
    assert_eq!(
        got[5].1["content_block"],
        serde_json::json!({"type": "tool_use", "id": "call_1", "name": "weather", "input": {}})
    );
    assert_eq!(got[6].1["index"], 1);
    assert_eq!(got[6].1["delta"]["partial_json"], "{\"city\":\"Oslo\"}");
    assert_eq!(got[8].1["delta"]["stop_reason"], "tool_use");
    assert_eq!(
        got[8].1["usage"],
        serde_json::json!({"input_tokens": 9, "output_tokens": 4})
    );
}

#[test]
fn crlf_line_ends_and_comments_are_read_too() {
    let crlf = OPENAI.replace('\n', "\r\n");
    let with_comment = format!(": keep-alive\n\n{OPENAI}");
    let plain = translated(false, OPENAI, 0).unwrap();
    assert_eq!(translated(false, &crlf, 3).unwrap(), plain);
    assert_eq!(translated(false, &with_comment, 0).unwrap(), plain);
}

#[test]
fn upstream_error_events_become_the_callers_error_events() {
    let anthropic = "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"busy\"}}\n\n";
    let got = events(&translated(true, anthropic, 0).unwrap());
    assert_eq!(
        got[0].1,
        serde_json::json!({"error": {"message": "busy", "type": "api_error", "param": null, "code": "overloaded_error"}})
    );
    let openai = "data: {\"error\":{\"message\":\"slow down\",\"type\":\"requests\"}}\n\n";
    let got = events(&translated(false, openai, 0).unwrap());
    assert_eq!(got[0].0, "error");
    assert_eq!(
        got[0].1,
        serde_json::json!({"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}})
    );
}

#[test]
fn what_cannot_be_read_or_translated_is_an_error() {
    assert!(translated(true, "data: not json\n\n", 0).is_err());
    assert!(translated(false, "data: [1, 2]\n\n", 0).is_err());
    let thinking = "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"thinking\",\"thinking\":\"\"}}\n\n";
    let e = translated(true, thinking, 0).unwrap_err();
    assert_eq!(
        e.to_string(),
        "a content block of type thinking has no OpenAI translation"
    );
    let nameless = "data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{}\"}}]}}]}\n\n";
    assert!(translated(false, nameless, 0).is_err());
}

#[test]
fn a_partial_event_is_held_until_it_completes() {
    let mut t = StreamTranslation::new(false, false);
    let mut out = Vec::new();
    let (head, tail) = OPENAI.split_at(40);
    t.feed(head.as_bytes(), &mut out).unwrap();
    assert!(out.is_empty());
    t.feed(tail.as_bytes(), &mut out).unwrap();
    assert!(out.ends_with(b"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"));
}
