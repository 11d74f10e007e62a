//! JSON decoding that refuses duplicate object keys at any depth.
//!
//! RFC 8259 leaves the meaning of `{"a":1,"a":2}` to the parser: serde_json keeps the last
//! value, many providers' parsers keep the first. If the gateway judged one and forwarded
//! bytes a provider reads as the other, policy would be bypassed (a card number in the
//! first `messages`, a harmless text in the second). A body is therefore accepted only when
//! every parser reads it the same way: no object may name a key twice. Keys are compared
//! after unescaping, so `"content"` and `"\u0063ontent"` are the same key.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// A JSON value decoded with duplicate keys refused.
pub(super) struct Strict(pub Value);

/// Why a body is not strict JSON: its syntax, or a key named twice (with where).
pub(super) enum StrictError {
    Syntax(serde_json::Error),
    DuplicateKey { key: String, path: String },
}

/// How the visitor's duplicate-key error starts, so it can be told from a syntax error
/// (serde_json's own messages never start so); the key follows, then a closing backtick.
const DUPLICATE: &str = "duplicate key `";

pub(super) fn from_slice(body: &[u8]) -> Result<Value, StrictError> {
    match serde_json::from_slice::<Strict>(body) {
        Ok(Strict(value)) => Ok(value),
        Err(err) if err.to_string().starts_with(DUPLICATE) => Err(locate_duplicate(body, err)),
        Err(err) => Err(StrictError::Syntax(err)),
    }
}

/// The slow path, taken only for a refused body: decode again while tracking the path, so
/// the error names where the duplicate is (`messages[0]`).
fn locate_duplicate(body: &[u8], first: serde_json::Error) -> StrictError {
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let (path, message) = match serde_path_to_error::deserialize::<_, Strict>(&mut deserializer) {
        Err(err) => (err.path().to_string(), err.into_inner().to_string()),
        Ok(_) => (String::from("."), first.to_string()),
    };
    // "duplicate key `KEY` at line L column C": the key may itself hold backticks.
    let key = message
        .strip_prefix(DUPLICATE)
        .and_then(|rest| rest.rsplit_once("` at line "))
        .map_or_else(String::new, |(key, _)| key.to_string());
    StrictError::DuplicateKey { key, path }
}

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Strict, D::Error> {
        deserializer.deserialize_any(StrictVisitor).map(Strict)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("a number must be finite"))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(Strict(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Value, A::Error> {
        let mut map = Map::new();
        while let Some(key) = access.next_key::<String>()? {
            if map.contains_key(&key) {
                return Err(de::Error::custom(format_args!("{DUPLICATE}{key}`")));
            }
            let Strict(value) = access.next_value()?;
            map.insert(key, value);
        }
        Ok(Value::Object(map))
    }
}
