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

/// Every float literal reaches upstream and the cache key as the same f64 the client wrote:
/// `to_body` and `normalized` write the value `parse` read, so `parse` must round to nearest
/// (serde_json's `float_roundtrip` feature). Without it, serde_json's fast float parser is
/// one ULP off for some literals: a halfway case, the subnormal boundary, long digit strings.
#[test]
fn floats_reach_upstream_and_the_cache_key_bit_for_bit() {
    let literals = [
        // Shortest forms of awkward values (exact with or without the feature; kept as guards).
        "0.30000000000000004",
        "2.2250738585072014e-308",
        "1.7976931348623157e308",
        "5e-324",
        "0.1",
        "1e23",
        "8.98846567431158e307",
        // One ULP off without the feature.
        "9007199254740993.0",
        "2.2250738585072011e-308",
        "1.00000000000000011102230246251565404236316680908203125",
        "0.73701742068918183",
        "3.3346798062551734",
        "0.1005280444990916918",
        "0.832333359063409924018",
        "8.32333359063409924018e15",
        "6.5129940575818108110530e2",
        "1.968817246360355198e11",
        "9.88941747755590920859304e-7",
    ];
    let literals: Vec<String> = literals
        .iter()
        .flat_map(|literal| [literal.to_string(), format!("-{literal}")])
        .collect();
    // The standard library's parser rounds to nearest: the value the client meant.
    let meant: Vec<u64> = literals
        .iter()
        .map(|literal| literal.parse::<f64>().unwrap().to_bits())
        .collect();
    let body = format!(
        r#"{{"model":"m","messages":[],"x":[{}]}}"#,
        literals.join(",")
    );
    let parsed = ParsedRequest::parse(Api::Chat, body.as_bytes()).unwrap();
    for (what, out) in [
        ("to_body", parsed.to_body()),
        ("normalized", parsed.normalized()),
    ] {
        let out = String::from_utf8(out).unwrap();
        let numbers = out
            .strip_prefix(r#"{"messages":[],"model":"m","x":["#)
            .and_then(|rest| rest.strip_suffix("]}"))
            .unwrap_or_else(|| panic!("{what}: {out}"));
        let sent: Vec<&str> = numbers.split(',').collect();
        assert_eq!(sent.len(), literals.len(), "{what}: {out}");
        for ((literal, meant), sent) in literals.iter().zip(&meant).zip(sent) {
            let got = sent.parse::<f64>().unwrap().to_bits();
            assert_eq!(
                got,
                *meant,
                "{what}: {literal} went out as {sent} ({:e}, meant {:e})",
                f64::from_bits(got),
                f64::from_bits(*meant)
            );
        }
    }

    // A field the gateway itself reads (and checks the range of) gets the same value.
    let temperature = "1.00000000000000011102230246251565404236316680908203125";
    let body = format!(r#"{{"model":"m","messages":[],"temperature":{temperature}}}"#);
    let parsed = ParsedRequest::parse(Api::Chat, body.as_bytes()).unwrap();
    assert_eq!(
        parsed.temperature().map(f64::to_bits),
        Some(temperature.parse::<f64>().unwrap().to_bits())
    );
}
