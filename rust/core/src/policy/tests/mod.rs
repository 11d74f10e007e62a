use serde_json::{json, Value};

use super::{Decision, Policy, RequestView, Verdict};

mod errors;
mod evaluation;
mod properties;
mod redaction;

fn compile(doc: Value) -> Policy {
    match Policy::compile(doc.to_string().as_bytes()) {
        Ok(policy) => policy,
        Err(err) => panic!("policy should compile: {err}"),
    }
}

/// A chat request from tenant `acme` for `gpt-4o` with no headers.
fn request<'a>(segments: &'a [&'a str]) -> RequestView<'a> {
    RequestView {
        tenant: "acme",
        model: "gpt-4o",
        route: "chat",
        headers: &[],
        segments,
    }
}

fn matched(decision: &Decision) -> Vec<&str> {
    decision.matched.iter().map(String::as_str).collect()
}

fn deny(status: u16, message: &str, rule: &str) -> Verdict {
    Verdict::Deny {
        status,
        message: message.to_string(),
        rule: rule.to_string(),
    }
}

#[test]
fn policy_is_shareable_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Policy>();
}

#[test]
fn reports_rule_count_and_referenced_header_names() {
    let policy = compile(json!({"rules": [
        {"id": "a", "when": {"headers": {"X-Team": ["ml"], "x-env": ["prod"]}}, "action": "allow"},
        {"id": "b", "when": {"headers": {"x-team": ["data"]}}, "action": "deny"},
        {"id": "c", "action": "allow"},
    ]}));
    assert_eq!(policy.rule_count(), 3);
    assert_eq!(policy.header_names(), ["x-env", "x-team"]);
}

#[test]
fn only_the_headers_rules_read_are_selected_with_latin1_values() {
    let policy = compile(json!({"rules": [
        {"id": "a", "when": {"headers": {"X-Team": ["ml"]}}, "action": "allow"},
    ]}));
    let sent: [(&[u8], &[u8]); 4] = [
        (b"authorization", b"Bearer sk"),
        (b"x-team", b"ml"),
        (b"x-teams", b"no"),
        (b"x-team", b"caf\xe9"),
    ];
    assert_eq!(
        policy.select_headers(sent),
        [
            ("x-team".into(), "ml".into()),
            ("x-team".into(), "caf\u{e9}".into())
        ]
    );
    let none = compile(json!({"rules": [{"id": "c", "action": "allow"}]}));
    assert!(none.select_headers(sent).is_empty());
}

#[test]
fn empty_document_allows_everything() {
    let policy = compile(json!({}));
    assert_eq!(policy.rule_count(), 0);
    let decision = policy.evaluate(&request(&["anything"]));
    assert_eq!(
        decision,
        Decision {
            verdict: Verdict::Allow,
            matched: Vec::new(),
            route: None,
            rewrites: Vec::new(),
        }
    );
}
