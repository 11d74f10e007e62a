//! Types and ranges of the optional request fields whose meaning the gateway or the
//! providers agree on: a `max_tokens` of `"10"` or `1e30`, or a `temperature` of `"hot"`,
//! is the client's mistake and gets a 400 naming the field, instead of a provider's error
//! (or a provider's guess) after a round trip. `null` means "not set", as in the APIs.

use serde_json::{Map, Value};

use super::{Api, RequestError};

#[derive(Clone, Copy)]
enum Kind {
    Bool,
    Str,
    Object,
    /// An integer in `min..=max`.
    Integer {
        min: i64,
        max: i64,
    },
    /// A finite number in `min..=max`.
    Number {
        min: f64,
        max: f64,
    },
}

const TOKENS: Kind = Kind::Integer {
    min: 1,
    max: u32::MAX as i64,
};
const UNIT: Kind = Kind::Number { min: 0.0, max: 1.0 };
const PENALTY: Kind = Kind::Number {
    min: -2.0,
    max: 2.0,
};
const SEED: Kind = Kind::Integer {
    min: i64::MIN,
    max: i64::MAX,
};

/// OpenAI chat and completions share their sampling fields.
const OPENAI_SAMPLING: [(&str, Kind, &str); 10] = [
    ("stream", Kind::Bool, "a boolean"),
    ("stream_options", Kind::Object, "an object"),
    ("user", Kind::Str, "a string"),
    (
        "temperature",
        Kind::Number { min: 0.0, max: 2.0 },
        "a number from 0 to 2",
    ),
    ("top_p", UNIT, "a number from 0 to 1"),
    ("max_tokens", TOKENS, "an integer from 1 to 4294967295"),
    (
        "n",
        Kind::Integer { min: 1, max: 128 },
        "an integer from 1 to 128",
    ),
    ("presence_penalty", PENALTY, "a number from -2 to 2"),
    ("frequency_penalty", PENALTY, "a number from -2 to 2"),
    ("seed", SEED, "an integer"),
];
const CHAT_ONLY: [(&str, Kind, &str); 1] = [(
    "max_completion_tokens",
    TOKENS,
    "an integer from 1 to 4294967295",
)];
const EMBEDDINGS: [(&str, Kind, &str); 2] = [
    ("user", Kind::Str, "a string"),
    ("dimensions", TOKENS, "an integer from 1 to 4294967295"),
];
const MESSAGES: [(&str, Kind, &str); 6] = [
    ("stream", Kind::Bool, "a boolean"),
    ("metadata", Kind::Object, "an object"),
    ("temperature", UNIT, "a number from 0 to 1"),
    ("top_p", UNIT, "a number from 0 to 1"),
    (
        "top_k",
        Kind::Integer {
            min: 0,
            max: i64::MAX,
        },
        "a non-negative integer",
    ),
    ("max_tokens", TOKENS, "an integer from 1 to 4294967295"),
];

pub(super) fn check(api: Api, body: &Map<String, Value>) -> Result<(), RequestError> {
    let tables: &[&[(&str, Kind, &'static str)]] = match api {
        Api::Chat => &[&OPENAI_SAMPLING, &CHAT_ONLY],
        Api::Completions => &[&OPENAI_SAMPLING],
        Api::Embeddings => &[&EMBEDDINGS],
        Api::Messages => &[&MESSAGES],
    };
    for &(field, kind, expected) in tables.iter().flat_map(|table| table.iter()) {
        match body.get(field) {
            None | Some(Value::Null) => {}
            Some(value) if fits(value, kind) => {}
            Some(_) => return Err(RequestError::OutOfRange { field, expected }),
        }
    }
    Ok(())
}

fn fits(value: &Value, kind: Kind) -> bool {
    match kind {
        Kind::Bool => value.is_boolean(),
        Kind::Str => value.is_string(),
        Kind::Object => value.is_object(),
        // Integers only: 1e3 and 2^64 (which serde_json reads as a float) are refused.
        Kind::Integer { min, max } => value.as_i64().is_some_and(|n| (min..=max).contains(&n)),
        Kind::Number { min, max } => value.as_f64().is_some_and(|n| (min..=max).contains(&n)),
    }
}
