//! Redaction: spans, replacements, merging across rules, and interaction with deny.

use serde_json::json;

use super::super::Verdict;
use super::{compile, matched, request};

const EMAIL: &str = r"[\w.+-]+@[\w-]+\.[\w.]+";

#[test]
fn redacts_every_occurrence_in_every_segment_and_reports_only_changed_ones() {
    let policy = compile(json!({"rules": [
        {"id": "emails", "when": {"prompt": {"regex": [EMAIL]}}, "action": "redact", "replacement": "[EMAIL]"},
    ]}));
    let segments = ["mail a@b.com or c.d@e.org", "nothing", "x+y@z.io"];
    let decision = policy.evaluate(&request(&segments));
    assert_eq!(decision.verdict, Verdict::Allow);
    assert_eq!(matched(&decision), ["emails"]);
    assert_eq!(
        decision.rewrites,
        [
            (0, "mail [EMAIL] or [EMAIL]".to_string()),
            (2, "[EMAIL]".to_string())
        ]
    );
}

#[test]
fn default_replacement_and_case_insensitive_keywords() {
    let policy = compile(json!({"rules": [
        {"id": "pw", "when": {"prompt": {"keywords": ["password"], "case_insensitive": true}}, "action": "redact"},
    ]}));
    let decision = policy.evaluate(&request(&["PassWord: hunter2, password"]));
    assert_eq!(
        decision.rewrites,
        [(0, "[REDACTED]: hunter2, [REDACTED]".to_string())]
    );
}

#[test]
fn overlapping_spans_merge_and_take_the_higher_priority_replacement() {
    let policy = compile(json!({"rules": [
        {"id": "emails", "when": {"prompt": {"regex": [EMAIL]}}, "action": "redact", "replacement": "[EMAIL]"},
        {"id": "names", "priority": 5, "when": {"prompt": {"keywords": ["alice"]}}, "action": "redact", "replacement": "[NAME]"},
    ]}));
    let decision = policy.evaluate(&request(&["write to alice@example.com, alice"]));
    assert_eq!(matched(&decision), ["names", "emails"]);
    assert_eq!(
        decision.rewrites,
        [(0, "write to [NAME], [NAME]".to_string())]
    );

    let reordered = compile(json!({"rules": [
        {"id": "emails", "priority": 5, "when": {"prompt": {"regex": [EMAIL]}}, "action": "redact", "replacement": "[EMAIL]"},
        {"id": "names", "when": {"prompt": {"keywords": ["alice"]}}, "action": "redact", "replacement": "[NAME]"},
    ]}));
    let decision = reordered.evaluate(&request(&["write to alice@example.com, alice"]));
    assert_eq!(
        decision.rewrites,
        [(0, "write to [EMAIL], [NAME]".to_string())]
    );
}

#[test]
fn adjacent_spans_merge_into_one_replacement() {
    let policy = compile(json!({"rules": [
        {"id": "digits", "when": {"prompt": {"regex": [r"\d+"]}}, "action": "redact", "replacement": "#"},
        {"id": "letters", "when": {"prompt": {"keywords": ["abc"]}}, "action": "redact", "replacement": "?"},
    ]}));
    let decision = policy.evaluate(&request(&["x 123abc y abcabc"]));
    assert_eq!(decision.rewrites, [(0, "x # y ?".to_string())]);
}

#[test]
fn redacts_with_byte_offsets_in_non_ascii_text() {
    let policy = compile(json!({"rules": [
        {"id": "secret", "when": {"prompt": {"keywords": ["geheim"]}}, "action": "redact", "replacement": "█"},
    ]}));
    let decision = policy.evaluate(&request(&["Größe: geheim — ok"]));
    assert_eq!(decision.rewrites, [(0, "Größe: █ — ok".to_string())]);
}

#[test]
fn a_rule_redacts_with_all_its_patterns_once_any_matched() {
    let policy = compile(json!({"rules": [
        {"id": "r", "when": {"prompt": {"keywords": ["alpha"], "regex": ["be+ta"]}}, "action": "redact"},
    ]}));
    let decision = policy.evaluate(&request(&["alpha", "beeeta", "gamma"]));
    assert_eq!(
        decision.rewrites,
        [(0, "[REDACTED]".to_string()), (1, "[REDACTED]".to_string())]
    );
}

#[test]
fn later_rules_see_the_original_text() {
    let policy = compile(json!({"rules": [
        {"id": "redact-key", "priority": 10, "when": {"prompt": {"keywords": ["sk-live"]}}, "action": "redact"},
        {"id": "route-key", "when": {"prompt": {"keywords": ["sk-live"]}}, "action": "route", "upstream": "secure"},
    ]}));
    let decision = policy.evaluate(&request(&["key sk-live-123"]));
    assert_eq!(matched(&decision), ["redact-key", "route-key"]);
    assert_eq!(decision.route.as_deref(), Some("secure"));
    assert_eq!(decision.rewrites, [(0, "key [REDACTED]-123".to_string())]);
}

#[test]
fn redaction_only_uses_rules_that_matched() {
    let policy = compile(json!({"rules": [
        {"id": "beta-only", "when": {"tenants": ["beta"], "prompt": {"keywords": ["secret"]}}, "action": "redact"},
        {"id": "emails", "when": {"prompt": {"regex": [EMAIL]}}, "action": "redact", "replacement": "[EMAIL]"},
    ]}));
    let decision = policy.evaluate(&request(&["secret a@b.co"]));
    assert_eq!(matched(&decision), ["emails"]);
    assert_eq!(decision.rewrites, [(0, "secret [EMAIL]".to_string())]);
}

#[test]
fn deny_discards_redactions_and_route() {
    let policy = compile(json!({"rules": [
        {"id": "emails", "priority": 10, "when": {"prompt": {"regex": [EMAIL]}}, "action": "redact"},
        {"id": "route", "priority": 5, "action": "route", "upstream": "x"},
        {"id": "cards", "when": {"prompt": {"regex": [r"\b(?:\d[ -]?){13,16}\b"]}}, "action": "deny", "message": "no cards"},
        {"id": "after", "action": "redact", "when": {"prompt": {"keywords": ["a"]}}},
    ]}));
    let decision = policy.evaluate(&request(&["a@b.com", "card 4111 1111 1111 1111"]));
    assert_eq!(matched(&decision), ["emails", "route", "cards"]);
    assert_eq!(
        decision.verdict,
        Verdict::Deny {
            status: 403,
            message: "no cards".to_string(),
            rule: "cards".to_string()
        }
    );
    assert_eq!(decision.route, None);
    assert!(decision.rewrites.is_empty());
}

#[test]
fn empty_regex_matches_replace_nothing() {
    let policy = compile(json!({"rules": [
        {"id": "stars", "when": {"prompt": {"regex": ["x*"]}}, "action": "redact", "replacement": "_"},
    ]}));
    let decision = policy.evaluate(&request(&["axxb", "ab"]));
    assert_eq!(matched(&decision), ["stars"]);
    assert_eq!(decision.rewrites, [(0, "a_b".to_string())]);
}
