//! One parse of an LLM API request body, giving the gateway what it needs: the model,
//! streaming flag, prompt text for policy, in-place rewrites, and a cache-key form.
//!
//! Validation covers what the gateway relies on: strict JSON (no duplicate keys, so every
//! parser reads the body as policy did), the required fields, and the types and ranges of
//! the sampling fields; the upstream API validates everything else.

mod fields;
pub mod headers;
pub mod ids;
pub mod keys;
mod locate;
pub mod sticky;
mod strict;

use serde_json::{Map, Value};

use locate::Location;

/// The request routes the gateway parses bodies for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Api {
    /// OpenAI `/v1/chat/completions`.
    Chat,
    /// OpenAI `/v1/completions`.
    Completions,
    /// OpenAI `/v1/embeddings`.
    Embeddings,
    /// Anthropic `/v1/messages`.
    Messages,
}

impl Api {
    /// The route name policies use in `when.routes`.
    pub fn name(&self) -> &'static str {
        match self {
            Api::Chat => "chat",
            Api::Completions => "completions",
            Api::Embeddings => "embeddings",
            Api::Messages => "messages",
        }
    }

    pub fn from_name(name: &str) -> Option<Api> {
        match name {
            "chat" => Some(Api::Chat),
            "completions" => Some(Api::Completions),
            "embeddings" => Some(Api::Embeddings),
            "messages" => Some(Api::Messages),
            _ => None,
        }
    }
}

/// Why a body was refused; displays as one line suitable for a 400 response.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("request body is not valid JSON: {0}")]
    InvalidJson(serde_json::Error),
    #[error(
        "request body names the key `{key}` twice in {}; a body whose meaning depends on \
         which duplicate a parser keeps is refused",
        if path == "." { "the top-level object".to_string() } else { format!("`{path}`") }
    )]
    DuplicateKey { key: String, path: String },
    #[error("request body must be a JSON object")]
    NotAnObject,
    #[error("`{field}` is required and must be {expected}")]
    InvalidField {
        field: &'static str,
        expected: &'static str,
    },
    #[error("`{field}` must be {expected}")]
    OutOfRange {
        field: &'static str,
        expected: &'static str,
    },
}

/// Top-level fields left out of [`ParsedRequest::normalized`] because they do not change
/// what the model answers: `stream` and `stream_options` only change how the answer is
/// delivered, `user` and `metadata` only attribute the request to someone.
const NOT_IN_CACHE_KEY: [&str; 4] = ["metadata", "stream", "stream_options", "user"];

#[derive(Debug, Clone)]
pub struct ParsedRequest {
    body: Map<String, Value>,
    /// Where each prompt text segment lives in `body`, in [`ParsedRequest::segments`] order.
    segments: Vec<Location>,
}

impl ParsedRequest {
    pub fn parse(api: Api, body: &[u8]) -> Result<ParsedRequest, RequestError> {
        let Value::Object(body) = strict::from_slice(body).map_err(|err| match err {
            strict::StrictError::Syntax(err) => RequestError::InvalidJson(err),
            strict::StrictError::DuplicateKey { key, path } => {
                RequestError::DuplicateKey { key, path }
            }
        })?
        else {
            return Err(RequestError::NotAnObject);
        };
        require(&body, "model", "a string", Value::is_string)?;
        match api {
            Api::Chat | Api::Messages => require(&body, "messages", "an array", Value::is_array)?,
            Api::Completions => require(&body, "prompt", "a string or an array", is_text_input)?,
            Api::Embeddings => require(&body, "input", "a string or an array", is_text_input)?,
        }
        if api == Api::Messages {
            require(&body, "max_tokens", "an integer", |v| {
                v.is_i64() || v.is_u64()
            })?;
        }
        fields::check(api, &body)?;
        let segments = locate::text_segments(api, &body);
        Ok(ParsedRequest { body, segments })
    }

    pub fn model(&self) -> &str {
        // `parse` checked that `model` is a string and `set_model` only writes strings.
        self.body
            .get("model")
            .and_then(Value::as_str)
            .unwrap_or_default()
    }

    pub fn stream(&self) -> bool {
        self.body
            .get("stream")
            .and_then(Value::as_bool)
            .unwrap_or(false)
    }

    pub fn temperature(&self) -> Option<f64> {
        self.body.get("temperature").and_then(Value::as_f64)
    }

    /// Every prompt text field, in body order (Anthropic `system` before `messages`).
    /// Indices into this list are what [`ParsedRequest::apply_rewrites`] takes.
    pub fn segments(&self) -> Vec<&str> {
        self.segments
            .iter()
            .map(|location| {
                location.resolve(&self.body).and_then(Value::as_str).expect(
                    "segment locations were found in this body, whose strings are only ever \
                     replaced by strings",
                )
            })
            .collect()
    }

    /// Replaces segments by their index in [`ParsedRequest::segments`]; indices out of
    /// range are ignored.
    pub fn apply_rewrites(&mut self, rewrites: &[(usize, String)]) {
        for (index, text) in rewrites {
            let slot = self
                .segments
                .get(*index)
                .and_then(|location| location.resolve_mut(&mut self.body));
            if let Some(slot) = slot {
                *slot = Value::String(text.clone());
            }
        }
    }

    pub fn set_model(&mut self, model: &str) {
        self.body.insert("model".to_string(), Value::from(model));
    }

    /// The body as compact JSON, for sending upstream.
    pub fn to_body(&self) -> Vec<u8> {
        serde_json::to_vec(&self.body).expect("a JSON object with string keys always serialises")
    }

    /// Canonical bytes for the response-cache key: compact JSON with keys sorted at every
    /// level, without `stream`, `stream_options`, `user` and `metadata`, which do not
    /// change what the model answers. Bodies of different APIs can be identical, so the
    /// cache key must include the [`Api`] as well.
    pub fn normalized(&self) -> Vec<u8> {
        // Keys come out sorted because serde_json's `Map` is a `BTreeMap` (the
        // `preserve_order` feature is not enabled; a test guards this).
        let kept = self
            .body
            .iter()
            .filter(|(key, _)| !NOT_IN_CACHE_KEY.contains(&key.as_str()));
        let mut out = Vec::with_capacity(256);
        out.push(b'{');
        for (position, (key, value)) in kept.enumerate() {
            if position > 0 {
                out.push(b',');
            }
            serde_json::to_writer(&mut out, key).expect("a string always serialises");
            out.push(b':');
            serde_json::to_writer(&mut out, value).expect("a JSON value always serialises");
        }
        out.push(b'}');
        out
    }
}

/// `prompt` and `input` may be a string, an array of strings, or token ids.
fn is_text_input(value: &Value) -> bool {
    value.is_string() || value.is_array()
}

fn require(
    body: &Map<String, Value>,
    field: &'static str,
    expected: &'static str,
    is_valid: impl Fn(&Value) -> bool,
) -> Result<(), RequestError> {
    match body.get(field) {
        Some(value) if is_valid(value) => Ok(()),
        _ => Err(RequestError::InvalidField { field, expected }),
    }
}

#[cfg(test)]
mod properties;
#[cfg(test)]
mod tests;
