//! Every compile error names the field it is about.

use serde_json::{json, Value};

use super::super::Policy;

fn error(doc: Value) -> String {
    error_for(doc.to_string().as_bytes())
}

fn error_for(bytes: &[u8]) -> String {
    match Policy::compile(bytes) {
        Ok(_) => panic!(
            "policy should not compile: {}",
            String::from_utf8_lossy(bytes)
        ),
        Err(err) => {
            let message = err.to_string();
            assert!(!message.contains('\n'), "error is not one line: {message}");
            message
        }
    }
}

fn rule(extra: Value) -> Value {
    let mut rule = json!({"id": "r", "action": "allow"});
    rule.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    rule
}

fn assert_starts_with(message: String, prefix: &str) {
    assert!(
        message.starts_with(prefix),
        "{message:?} should start with {prefix:?}"
    );
}

#[test]
fn invalid_json_names_where_parsing_stopped() {
    assert_starts_with(error_for(b""), "policy document: EOF while parsing a value");
    assert_starts_with(
        error_for(b" [{\"id\": \"a\"}]"),
        "policy document: must be a JSON object",
    );
    assert_starts_with(
        error_for(b"\"deny\""),
        "policy document: invalid type: string",
    );
    assert_starts_with(
        error_for(b"{\"rules\": ["),
        "rules: EOF while parsing a list",
    );
    assert_starts_with(error_for(b"{} x"), "policy document: trailing characters");
}

#[test]
fn unknown_fields_are_refused_with_their_path() {
    assert_starts_with(
        error(json!({"defualt": "deny"})),
        "defualt: unknown field `defualt`",
    );
    let typo = json!({"rules": [{"id": "a", "action": "allow", "when": {"modles": ["x"]}}]});
    assert_starts_with(error(typo), "rules[0].when.modles: unknown field `modles`");
    let typo = json!({"rules": [rule(json!({})), rule(json!({"id": "b", "prioity": 1}))]});
    assert_starts_with(error(typo), "rules[1].prioity: unknown field");
    let typo = json!({"rules": [rule(json!({"when": {"prompt": {"regexes": ["a"]}}}))]});
    assert_starts_with(error(typo), "rules[0].when.prompt.regexes: unknown field");
}

#[test]
fn wrong_shapes_and_enum_values_are_refused_with_their_path() {
    assert_starts_with(
        error(json!({"default": "maybe"})),
        "default: unknown variant `maybe`",
    );
    assert_starts_with(error(json!({"rules": {}})), "rules: invalid type: map");
    let missing_id = json!({"rules": [{"action": "allow"}]});
    assert_starts_with(error(missing_id), "rules[0]: missing field `id`");
    let bad_action = json!({"rules": [rule(json!({"action": "block"}))]});
    assert_starts_with(
        error(bad_action),
        "rules[0].action: unknown variant `block`",
    );
    let bad_route = json!({"rules": [rule(json!({"when": {"routes": ["chat", "chats"]}}))]});
    assert_starts_with(
        error(bad_route),
        "rules[0].when.routes[1]: unknown variant `chats`",
    );
    let bad_priority = json!({"rules": [rule(json!({"priority": "high"}))]});
    assert_starts_with(
        error(bad_priority),
        "rules[0].priority: invalid type: string",
    );
}

#[test]
fn rule_ids_must_be_valid_and_unique() {
    let duplicate = json!({"rules": [
        rule(json!({"id": "a"})), rule(json!({"id": "b"})), rule(json!({"id": "c"})), rule(json!({"id": "b"})),
    ]});
    assert_eq!(error(duplicate), r#"rules[3].id: duplicate rule id "b""#);
    for bad_id in ["", "has space", "slash/y", "émoji"] {
        let message = error(json!({"rules": [rule(json!({"id": bad_id}))]}));
        assert_starts_with(message, "rules[0].id: must be non-empty and use only");
    }
    compile_ok(json!({"rules": [rule(json!({"id": "Ok_id.v2:x-y"}))]}));
}

#[test]
fn deny_status_must_be_an_error_status() {
    for status in [200, 399, 600, 70000, -1] {
        let doc = json!({"rules": [rule(json!({})), rule(json!({"id": "d", "action": "deny", "status": status}))]});
        assert_eq!(error(doc), "rules[1].status: must be between 400 and 599");
    }
}

#[test]
fn action_specific_fields_are_refused_on_other_actions() {
    let cases = [
        (
            json!({"status": 403}),
            "rules[0].status: only allowed when action is deny",
        ),
        (
            json!({"message": "no"}),
            "rules[0].message: only allowed when action is deny",
        ),
        (
            json!({"replacement": "x"}),
            "rules[0].replacement: only allowed when action is redact",
        ),
        (
            json!({"upstream": "small"}),
            "rules[0].upstream: only allowed when action is route",
        ),
    ];
    for (extra, expected) in cases {
        assert_eq!(error(json!({"rules": [rule(extra)]})), expected);
    }
}

#[test]
fn route_needs_a_non_empty_upstream() {
    let doc = json!({"rules": [rule(json!({"action": "route"}))]});
    assert_eq!(
        error(doc),
        "rules[0].upstream: required when action is route"
    );
    let doc = json!({"rules": [rule(json!({"action": "route", "upstream": ""}))]});
    assert_eq!(error(doc), "rules[0].upstream: must not be empty");
}

#[test]
fn redact_needs_prompt_patterns() {
    let doc = json!({"rules": [rule(json!({"action": "redact"}))]});
    assert_starts_with(
        error(doc),
        "rules[0].when.prompt: required when action is redact",
    );
    let doc = json!({"rules": [rule(json!({"action": "redact", "when": {"tenants": ["a"]}}))]});
    assert_starts_with(
        error(doc),
        "rules[0].when.prompt: required when action is redact",
    );
}

#[test]
fn invalid_regex_is_reported_on_one_line_with_its_index() {
    let doc = json!({"rules": [
        rule(json!({"id": "a"})),
        rule(json!({"id": "b"})),
        rule(json!({"id": "c", "when": {"prompt": {"regex": ["(unclosed", "fine"]}}})),
    ]});
    assert_eq!(
        error(doc),
        "rules[2].when.prompt.regex[0]: regex parse error: unclosed group"
    );
    let doc = json!({"rules": [rule(json!({"when": {"prompt": {"regex": ["ok", "a{2,1}"], "case_insensitive": true}}}))]});
    assert_starts_with(
        error(doc),
        "rules[0].when.prompt.regex[1]: regex parse error: ",
    );
}

#[test]
fn invalid_globs_are_reported_with_their_index() {
    let doc = json!({"rules": [rule(json!({"when": {"models": ["gpt-4*", "claude-[3"]}}))]});
    assert_starts_with(
        error(doc),
        "rules[0].when.models[1]: error parsing glob 'claude-[3'",
    );
    let doc = json!({"rules": [rule(json!({"when": {"headers": {"X-Team": ["ml", "{a"]}}}))]});
    assert_starts_with(
        error(doc),
        "rules[0].when.headers.X-Team[1]: error parsing glob",
    );
}

#[test]
fn empty_lists_that_could_never_match_are_refused() {
    let cases = [
        (
            json!({"tenants": []}),
            "rules[0].when.tenants: must not be empty",
        ),
        (
            json!({"models": []}),
            "rules[0].when.models: must not be empty",
        ),
        (
            json!({"routes": []}),
            "rules[0].when.routes: must not be empty",
        ),
        (
            json!({"headers": {}}),
            "rules[0].when.headers: must not be empty",
        ),
        (
            json!({"headers": {"x-team": []}}),
            "rules[0].when.headers.x-team: must not be empty",
        ),
        (
            json!({"prompt": {"keywords": ["a", ""]}}),
            "rules[0].when.prompt.keywords[1]: must not be empty",
        ),
    ];
    for (when, expected) in cases {
        assert_eq!(
            error(json!({"rules": [rule(json!({"when": when}))]})),
            expected
        );
    }
    let doc = json!({"rules": [rule(json!({"when": {"prompt": {"case_insensitive": true}}}))]});
    assert_starts_with(error(doc), "rules[0].when.prompt: needs at least one entry");
}

#[test]
fn header_names_differing_only_in_case_are_refused() {
    let doc =
        json!({"rules": [rule(json!({"when": {"headers": {"X-Team": ["a"], "x-team": ["b"]}}}))]});
    assert_starts_with(
        error(doc),
        "rules[0].when.headers.x-team: header \"x-team\" is named twice",
    );
}

fn compile_ok(doc: Value) {
    if let Err(err) = Policy::compile(doc.to_string().as_bytes()) {
        panic!("policy should compile: {err}");
    }
}
