//! OpenAI chat completion chunks as an Anthropic event stream.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::json;

use super::sse::{ErrorDetail, Events};
use super::{error_event, write_json, StreamError};

#[derive(Deserialize, Default)]
struct Function<'a> {
    #[serde(borrow)]
    name: Option<Cow<'a, str>>,
    #[serde(borrow)]
    arguments: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct ToolCall<'a> {
    #[serde(default)]
    index: u64,
    #[serde(borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    function: Option<Function<'a>>,
}

#[derive(Deserialize)]
struct Delta<'a> {
    #[serde(borrow)]
    content: Option<Cow<'a, str>>,
    #[serde(borrow)]
    tool_calls: Option<Vec<ToolCall<'a>>>,
}

#[derive(Deserialize)]
struct Choice<'a> {
    #[serde(borrow)]
    delta: Option<Delta<'a>>,
    #[serde(borrow)]
    finish_reason: Option<Cow<'a, str>>,
}

#[derive(Deserialize, Default, Clone, Copy)]
struct Usage {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
}

#[derive(Deserialize)]
struct Chunk<'a> {
    #[serde(borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    model: Option<Cow<'a, str>>,
    #[serde(borrow)]
    choices: Option<Vec<Choice<'a>>>,
    usage: Option<Usage>,
    #[serde(borrow)]
    error: Option<ErrorDetail<'a>>,
}

/// OpenAI finish_reason -> Anthropic stop_reason.
pub fn stop_reason(finish_reason: &str) -> &'static str {
    match finish_reason {
        "length" => "max_tokens",
        "tool_calls" | "function_call" => "tool_use",
        "content_filter" => "refusal",
        _ => "end_turn",
    }
}

/// The content block open, if any.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Open {
    Text,
    Tool(u64),
}

pub struct OpenAiToAnthropic {
    events: Events,
    started: bool,
    /// The index of the last content block started (-1: none yet).
    block: i64,
    open: Option<Open>,
    /// OpenAI tool call index -> Anthropic block index.
    calls: Vec<(u64, i64)>,
    stop: &'static str,
    usage: Usage,
}

impl Default for OpenAiToAnthropic {
    fn default() -> OpenAiToAnthropic {
        OpenAiToAnthropic {
            events: Events::default(),
            started: false,
            block: -1,
            open: None,
            calls: Vec::new(),
            stop: "end_turn",
            usage: Usage::default(),
        }
    }
}

fn event(out: &mut Vec<u8>, name: &str, data: &serde_json::Value) {
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\ndata: ");
    write_json(out, data);
    out.extend_from_slice(b"\n\n");
}

impl OpenAiToAnthropic {
    pub fn feed(&mut self, chunk: &[u8], out: &mut Vec<u8>) -> Result<(), StreamError> {
        let mut events = std::mem::take(&mut self.events);
        let done = events.feed(chunk, |data| {
            if data == b"[DONE]" {
                self.finish(out);
                Ok(())
            } else {
                self.translate(data, out)
            }
        });
        self.events = events;
        done
    }

    fn start(&mut self, id: Option<&str>, model: Option<&str>, out: &mut Vec<u8>) {
        self.started = true;
        let message = json!({
            "id": id.unwrap_or("msg_gatewayd"), "type": "message", "role": "assistant",
            "model": model.unwrap_or(""), "content": [], "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        });
        event(
            out,
            "message_start",
            &json!({"type": "message_start", "message": message}),
        );
    }

    fn close(&mut self, out: &mut Vec<u8>) {
        if self.open.take().is_some() {
            out.extend_from_slice(
                format!(
                    "event: content_block_stop\ndata: {{\"type\":\"content_block_stop\",\"index\":{}}}\n\n",
                    self.block
                )
                .as_bytes(),
            );
        }
    }

    fn open_block(&mut self, open: Open, block: serde_json::Value, out: &mut Vec<u8>) {
        self.close(out);
        self.block += 1;
        self.open = Some(open);
        let start =
            json!({"type": "content_block_start", "index": self.block, "content_block": block});
        event(out, "content_block_start", &start);
        if self.block == 0 {
            // Where Anthropic's own streams send their ping.
            out.extend_from_slice(b"event: ping\ndata: {\"type\":\"ping\"}\n\n");
        }
    }

    fn translate(&mut self, data: &[u8], out: &mut Vec<u8>) -> Result<(), StreamError> {
        let chunk: Chunk = serde_json::from_slice(data).map_err(|e| {
            StreamError(format!(
                "a chunk that is not an OpenAI chat completion chunk: {e}"
            ))
        })?;
        if let Some(error) = chunk.error {
            let status = if error.kind.as_deref() == Some("requests") {
                429
            } else {
                502
            };
            error_event(status, &error.message, "upstream_error", true, out);
            return Ok(());
        }
        if !self.started {
            self.start(chunk.id.as_deref(), chunk.model.as_deref(), out);
        }
        if let Some(usage) = chunk.usage {
            self.usage = usage;
        }
        for choice in chunk.choices.unwrap_or_default() {
            if let Some(delta) = choice.delta {
                if let Some(text) = delta.content.filter(|t| !t.is_empty()) {
                    if self.open != Some(Open::Text) {
                        self.open_block(Open::Text, json!({"type": "text", "text": ""}), out);
                    }
                    out.extend_from_slice(
                        format!("event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"index\":{},\"delta\":{{\"type\":\"text_delta\",\"text\":", self.block)
                            .as_bytes(),
                    );
                    write_json(out, text.as_ref());
                    out.extend_from_slice(b"}}\n\n");
                }
                for call in delta.tool_calls.unwrap_or_default() {
                    self.tool_call(call, out)?;
                }
            }
            if let Some(reason) = choice.finish_reason {
                self.close(out);
                self.stop = stop_reason(&reason);
            }
        }
        Ok(())
    }

    fn tool_call(&mut self, call: ToolCall<'_>, out: &mut Vec<u8>) -> Result<(), StreamError> {
        let function = call.function.unwrap_or_default();
        let block = match self.calls.iter().find(|(i, _)| *i == call.index) {
            None => {
                let (Some(id), Some(name)) = (call.id, function.name) else {
                    return Err(StreamError(format!(
                        "tool call {} began without its id and name",
                        call.index
                    )));
                };
                let block = json!({"type": "tool_use", "id": id, "name": name, "input": {}});
                self.open_block(Open::Tool(call.index), block, out);
                self.calls.push((call.index, self.block));
                self.block
            }
            Some(&(_, block)) if self.open == Some(Open::Tool(call.index)) => block,
            Some(_) => {
                return Err(StreamError(format!(
                    "tool call {} went on after another began",
                    call.index
                )))
            }
        };
        if let Some(arguments) = function.arguments.filter(|a| !a.is_empty()) {
            let delta = json!({
                "type": "content_block_delta", "index": block,
                "delta": {"type": "input_json_delta", "partial_json": arguments},
            });
            event(out, "content_block_delta", &delta);
        }
        Ok(())
    }

    fn finish(&mut self, out: &mut Vec<u8>) {
        if !self.started {
            self.start(None, None, out);
        }
        self.close(out);
        let usage = json!({"input_tokens": self.usage.prompt_tokens, "output_tokens": self.usage.completion_tokens});
        let delta = json!({
            "type": "message_delta", "delta": {"stop_reason": self.stop, "stop_sequence": null}, "usage": usage,
        });
        event(out, "message_delta", &delta);
        out.extend_from_slice(b"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n");
    }
}
