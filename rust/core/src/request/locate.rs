//! Finding the prompt text fields of a request body, and getting back to them later.

use serde_json::{Map, Value};

use super::Api;

/// Where one text segment lives: a top-level field, then steps down to the string.
#[derive(Debug, Clone)]
pub(super) struct Location {
    field: &'static str,
    steps: Vec<Step>,
}

#[derive(Debug, Clone, Copy)]
enum Step {
    Key(&'static str),
    Index(usize),
}

impl Location {
    pub fn resolve<'a>(&self, body: &'a Map<String, Value>) -> Option<&'a Value> {
        self.steps
            .iter()
            .try_fold(body.get(self.field)?, |value, step| match *step {
                Step::Key(key) => value.get(key),
                Step::Index(index) => value.get(index),
            })
    }

    pub fn resolve_mut<'a>(&self, body: &'a mut Map<String, Value>) -> Option<&'a mut Value> {
        self.steps
            .iter()
            .try_fold(body.get_mut(self.field)?, |value, step| match *step {
                Step::Key(key) => value.get_mut(key),
                Step::Index(index) => value.get_mut(index),
            })
    }

    fn with(&self, more: &[Step]) -> Location {
        let mut steps = self.steps.clone();
        steps.extend_from_slice(more);
        Location {
            field: self.field,
            steps,
        }
    }
}

/// Locations of every prompt text field, in body order.
///
/// Only text the user wrote is collected: non-text parts (images, audio, tool calls),
/// text nested inside Anthropic `tool_result` blocks, and token-id prompts are skipped.
pub(super) fn text_segments(api: Api, body: &Map<String, Value>) -> Vec<Location> {
    let mut found = Vec::new();
    match api {
        Api::Chat => message_contents(body, &mut found),
        Api::Completions => string_or_strings(body, "prompt", &mut found),
        Api::Embeddings => string_or_strings(body, "input", &mut found),
        Api::Messages => {
            let system = Location {
                field: "system",
                steps: Vec::new(),
            };
            text_or_blocks(body.get("system"), &system, &mut found);
            message_contents(body, &mut found);
        }
    }
    found
}

fn message_contents(body: &Map<String, Value>, found: &mut Vec<Location>) {
    let Some(Value::Array(messages)) = body.get("messages") else {
        return;
    };
    for (index, message) in messages.iter().enumerate() {
        let content = Location {
            field: "messages",
            steps: vec![Step::Index(index), Step::Key("content")],
        };
        text_or_blocks(message.get("content"), &content, found);
    }
}

/// A string, or an array of parts/blocks of which the `{"type": "text", "text": ...}`
/// ones carry text (the same shape in OpenAI content parts and Anthropic blocks).
fn text_or_blocks(value: Option<&Value>, at: &Location, found: &mut Vec<Location>) {
    match value {
        Some(Value::String(_)) => found.push(at.clone()),
        Some(Value::Array(blocks)) => {
            for (index, block) in blocks.iter().enumerate() {
                let is_text = block.get("type").and_then(Value::as_str) == Some("text")
                    && block.get("text").is_some_and(Value::is_string);
                if is_text {
                    found.push(at.with(&[Step::Index(index), Step::Key("text")]));
                }
            }
        }
        _ => {}
    }
}

fn string_or_strings(body: &Map<String, Value>, field: &'static str, found: &mut Vec<Location>) {
    match body.get(field) {
        Some(Value::String(_)) => found.push(Location {
            field,
            steps: Vec::new(),
        }),
        Some(Value::Array(items)) => {
            for (index, item) in items.iter().enumerate() {
                if item.is_string() {
                    found.push(Location {
                        field,
                        steps: vec![Step::Index(index)],
                    });
                }
            }
        }
        _ => {}
    }
}
