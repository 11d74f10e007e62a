//! Streams translated between the OpenAI chat completions and Anthropic messages
//! protocols (issue 14), event by event as the upstream's chunks arrive: nothing is held
//! back but a partial event (an SSE event split across chunks).
//!
//! Anthropic's events (message_start, content_block_start/delta/stop, message_delta,
//! message_stop) become OpenAI chat completion chunks ending with `data: [DONE]`, and
//! back; an upstream error event becomes the caller's error event. Requests and whole
//! answers are translated in Python (gatewayd.translate): bench/translate_bench.py has the
//! figures that put the per-chunk work here and the per-request work there.

mod from_anthropic;
mod from_openai;
mod sse;

pub use from_anthropic::AnthropicToOpenAi;
pub use from_openai::OpenAiToAnthropic;

/// An event the translation cannot read or has no counterpart for: the stream ends with
/// the caller's error event.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StreamError(pub String);

/// One stream's translation, whichever way.
pub enum StreamTranslation {
    FromAnthropic(AnthropicToOpenAi),
    FromOpenAi(OpenAiToAnthropic),
}

impl StreamTranslation {
    /// `from_anthropic`: the upstream speaks Anthropic and the caller OpenAI (else the
    /// other way); `include_usage`: the OpenAI caller asked for a closing usage chunk.
    pub fn new(from_anthropic: bool, include_usage: bool) -> StreamTranslation {
        if from_anthropic {
            StreamTranslation::FromAnthropic(AnthropicToOpenAi::new(include_usage))
        } else {
            StreamTranslation::FromOpenAi(OpenAiToAnthropic::default())
        }
    }

    /// Appends to `out` the caller's events for every upstream event `chunk` completes.
    pub fn feed(&mut self, chunk: &[u8], out: &mut Vec<u8>) -> Result<(), StreamError> {
        match self {
            StreamTranslation::FromAnthropic(t) => t.feed(chunk, out),
            StreamTranslation::FromOpenAi(t) => t.feed(chunk, out),
        }
    }
}

/// The error types each API's clients read, by status (python/gatewayd/server/errors.py).
fn error_type(status: u16, anthropic: bool) -> &'static str {
    match (status, anthropic) {
        (429, _) => "rate_limit_error",
        (503, true) => "overloaded_error",
        (504, _) => "timeout_error",
        _ => "api_error",
    }
}

/// A stream's last event when the upstream reported an error, in the caller's shape.
fn error_event(status: u16, message: &str, code: &str, anthropic: bool, out: &mut Vec<u8>) {
    let kind = error_type(status, anthropic);
    let body = if anthropic {
        serde_json::json!({"type": "error", "error": {"type": kind, "message": message}})
    } else {
        serde_json::json!({"error": {"message": message, "type": kind, "param": null, "code": code}})
    };
    out.extend_from_slice(if anthropic {
        b"event: error\ndata: ".as_slice()
    } else {
        b"data: ".as_slice()
    });
    serde_json::to_writer(&mut *out, &body).expect("writing to a Vec");
    out.extend_from_slice(b"\n\n");
}

fn write_json<T: serde::Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) {
    serde_json::to_writer(&mut *out, value).expect("writing to a Vec");
}

#[cfg(test)]
mod tests;
