//! An Anthropic event stream as OpenAI chat completion chunks.

use std::borrow::Cow;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Deserialize;

use super::sse::{ErrorDetail, Events};
use super::{error_event, write_json, StreamError};

#[derive(Deserialize, Default)]
struct Usage {
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    cache_creation_input_tokens: Option<u64>,
    cache_read_input_tokens: Option<u64>,
}

#[derive(Deserialize)]
struct Message<'a> {
    #[serde(borrow)]
    id: Cow<'a, str>,
    #[serde(borrow)]
    model: Cow<'a, str>,
    usage: Option<Usage>,
}

#[derive(Deserialize)]
struct Block<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    name: Option<Cow<'a, str>>,
    #[serde(borrow)]
    text: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct Delta<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow)]
    text: Option<Cow<'a, str>>,
    #[serde(borrow)]
    partial_json: Option<Cow<'a, str>>,
    #[serde(borrow)]
    stop_reason: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct Event<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    message: Option<Message<'a>>,
    index: Option<u64>,
    #[serde(borrow)]
    content_block: Option<Block<'a>>,
    #[serde(borrow)]
    delta: Option<Delta<'a>>,
    usage: Option<Usage>,
    #[serde(borrow)]
    error: Option<ErrorDetail<'a>>,
}

/// Anthropic stop_reason -> OpenAI finish_reason.
pub fn finish_reason(stop_reason: &str) -> &'static str {
    match stop_reason {
        "max_tokens" => "length",
        "tool_use" => "tool_calls",
        "refusal" => "content_filter",
        _ => "stop", // end_turn, stop_sequence, pause_turn
    }
}

/// The status an OpenAI client would have seen an Anthropic error type with.
fn error_status(kind: &str) -> u16 {
    match kind {
        "overloaded_error" => 503,
        "rate_limit_error" => 429,
        "timeout_error" => 504,
        _ => 502,
    }
}

pub struct AnthropicToOpenAi {
    events: Events,
    /// `data: {"id":...,"model":...,"choices":[{"index":0,` once the message started.
    prefix: Vec<u8>,
    /// Anthropic block index -> OpenAI tool call index, in the order they began.
    tools: Vec<u64>,
    prompt_tokens: u64,
    completion_tokens: u64,
    include_usage: bool,
}

impl AnthropicToOpenAi {
    pub fn new(include_usage: bool) -> AnthropicToOpenAi {
        AnthropicToOpenAi {
            events: Events::default(),
            prefix: Vec::new(),
            tools: Vec::new(),
            prompt_tokens: 0,
            completion_tokens: 0,
            include_usage,
        }
    }

    pub fn feed(&mut self, chunk: &[u8], out: &mut Vec<u8>) -> Result<(), StreamError> {
        let mut events = std::mem::take(&mut self.events);
        let done = events.feed(chunk, |data| self.translate(data, out));
        self.events = events;
        done
    }

    fn chunk(&self, out: &mut Vec<u8>, delta: impl FnOnce(&mut Vec<u8>), finish: Option<&str>) {
        out.extend_from_slice(&self.prefix);
        out.extend_from_slice(b"\"delta\":");
        delta(out);
        match finish {
            None => out.extend_from_slice(b",\"finish_reason\":null"),
            Some(reason) => {
                out.extend_from_slice(b",\"finish_reason\":\"");
                out.extend_from_slice(reason.as_bytes());
                out.push(b'"');
            }
        }
        // With usage asked for, OpenAI sends `"usage": null` in every chunk before the last.
        out.extend_from_slice(if self.include_usage {
            b",\"logprobs\":null}],\"usage\":null}\n\n".as_slice()
        } else {
            b",\"logprobs\":null}]}\n\n".as_slice()
        });
    }

    fn translate(&mut self, data: &[u8], out: &mut Vec<u8>) -> Result<(), StreamError> {
        let event: Event = serde_json::from_slice(data).map_err(|e| {
            StreamError(format!(
                "an event that is not an Anthropic stream event: {e}"
            ))
        })?;
        match (event.kind.as_ref(), event.delta, event.content_block) {
            ("content_block_delta", Some(delta), _) => {
                match (delta.kind.as_deref(), delta.text, delta.partial_json) {
                    (Some("text_delta"), Some(text), _) => self.chunk(
                        out,
                        |out| {
                            out.extend_from_slice(b"{\"content\":");
                            write_json(out, text.as_ref());
                            out.push(b'}');
                        },
                        None,
                    ),
                    (Some("input_json_delta"), _, Some(json)) => {
                        let call = event
                            .index
                            .and_then(|i| self.tools.iter().position(|&b| b == i))
                            .ok_or_else(|| {
                                StreamError("an input_json_delta outside a tool_use block".into())
                            })?;
                        self.chunk(
                            out,
                            |out| {
                                out.extend_from_slice(
                                    format!("{{\"tool_calls\":[{{\"index\":{call},\"function\":{{\"arguments\":").as_bytes(),
                                );
                                write_json(out, json.as_ref());
                                out.extend_from_slice(b"}}]}");
                            },
                            None,
                        );
                    }
                    (kind, _, _) => {
                        return Err(StreamError(format!(
                            "a content_block_delta of type {} has no OpenAI translation",
                            kind.unwrap_or("none")
                        )))
                    }
                }
            }
            ("message_start", _, _) => {
                let message = event
                    .message
                    .ok_or_else(|| StreamError("a message_start without its message".into()))?;
                let created = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                let head = serde_json::json!({
                    "id": message.id, "object": "chat.completion.chunk", "created": created, "model": message.model,
                });
                let mut prefix = b"data: ".to_vec();
                write_json(&mut prefix, &head);
                prefix.pop(); // the closing brace: the choices follow
                prefix.extend_from_slice(b",\"choices\":[{\"index\":0,");
                self.prefix = prefix;
                let usage = message.usage.unwrap_or_default();
                self.prompt_tokens = usage.input_tokens.unwrap_or(0)
                    + usage.cache_creation_input_tokens.unwrap_or(0)
                    + usage.cache_read_input_tokens.unwrap_or(0);
                self.chunk(
                    out,
                    |out| out.extend_from_slice(b"{\"role\":\"assistant\",\"content\":\"\"}"),
                    None,
                );
            }
            ("content_block_start", _, Some(block)) => match block.kind.as_ref() {
                "text" => {
                    if let Some(text) = block.text.filter(|t| !t.is_empty()) {
                        self.chunk(
                            out,
                            |out| {
                                out.extend_from_slice(b"{\"content\":");
                                write_json(out, text.as_ref());
                                out.push(b'}');
                            },
                            None,
                        );
                    }
                }
                "tool_use" => {
                    let index = event.index.ok_or_else(|| {
                        StreamError("a content_block_start without its index".into())
                    })?;
                    let call = self.tools.len();
                    self.tools.push(index);
                    let named = serde_json::json!({
                        "index": call, "id": block.id, "type": "function",
                        "function": {"name": block.name, "arguments": ""},
                    });
                    self.chunk(
                        out,
                        |out| {
                            out.extend_from_slice(b"{\"tool_calls\":[");
                            write_json(out, &named);
                            out.extend_from_slice(b"]}");
                        },
                        None,
                    );
                }
                other => {
                    return Err(StreamError(format!(
                        "a content block of type {other} has no OpenAI translation"
                    )))
                }
            },
            ("content_block_stop" | "ping", _, _) => {}
            ("message_delta", delta, _) => {
                if let Some(tokens) = event.usage.and_then(|u| u.output_tokens) {
                    self.completion_tokens = tokens;
                }
                if let Some(reason) = delta.and_then(|d| d.stop_reason) {
                    self.chunk(
                        out,
                        |out| out.extend_from_slice(b"{}"),
                        Some(finish_reason(&reason)),
                    );
                }
            }
            ("message_stop", _, _) => {
                if self.include_usage && !self.prefix.is_empty() {
                    let head = self.prefix.len() - b"[{\"index\":0,".len();
                    out.extend_from_slice(&self.prefix[..head]);
                    let (p, c) = (self.prompt_tokens, self.completion_tokens);
                    out.extend_from_slice(
                        format!("[],\"usage\":{{\"prompt_tokens\":{p},\"completion_tokens\":{c},\"total_tokens\":{}}}}}\n\n", p + c)
                            .as_bytes(),
                    );
                }
                out.extend_from_slice(b"data: [DONE]\n\n");
            }
            ("error", _, _) => {
                let error = event
                    .error
                    .ok_or_else(|| StreamError("an error event without its error".into()))?;
                let kind = error.kind.as_deref().unwrap_or("upstream_error");
                error_event(error_status(kind), &error.message, kind, false, out);
            }
            (kind, _, _) => {
                return Err(StreamError(format!(
                    "an Anthropic stream event that has no OpenAI translation: {kind}"
                )))
            }
        }
        Ok(())
    }
}
