use serde_json::{json, Value};

use super::{Api, ParsedRequest, RequestError};

fn parse(api: Api, body: Value) -> ParsedRequest {
    match ParsedRequest::parse(api, body.to_string().as_bytes()) {
        Ok(parsed) => parsed,
        Err(err) => panic!("request should parse: {err}"),
    }
}

fn error(api: Api, body: &[u8]) -> String {
    match ParsedRequest::parse(api, body) {
        Ok(_) => panic!(
            "request should be refused: {}",
            String::from_utf8_lossy(body)
        ),
        Err(err) => err.to_string(),
    }
}

fn body_json(parsed: &ParsedRequest) -> Value {
    serde_json::from_slice(&parsed.to_body()).unwrap()
}

#[test]
fn api_names_round_trip() {
    for api in [Api::Chat, Api::Completions, Api::Embeddings, Api::Messages] {
        assert_eq!(Api::from_name(api.name()), Some(api));
    }
    assert_eq!(Api::Chat.name(), "chat");
    assert_eq!(Api::from_name("models"), None);
    assert_eq!(Api::from_name("Chat"), None);
}

#[test]
fn chat_segments_cover_string_content_and_text_parts() {
    let parsed = parse(
        Api::Chat,
        json!({
            "model": "gpt-4o",
            "stream": true,
            "temperature": 0.2,
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": [
                    {"type": "text", "text": "first part"},
                    {"type": "image_url", "image_url": {"url": "https://x/y.png"}},
                    {"type": "text", "text": "second part"},
                ]},
                {"role": "assistant", "content": null, "tool_calls": [{"id": "t"}]},
                {"role": "tool", "tool_call_id": "t", "content": "tool output"},
            ],
        }),
    );
    assert_eq!(parsed.model(), "gpt-4o");
    assert!(parsed.stream());
    assert_eq!(parsed.temperature(), Some(0.2));
    assert_eq!(
        parsed.segments(),
        ["be brief", "first part", "second part", "tool output"]
    );
}

#[test]
fn completions_segments_take_string_or_string_array_prompts() {
    let single = parse(
        Api::Completions,
        json!({"model": "m", "prompt": "once upon"}),
    );
    assert_eq!(single.segments(), ["once upon"]);
    let batch = parse(
        Api::Completions,
        json!({"model": "m", "prompt": ["a", "b"]}),
    );
    assert_eq!(batch.segments(), ["a", "b"]);
    let tokens = parse(
        Api::Completions,
        json!({"model": "m", "prompt": [[1, 2], [3]]}),
    );
    assert!(tokens.segments().is_empty());
    assert!(!single.stream());
    assert_eq!(single.temperature(), None);
}

#[test]
fn embeddings_segments_skip_token_ids() {
    let parsed = parse(
        Api::Embeddings,
        json!({"model": "e", "input": ["text one", [1, 2, 3], "text two"]}),
    );
    assert_eq!(parsed.segments(), ["text one", "text two"]);
    let tokens = parse(Api::Embeddings, json!({"model": "e", "input": [1, 2, 3]}));
    assert!(tokens.segments().is_empty());
    let single = parse(Api::Embeddings, json!({"model": "e", "input": "just this"}));
    assert_eq!(single.segments(), ["just this"]);
}

#[test]
fn messages_segments_include_system_blocks_first() {
    let parsed = parse(
        Api::Messages,
        json!({
            "model": "claude-3-5-sonnet",
            "max_tokens": 256,
            "system": [{"type": "text", "text": "sys one"}, {"type": "text", "text": "sys two", "cache_control": {"type": "ephemeral"}}],
            "messages": [
                {"role": "user", "content": "plain question"},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "x", "name": "f", "input": {}}]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "x", "content": "nested is skipped"},
                    {"type": "image", "source": {"type": "base64", "data": "AAAA"}},
                    {"type": "text", "text": "follow-up"},
                ]},
            ],
        }),
    );
    assert_eq!(
        parsed.segments(),
        ["sys one", "sys two", "plain question", "follow-up"]
    );

    let string_system = parse(
        Api::Messages,
        json!({
            "model": "c", "max_tokens": 1, "system": "sys", "messages": [{"role": "user", "content": "hi"}],
        }),
    );
    assert_eq!(string_system.segments(), ["sys", "hi"]);
}

#[test]
fn rewrites_replace_segments_in_place() {
    let mut parsed = parse(
        Api::Messages,
        json!({
            "model": "c",
            "max_tokens": 10,
            "system": [{"type": "text", "text": "system secret"}],
            "messages": [
                {"role": "user", "content": "mail a@b.com"},
                {"role": "user", "content": [{"type": "text", "text": "keep"}, {"type": "text", "text": "card 4111"}]},
            ],
        }),
    );
    parsed.apply_rewrites(&[
        (0, "system [X]".to_string()),
        (1, "mail [EMAIL]".to_string()),
        (3, "card [CARD]".to_string()),
        (99, "ignored".to_string()),
    ]);
    assert_eq!(
        parsed.segments(),
        ["system [X]", "mail [EMAIL]", "keep", "card [CARD]"]
    );
    assert_eq!(
        body_json(&parsed),
        json!({
            "model": "c",
            "max_tokens": 10,
            "system": [{"type": "text", "text": "system [X]"}],
            "messages": [
                {"role": "user", "content": "mail [EMAIL]"},
                {"role": "user", "content": [{"type": "text", "text": "keep"}, {"type": "text", "text": "card [CARD]"}]},
            ],
        })
    );
}

#[test]
fn rewrites_reach_array_prompts() {
    let mut parsed = parse(
        Api::Embeddings,
        json!({"model": "e", "input": [[7], "a", "b"]}),
    );
    parsed.apply_rewrites(&[(1, "B".to_string())]);
    assert_eq!(body_json(&parsed)["input"], json!([[7], "a", "B"]));
}

#[test]
fn set_model_changes_the_upstream_body() {
    let mut parsed = parse(Api::Chat, json!({"model": "gpt-4o", "messages": []}));
    parsed.set_model("gpt-4o-mini");
    assert_eq!(parsed.model(), "gpt-4o-mini");
    assert_eq!(
        parsed.to_body(),
        br#"{"messages":[],"model":"gpt-4o-mini"}"#
    );
}

#[test]
fn normalized_ignores_delivery_and_attribution_fields_and_key_order() {
    let a = br#"{"stream": true, "model": "m", "user": "u1", "metadata": {"k": 1},
        "stream_options": {"include_usage": true},
        "messages": [{"role": "user", "content": "hi"}], "temperature": 0.50}"#;
    let b =
        br#"{"temperature": 0.5, "messages": [{"content": "hi", "role": "user"}], "model": "m"}"#;
    let a = ParsedRequest::parse(Api::Chat, a).unwrap();
    let b = ParsedRequest::parse(Api::Chat, b).unwrap();
    assert_eq!(a.normalized(), b.normalized());
    assert_eq!(
        String::from_utf8(a.normalized()).unwrap(),
        r#"{"messages":[{"content":"hi","role":"user"}],"model":"m","temperature":0.5}"#
    );
    assert!(a.stream(), "normalising does not change the request itself");

    let c = parse(
        Api::Chat,
        json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "temperature": 0.7}),
    );
    assert_ne!(a.normalized(), c.normalized());
}

#[test]
fn normalized_of_only_ignored_fields_is_an_empty_object() {
    let parsed = parse(
        Api::Embeddings,
        json!({"model": "e", "input": "x", "user": "u"}),
    );
    assert_eq!(parsed.normalized(), br#"{"input":"x","model":"e"}"#);
}

#[test]
fn invalid_bodies_are_refused_with_one_line_reasons() {
    let invalid_json = error(Api::Chat, b"{\"model\": }");
    assert!(
        invalid_json
            .starts_with("request body is not valid JSON: expected value at line 1 column 11"),
        "{invalid_json}"
    );
    assert_eq!(
        error(Api::Chat, b"[1]"),
        "request body must be a JSON object"
    );
    assert!(matches!(
        ParsedRequest::parse(Api::Chat, b"{}"),
        Err(RequestError::InvalidField { field: "model", .. })
    ));
    let cases: [(Api, Value, &str); 8] = [
        (
            Api::Chat,
            json!({"messages": []}),
            "`model` is required and must be a string",
        ),
        (
            Api::Chat,
            json!({"model": 4, "messages": []}),
            "`model` is required and must be a string",
        ),
        (
            Api::Chat,
            json!({"model": "m", "messages": "hi"}),
            "`messages` is required and must be an array",
        ),
        (
            Api::Messages,
            json!({"model": "m", "max_tokens": 5}),
            "`messages` is required and must be an array",
        ),
        (
            Api::Messages,
            json!({"model": "m", "messages": []}),
            "`max_tokens` is required and must be an integer",
        ),
        (
            Api::Messages,
            json!({"model": "m", "messages": [], "max_tokens": 1.5}),
            "`max_tokens` is required and must be an integer",
        ),
        (
            Api::Completions,
            json!({"model": "m"}),
            "`prompt` is required and must be a string or an array",
        ),
        (
            Api::Embeddings,
            json!({"model": "m", "input": 3}),
            "`input` is required and must be a string or an array",
        ),
    ];
    for (api, body, expected) in cases {
        assert_eq!(error(api, body.to_string().as_bytes()), expected, "{body}");
    }
}

#[test]
fn message_shapes_are_left_for_upstream_to_validate() {
    let parsed = parse(
        Api::Chat,
        json!({"model": "m", "messages": [42, {"content": 7}], "logit_bias": "odd"}),
    );
    assert!(parsed.segments().is_empty());
    assert_eq!(parsed.temperature(), None);
    assert!(!parsed.stream());
}

#[test]
fn duplicate_keys_are_refused_at_any_depth_naming_key_and_place() {
    let top = error(
        Api::Chat,
        br#"{"model":"m","messages":[{"role":"user","content":"card 4111 1111 1111 1111"}],"messages":[{"role":"user","content":"hi"}]}"#,
    );
    assert!(
        top.contains("`messages` twice in the top-level object"),
        "{top}"
    );
    let nested = error(
        Api::Chat,
        br#"{"model":"m","messages":[{"role":"user","content":"mail a.b@example.com now","content":"x"}]}"#,
    );
    assert!(
        nested.contains("`content` twice in `messages[0]`"),
        "{nested}"
    );
    let deep = error(
        Api::Messages,
        br#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":[{"type":"text","text":"a","text":"b"}]}]}"#,
    );
    assert!(
        deep.contains("`text` twice in `messages[0].content[0]`"),
        "{deep}"
    );
    // Outside the prompt too: any key any parser could read differently.
    let anywhere = error(
        Api::Chat,
        br#"{"model":"m","messages":[],"tools":[{"function":{"name":"a","name":"b"}}]}"#,
    );
    assert!(
        anywhere.contains("`name` twice in `tools[0].function`"),
        "{anywhere}"
    );
}

#[test]
fn duplicate_keys_are_compared_after_unescaping() {
    let escaped = error(
        Api::Chat,
        br#"{"model":"m","messages":[{"content":"a b","\u0063ontent":"x"}]}"#,
    );
    assert!(escaped.contains("`content` twice"), "{escaped}");
    // The same key in sibling objects is no duplicate.
    let siblings = ParsedRequest::parse(
        Api::Chat,
        br#"{"model":"m","messages":[{"role":"user","content":"a"},{"role":"user","content":"b"}]}"#,
    );
    assert_eq!(siblings.unwrap().segments(), ["a", "b"]);
}

#[test]
fn syntax_errors_stay_syntax_errors() {
    let err = error(Api::Chat, br#"{"model":"m","messages":[}"#);
    assert!(err.starts_with("request body is not valid JSON"), "{err}");
    let surrogate = error(Api::Chat, br#"{"model":"m","messages":[],"x":"\ud800"}"#);
    assert!(
        surrogate.starts_with("request body is not valid JSON"),
        "{surrogate}"
    );
}

#[test]
fn sampling_fields_are_checked_for_type_and_range() {
    let refused = [
        (
            Api::Chat,
            r#""max_tokens":-1"#,
            "`max_tokens` must be an integer from 1",
        ),
        (
            Api::Chat,
            r#""max_tokens":1e30"#,
            "`max_tokens` must be an integer",
        ),
        (
            Api::Chat,
            r#""max_tokens":18446744073709551616"#,
            "`max_tokens` must be an integer",
        ),
        (
            Api::Chat,
            r#""max_tokens":"10""#,
            "`max_tokens` must be an integer",
        ),
        (
            Api::Chat,
            r#""temperature":"hot""#,
            "`temperature` must be a number from 0 to 2",
        ),
        (
            Api::Chat,
            r#""temperature":-5"#,
            "`temperature` must be a number from 0 to 2",
        ),
        (
            Api::Chat,
            r#""stream":"true""#,
            "`stream` must be a boolean",
        ),
        (
            Api::Completions,
            r#""n":0"#,
            "`n` must be an integer from 1 to 128",
        ),
        (
            Api::Messages,
            r#""temperature":1.5"#,
            "`temperature` must be a number from 0 to 1",
        ),
        (
            Api::Messages,
            r#""top_k":-1"#,
            "`top_k` must be a non-negative integer",
        ),
        (
            Api::Embeddings,
            r#""dimensions":0.5"#,
            "`dimensions` must be an integer",
        ),
    ];
    for (api, field, expected) in refused {
        let body = match api {
            Api::Completions => format!(r#"{{"model":"m","prompt":"p",{field}}}"#),
            Api::Embeddings => format!(r#"{{"model":"m","input":"p",{field}}}"#),
            Api::Messages => format!(r#"{{"model":"m","max_tokens":5,"messages":[],{field}}}"#),
            Api::Chat => format!(r#"{{"model":"m","messages":[],{field}}}"#),
        };
        let err = error(api, body.as_bytes());
        assert!(err.starts_with(expected), "{field}: {err}");
    }
    let accepted = parse(
        Api::Chat,
        json!({"model": "m", "messages": [], "temperature": 2, "top_p": null,
               "max_tokens": 4294967295u64, "stream": false, "seed": -7}),
    );
    assert_eq!(accepted.temperature(), Some(2.0));
}

/// Property: for any body the parser accepts, a parser keeping the first of duplicate keys
/// and one keeping the last read the same document as the policy did.
mod views_agree {
    use std::fmt;

    use proptest::prelude::*;
    use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
    use serde_json::{Map, Value};

    use super::super::{Api, ParsedRequest, RequestError};

    /// A JSON tree written out by hand, so that objects may repeat keys.
    #[derive(Debug, Clone)]
    enum Doc {
        Text(String),
        List(Vec<Doc>),
        Object(Vec<(String, Doc)>),
    }

    /// Few key names and two spellings of each, so duplicates (escaped or not) are common.
    fn key() -> impl Strategy<Value = (String, String)> {
        prop_oneof![
            Just(("content".to_string(), "content".to_string())),
            Just(("content".to_string(), "\\u0063ontent".to_string())),
            Just(("role".to_string(), "role".to_string())),
            Just(("text".to_string(), "text".to_string())),
            Just(("type".to_string(), "type".to_string())),
            Just(("type".to_string(), "typ\\u0065".to_string())),
        ]
    }

    fn doc() -> impl Strategy<Value = Doc> {
        let leaf = prop_oneof![
            Just(Doc::Text("card 4111 1111 1111 1111".into())),
            Just(Doc::Text("text".into())),
            Just(Doc::Text("hi".into())),
        ];
        leaf.prop_recursive(4, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Doc::List),
                prop::collection::vec((key(), inner), 0..4).prop_map(|pairs| {
                    Doc::Object(
                        pairs
                            .into_iter()
                            .map(|((_, spelled), d)| (spelled, d))
                            .collect(),
                    )
                }),
            ]
        })
    }

    fn write(doc: &Doc, out: &mut String) {
        match doc {
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
                for (i, (spelled, value)) in pairs.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push('"');
                    out.push_str(spelled);
                    out.push_str("\":");
                    write(value, out);
                }
                out.push('}');
            }
        }
    }

    /// The independent oracle: does any object name one (unescaped) key twice?
    fn has_duplicates(doc: &Doc) -> bool {
        match doc {
            Doc::Text(_) => false,
            Doc::List(items) => items.iter().any(has_duplicates),
            Doc::Object(pairs) => {
                let keys: Vec<String> = pairs
                    .iter()
                    .map(|(spelled, _)| serde_json::from_str(&format!("\"{spelled}\"")).unwrap())
                    .collect();
                let mut unique = keys.clone();
                unique.sort();
                unique.dedup();
                unique.len() != keys.len() || pairs.iter().any(|(_, d)| has_duplicates(d))
            }
        }
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
                fn visit_str<E>(self, v: &str) -> Result<Value, E> {
                    Ok(Value::from(v))
                }
                fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
                    Ok(Value::from(v))
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

    fn segments_of(body: &[u8]) -> Vec<String> {
        let parsed = ParsedRequest::parse(Api::Chat, body).expect("an accepted body reparses");
        parsed.segments().into_iter().map(str::to_string).collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

        #[test]
        fn accepted_bodies_read_the_same_to_every_parser(messages in prop::collection::vec(doc(), 0..3)) {
            let mut body = String::from(r#"{"model":"m","messages":"#);
            write(&Doc::List(messages.clone()), &mut body);
            body.push('}');
            let duplicated = messages.iter().any(has_duplicates);
            match ParsedRequest::parse(Api::Chat, body.as_bytes()) {
                Ok(parsed) => {
                    prop_assert!(!duplicated, "accepted a body with a duplicate key: {}", body);
                    let last_wins: Value = serde_json::from_slice(body.as_bytes()).unwrap();
                    let FirstWins(first_wins) = serde_json::from_slice(body.as_bytes()).unwrap();
                    prop_assert_eq!(&first_wins, &last_wins);
                    // What goes upstream (re-serialised or raw) reads as what policy saw.
                    let judged: Vec<String> = parsed.segments().into_iter().map(str::to_string).collect();
                    prop_assert_eq!(&segments_of(&parsed.to_body()), &judged);
                    prop_assert_eq!(&segments_of(&serde_json::to_vec(&first_wins).unwrap()), &judged);
                }
                Err(RequestError::DuplicateKey { .. }) => prop_assert!(duplicated, "{}", body),
                Err(other) => prop_assert!(false, "unexpected refusal {} of {}", other, body),
            }
        }
    }
}
