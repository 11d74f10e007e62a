//! Property tests (proptest) for the request parser on arbitrary and mutated bodies
//! (issue 9, "Keep it hardened"). Modest case counts for `cargo test`; set PROPTEST_CASES
//! for a long run.
//!
//! Properties, for every API:
//! * parsing never panics, whatever the bytes (truncated, bit-flipped, deeply nested);
//!   a refusal displays as one line;
//! * an accepted body reads the same to a first-wins and a last-wins parser (no duplicate
//!   key got through);
//! * what goes upstream (`to_body`) re-parses to the same model, stream flag, prompt
//!   segments and cache key, also after rewrites with arbitrary texts and a new model;
//! * the cache key is a JSON object without the fields that do not change the answer.

use std::fmt;

use proptest::prelude::*;
use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use super::{Api, ParsedRequest, RequestError, NOT_IN_CACHE_KEY};
use crate::testing::cases;

const APIS: [Api; 4] = [Api::Chat, Api::Completions, Api::Embeddings, Api::Messages];

/// A JSON document written out by hand, so objects may repeat keys and numbers may be
/// any literal.
#[derive(Debug, Clone)]
enum Doc {
    Literal(String),
    Text(String),
    List(Vec<Doc>),
    Object(Vec<(String, Doc)>),
}

fn write(doc: &Doc, out: &mut String) {
    match doc {
        Doc::Literal(text) => out.push_str(text),
        Doc::Text(text) => out.push_str(&Value::from(text.as_str()).to_string()),
        Doc::List(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write(item, out);
            }
            out.push(']');
        }
        Doc::Object(pairs) => {
            out.push('{');
            for (i, (key, value)) in pairs.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push('"');
                out.push_str(key); // already escaped (maybe as \uXXXX, to hide a duplicate)
                out.push_str("\":");
                write(value, out);
            }
            out.push('}');
        }
    }
}

fn literal() -> impl Strategy<Value = Doc> {
    prop_oneof![
        Just("null"),
        Just("true"),
        Just("false"),
        Just("0"),
        Just("-1"),
        Just("1"),
        Just("16"),
        Just("0.5"),
        Just("2.5"),
        Just("1e400"),
        Just("-0"),
        Just("1E+2"),
        Just("18446744073709551616"),
        Just("4294967296"),
        Just("-9223372036854775809"),
        Just("123456789012345678901234567890"),
    ]
    .prop_map(|s| Doc::Literal(s.to_string()))
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("hi".to_string()),
        Just("card 4111 1111 1111 1111".to_string()),
        Just("text".to_string()),
        Just("mock-gpt".to_string()),
        any::<String>(),
    ]
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(vec![
            "content", "\\u0063ontent", "role", "type", "text", "t\\u0065xt", "model", "messages",
            "input", "prompt", "system", "stream", "max_tokens", "temperature", "user", "metadata",
        ])
        .prop_map(str::to_string),
        1 => "[a-z_]{0,8}",
    ]
}

/// Any JSON value, with request-like keys so that the shapes the parser looks into occur.
fn doc() -> impl Strategy<Value = Doc> {
    let leaf = prop_oneof![literal(), text().prop_map(Doc::Text)];
    leaf.prop_recursive(5, 40, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Doc::List),
            prop::collection::vec((key(), inner), 0..5).prop_map(Doc::Object),
        ]
    })
}

fn message() -> impl Strategy<Value = Doc> {
    let block = (text(), prop::option::of(doc())).prop_map(|(text, extra)| {
        let mut pairs = vec![
            ("type".to_string(), Doc::Text("text".into())),
            ("text".to_string(), Doc::Text(text)),
        ];
        pairs.extend(extra.map(|d| ("cache_control".to_string(), d)));
        Doc::Object(pairs)
    });
    let content = prop_oneof![
        text().prop_map(Doc::Text),
        prop::collection::vec(block, 0..3).prop_map(Doc::List),
        doc(),
    ];
    (content, prop::collection::vec((key(), doc()), 0..2)).prop_map(|(content, extra)| {
        let mut pairs = vec![
            ("role".to_string(), Doc::Text("user".into())),
            ("content".to_string(), content),
        ];
        pairs.extend(extra);
        Doc::Object(pairs)
    })
}

/// A request-shaped body: the fields each API needs (sometimes of a wrong type), then
/// extra fields, which may repeat a key.
fn body() -> impl Strategy<Value = String> {
    body_doc().prop_map(|doc| {
        let mut out = String::new();
        write(&doc, &mut out);
        out
    })
}

/// [`body`] before it is written out, for the duplicate-key oracle.
fn body_doc() -> impl Strategy<Value = Doc> {
    let model = prop_oneof![4 => text().prop_map(Doc::Text), 1 => doc()];
    let messages = prop_oneof![
        4 => prop::collection::vec(message(), 0..4).prop_map(Doc::List),
        1 => doc(),
    ];
    let input = prop_oneof![
        text().prop_map(Doc::Text),
        prop::collection::vec(text().prop_map(Doc::Text), 0..3).prop_map(Doc::List),
        doc(),
    ];
    let max_tokens = prop_oneof![3 => Just(Doc::Literal("16".into())), 1 => literal()];
    (
        model,
        messages,
        input,
        max_tokens,
        prop::collection::vec((key(), doc()), 0..3),
    )
        .prop_map(|(model, messages, input, max_tokens, extra)| {
            let mut pairs = vec![
                ("model".to_string(), model),
                ("messages".to_string(), messages),
                ("input".to_string(), input.clone()),
                ("prompt".to_string(), input),
                ("max_tokens".to_string(), max_tokens),
            ];
            pairs.extend(extra);
            Doc::Object(pairs)
        })
}

/// The independent oracle for the strict parser: does any object name one key twice, once
/// its escapes are read (`"\u0063ontent"` is `content`)?
fn has_duplicate_key(doc: &Doc) -> bool {
    match doc {
        Doc::Literal(_) | Doc::Text(_) => false,
        Doc::List(items) => items.iter().any(has_duplicate_key),
        Doc::Object(pairs) => {
            let mut keys: Vec<String> = pairs
                .iter()
                .map(|(key, _)| {
                    serde_json::from_str(&format!("\"{key}\"")).expect("keys are written escaped")
                })
                .collect();
            let count = keys.len();
            keys.sort();
            keys.dedup();
            keys.len() != count || pairs.iter().any(|(_, value)| has_duplicate_key(value))
        }
    }
}

/// A byte-level mutation of a body: truncated, a byte replaced, inserted or removed.
fn mutated() -> impl Strategy<Value = Vec<u8>> {
    (body(), 0..5u8, any::<prop::sample::Index>(), any::<u8>()).prop_map(|(body, how, at, byte)| {
        let mut bytes = body.into_bytes();
        let i = at.index(bytes.len().max(1)).min(bytes.len());
        match how {
            0 => bytes.truncate(i),
            1 if i < bytes.len() => bytes[i] = byte,
            2 => bytes.insert(i, byte),
            3 if i < bytes.len() => {
                bytes.remove(i);
            }
            _ => {}
        }
        bytes
    })
}

/// A parser that keeps the first of duplicate keys, as some providers' parsers do.
struct FirstWins(Value);

impl<'de> Deserialize<'de> for FirstWins {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<FirstWins, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Value;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("JSON")
            }
            fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
                Ok(Value::from(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
                Ok(Value::from(v))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
                Ok(Value::from(v))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
                Ok(Value::from(v))
            }
            fn visit_str<E>(self, v: &str) -> Result<Value, E> {
                Ok(Value::from(v))
            }
            fn visit_unit<E>(self) -> Result<Value, E> {
                Ok(Value::Null)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
                let mut items = Vec::new();
                while let Some(FirstWins(item)) = seq.next_element()? {
                    items.push(item);
                }
                Ok(Value::Array(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Value, A::Error> {
                let mut map = Map::new();
                while let Some((key, FirstWins(value))) = m.next_entry::<String, FirstWins>()? {
                    map.entry(key).or_insert(value);
                }
                Ok(Value::Object(map))
            }
        }
        d.deserialize_any(V).map(FirstWins)
    }
}

/// Every property of an accepted body; `Err` names the first that fails.
fn check_accepted(
    api: Api,
    input: &[u8],
    parsed: ParsedRequest,
    rewrite: &str,
) -> Result<(), TestCaseError> {
    let last_wins: Value = serde_json::from_slice(input).expect("an accepted body is JSON");
    let FirstWins(first_wins) = serde_json::from_slice(input).expect("an accepted body is JSON");
    prop_assert_eq!(
        &first_wins,
        &last_wins,
        "parsers disagree on an accepted body"
    );

    let upstream = parsed.to_body();
    let reread = ParsedRequest::parse(api, &upstream).expect("what goes upstream re-parses");
    prop_assert_eq!(reread.model(), parsed.model());
    prop_assert_eq!(reread.stream(), parsed.stream());
    prop_assert_eq!(reread.segments(), parsed.segments());
    prop_assert_eq!(reread.normalized(), parsed.normalized());

    let key: Value = serde_json::from_slice(&parsed.normalized()).expect("the cache key is JSON");
    let key = key.as_object().expect("the cache key is an object");
    for field in NOT_IN_CACHE_KEY {
        prop_assert!(!key.contains_key(field), "{} in the cache key", field);
    }

    // Rewrites with arbitrary text (indices past the end are ignored) and a new model.
    let mut changed = parsed.clone();
    let count = changed.segments().len();
    let rewrites: Vec<(usize, String)> = (0..count + 1)
        .step_by(2)
        .map(|i| (i, format!("{rewrite}{i}")))
        .collect();
    changed.apply_rewrites(&rewrites);
    changed.set_model(rewrite);
    let reread = ParsedRequest::parse(api, &changed.to_body()).expect("a rewritten body re-parses");
    prop_assert_eq!(reread.model(), rewrite);
    let expected: Vec<String> = parsed
        .segments()
        .iter()
        .enumerate()
        .map(|(i, s)| {
            if i % 2 == 0 {
                format!("{rewrite}{i}")
            } else {
                s.to_string()
            }
        })
        .collect();
    prop_assert_eq!(
        reread.segments(),
        expected.iter().map(String::as_str).collect::<Vec<_>>()
    );
    Ok(())
}

fn check(api: Api, input: &[u8], rewrite: &str) -> Result<bool, TestCaseError> {
    match ParsedRequest::parse(api, input) {
        Ok(parsed) => check_accepted(api, input, parsed, rewrite).map(|()| true),
        Err(err) => {
            prop_assert!(
                !err.to_string().contains('\n'),
                "a refusal over several lines: {}",
                err
            );
            Ok(false)
        }
    }
}

proptest! {
    #![proptest_config(cases(256))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        for api in APIS {
            check(api, &bytes, "m")?;
        }
    }

    #[test]
    fn request_shaped_bodies_keep_their_meaning_upstream(body in body(), rewrite in any::<String>()) {
        for api in APIS {
            check(api, body.as_bytes(), &rewrite)?;
        }
    }

    #[test]
    fn duplicate_keys_are_refused_exactly_when_a_body_has_them(doc in body_doc()) {
        let mut body = String::new();
        write(&doc, &mut body);
        let duplicated = has_duplicate_key(&doc);
        for api in APIS {
            match ParsedRequest::parse(api, body.as_bytes()) {
                Ok(_) => prop_assert!(!duplicated, "accepted a body with a duplicate key: {}", body),
                Err(RequestError::DuplicateKey { .. }) => {
                    prop_assert!(duplicated, "refused a body without a duplicate key: {}", body)
                }
                Err(_) => {} // refused for something else first
            }
        }
    }

    #[test]
    fn mutated_bodies_never_panic_and_keep_their_meaning_if_accepted(bytes in mutated(), rewrite in any::<String>()) {
        for api in APIS {
            check(api, &bytes, &rewrite)?;
        }
    }

    #[test]
    fn deep_nesting_is_refused_or_read_without_overflow(depth in 1usize..20_000, object in any::<bool>(), at in 0..3usize) {
        let nested = if object {
            format!("{}1{}", "{\"a\":".repeat(depth), "}".repeat(depth))
        } else {
            format!("{}{}", "[".repeat(depth), "]".repeat(depth))
        };
        let body = match at {
            0 => format!(r#"{{"model":"m","messages":[],"input":"x","prompt":"x","max_tokens":1,"extra":{nested}}}"#),
            1 => format!(r#"{{"model":"m","messages":[{{"role":"user","content":{nested}}}],"max_tokens":1}}"#),
            _ => nested,
        };
        for api in APIS {
            check(api, body.as_bytes(), "m")?;
        }
    }
}

/// The generators reach the properties: a fair share of request-shaped bodies is accepted
/// by every API, with prompt segments, so the checks above run on accepted bodies.
#[test]
fn request_shaped_bodies_are_often_accepted() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;

    let mut runner = TestRunner::deterministic();
    let strategy = body();
    let samples = 400;
    for api in APIS {
        let (mut accepted, mut with_segments) = (0, 0);
        for _ in 0..samples {
            let body = strategy.new_tree(&mut runner).unwrap().current();
            if let Ok(parsed) = ParsedRequest::parse(api, body.as_bytes()) {
                accepted += 1;
                with_segments += usize::from(!parsed.segments().is_empty());
            }
        }
        assert!(
            accepted * 10 >= samples,
            "{api:?}: {accepted} of {samples} accepted"
        );
        assert!(
            with_segments * 20 >= samples,
            "{api:?}: {with_segments} of {samples} with segments"
        );
    }
}
