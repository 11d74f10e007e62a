//! Property tests (proptest) for compile, evaluate and redaction on arbitrary documents and
//! texts (issue 9, "Keep it hardened"). Case counts are modest so `cargo test` stays fast;
//! `PROPTEST_CASES=20000 cargo test -p gatewayd-core properties` runs a long mode.
//!
//! Properties:
//! * compile never panics, whatever the document; a refusal is one line;
//! * evaluate never panics, on any text; a deny carries no rewrites;
//! * redaction: rewrites name each changed segment once, in order; no span a redacting
//!   pattern matches survives in any segment (replacements are drawn from characters no
//!   pattern matches, so a survivor can only be a missed span); and a chat body rewritten
//!   with the redactions re-parses, reading back exactly the redacted texts.

use proptest::prelude::*;
use serde_json::{json, Value};

use super::super::{Policy, Verdict};
use super::request;
use crate::request::{Api, ParsedRequest};
use crate::testing::cases;

/// Redacting patterns with no look-around (`\b`, `^`, `$`): a replacement next to a gap
/// would change what an assertion sees, and the survivor check would be meaningless.
const REGEXES: [&str; 6] = [
    r"\d{4}[ -]?\d{4}[ -]?\d{4}[ -]?\d{4}",
    r"[\w.+-]+@[\w-]+\.[\w.-]+",
    r"secret\w*",
    r"(?:ab)+",
    r"x+y",
    r"é+",
];
const KEYWORDS: [&str; 6] = ["alice", "password", "aba", "Swordfish", "key", "ü"];
/// Replacements of characters no pattern above can match.
const REPLACEMENTS: [&str; 4] = ["[*]", "█", "<>", "#"];
/// Words that make matches common: the patterns' own material, in several cases.
const WORDS: [&str; 15] = [
    "Forbidden",
    "4111 1111 1111 1111",
    "4111-1111-1111-1111",
    "a.b@example.com",
    "SECRET",
    "secretive",
    "ababab",
    "xxy",
    "ééé",
    "ALICE",
    "Password",
    "swordFISH",
    "KEY",
    "Ü",
    " ",
];

#[derive(Debug, Clone)]
struct RedactRule {
    regexes: Vec<usize>,
    keywords: Vec<usize>,
    case_insensitive: bool,
    replacement: usize,
    priority: i32,
}

fn redact_rule() -> impl Strategy<Value = RedactRule> {
    (
        prop::collection::vec(0..REGEXES.len(), 0..3),
        prop::collection::vec(0..KEYWORDS.len(), 0..3),
        any::<bool>(),
        0..REPLACEMENTS.len(),
        -2i32..3,
    )
        .prop_filter("a prompt condition needs an entry", |(r, k, ..)| {
            !r.is_empty() || !k.is_empty()
        })
        .prop_map(
            |(regexes, keywords, case_insensitive, replacement, priority)| RedactRule {
                regexes,
                keywords,
                case_insensitive,
                replacement,
                priority,
            },
        )
}

/// Text made of the patterns' material and arbitrary characters (control, astral, NUL).
fn text() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            3 => prop::sample::select(WORDS.to_vec()).prop_map(str::to_string),
            2 => any::<char>().prop_map(String::from),
            1 => "[a-z0-9 @.-]{0,12}",
        ],
        0..12,
    )
    .prop_map(|parts| parts.concat())
}

fn document(rules: &[RedactRule], deny_keyword: Option<(bool, i32)>) -> Value {
    let mut docs: Vec<Value> = rules
        .iter()
        .enumerate()
        .map(|(i, rule)| {
            json!({
                "id": format!("redact-{i}"),
                "priority": rule.priority,
                "when": {"prompt": {
                    "regex": rule.regexes.iter().map(|&r| REGEXES[r]).collect::<Vec<_>>(),
                    "keywords": rule.keywords.iter().map(|&k| KEYWORDS[k]).collect::<Vec<_>>(),
                    "case_insensitive": rule.case_insensitive,
                }},
                "action": "redact",
                "replacement": REPLACEMENTS[rule.replacement],
            })
        })
        .collect();
    if let Some((case_insensitive, priority)) = deny_keyword {
        docs.push(json!({
            "id": "deny-forbidden",
            "priority": priority,
            "when": {"prompt": {"keywords": ["forbidden"], "case_insensitive": case_insensitive}},
            "action": "deny",
        }));
    }
    json!({"default": "allow", "rules": docs})
}

/// Each of `REGEXES` compiled once, as is and case-insensitive (Unicode classes are slow to
/// compile in a debug build).
fn oracle_regexes() -> &'static [[regex::Regex; 2]] {
    static COMPILED: std::sync::OnceLock<Vec<[regex::Regex; 2]>> = std::sync::OnceLock::new();
    COMPILED.get_or_init(|| {
        REGEXES
            .iter()
            .map(|r| {
                [
                    regex::Regex::new(r).unwrap(),
                    regex::Regex::new(&format!("(?i){r}")).unwrap(),
                ]
            })
            .collect()
    })
}

/// The oracle: does any pattern of any redact rule match `text`? Independent of the
/// policy's scanner: keywords by (ASCII-folded) substring search, regexes one by one.
fn any_redactable(rules: &[RedactRule], text: &str) -> Option<String> {
    for rule in rules {
        for &r in &rule.regexes {
            let oracle = &oracle_regexes()[r][usize::from(rule.case_insensitive)];
            if let Some(found) = oracle.find(text) {
                return Some(format!("regex {oracle} matches {:?}", found.as_str()));
            }
        }
        for &k in &rule.keywords {
            let keyword = KEYWORDS[k];
            let hit = if rule.case_insensitive {
                text.to_ascii_lowercase()
                    .contains(&keyword.to_ascii_lowercase())
            } else {
                text.contains(keyword)
            };
            if hit {
                return Some(format!("keyword {keyword:?}"));
            }
        }
    }
    None
}

/// A policy-like document with arbitrary strings where patterns, ids and verdicts go.
fn wild_document() -> impl Strategy<Value = Value> {
    let wild = prop_oneof![
        "[a-z(){}\\[\\]*+?|\\\\.^$0-9,]{0,16}",
        any::<String>(),
        Just("a{1000000}".to_string()),
        Just("(?i)".to_string()),
    ];
    let rule = (
        wild.clone(),
        prop::collection::vec(wild.clone(), 0..3),
        prop::collection::vec(wild.clone(), 0..3),
        prop::sample::select(vec!["allow", "deny", "redact", "route", "block", ""]),
        prop::option::of(any::<i64>()),
        any::<bool>(),
    )
        .prop_map(|(id, regex, keywords, action, status, ci)| {
            let mut rule = json!({
                "id": id,
                "when": {"prompt": {"regex": regex, "keywords": keywords, "case_insensitive": ci}},
                "action": action,
            });
            if let Some(status) = status {
                rule["status"] = json!(status);
            }
            rule
        });
    (
        prop::collection::vec(rule, 0..4),
        prop::sample::select(vec!["allow", "deny", "maybe"]),
    )
        .prop_map(|(rules, default)| json!({"default": default, "rules": rules}))
}

proptest! {
    #![proptest_config(cases(256))]

    #[test]
    fn compile_never_panics_and_refuses_in_one_line(doc in wild_document(), bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        for input in [doc.to_string().into_bytes(), bytes] {
            if let Err(err) = Policy::compile(&input) {
                prop_assert!(!err.to_string().contains('\n'), "a refusal over several lines: {}", err);
            }
        }
    }

    #[test]
    fn compiled_wild_policies_evaluate_any_text(doc in wild_document(), segments in prop::collection::vec(text(), 0..4)) {
        if let Ok(policy) = Policy::compile(doc.to_string().as_bytes()) {
            let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
            let decision = policy.evaluate(&request(&segments));
            if matches!(decision.verdict, Verdict::Deny { .. }) {
                prop_assert!(decision.rewrites.is_empty());
            }
            for (index, _) in &decision.rewrites {
                prop_assert!(*index < segments.len());
            }
        }
    }

}

proptest! {
    // Compiling a policy is the slow part in a debug build: fewer policies, each judging
    // several requests.
    #![proptest_config(cases(64))]

    #[test]
    fn no_redactable_span_survives_and_the_redacted_body_reparses(
        rules in prop::collection::vec(redact_rule(), 1..4),
        deny in prop::option::of((any::<bool>(), -2i32..3)),
        requests in prop::collection::vec(prop::collection::vec(text(), 1..5), 1..8),
    ) {
        let doc = document(&rules, deny);
        let policy = Policy::compile(doc.to_string().as_bytes()).expect("generated policies compile");
        for segments in requests {
            check_redaction(&policy, &rules, &doc, segments)?;
        }
    }
}

fn check_redaction(
    policy: &Policy,
    rules: &[RedactRule],
    doc: &Value,
    segments: Vec<String>,
) -> Result<(), TestCaseError> {
    let texts: Vec<&str> = segments.iter().map(String::as_str).collect();
    let decision = policy.evaluate(&request(&texts));
    if let Verdict::Deny { rule, .. } = &decision.verdict {
        prop_assert_eq!(rule.as_str(), "deny-forbidden");
        prop_assert!(decision.rewrites.is_empty(), "a deny carries no rewrites");
        return Ok(());
    }
    // Each changed segment once, in order, and changed.
    let indices: Vec<usize> = decision.rewrites.iter().map(|(i, _)| *i).collect();
    prop_assert!(
        indices.windows(2).all(|w| w[0] < w[1]),
        "rewrites out of order: {:?}",
        indices
    );
    let mut redacted: Vec<String> = segments.clone();
    for (index, new) in &decision.rewrites {
        prop_assert!(*index < segments.len());
        prop_assert_ne!(new, &segments[*index], "a rewrite that changes nothing");
        redacted[*index] = new.clone();
    }
    for (before, after) in segments.iter().zip(&redacted) {
        if let Some(survivor) = any_redactable(rules, after) {
            prop_assert!(
                false,
                "{} survives redaction of {:?} -> {:?} under {}",
                survivor,
                before,
                after,
                doc
            );
        }
    }
    // Through the request parser: the same texts as a chat body, rewritten and re-read.
    let messages: Vec<Value> = segments
        .iter()
        .map(|s| json!({"role": "user", "content": s}))
        .collect();
    let body = json!({"model": "gpt-4o", "messages": messages}).to_string();
    let mut parsed =
        ParsedRequest::parse(Api::Chat, body.as_bytes()).expect("a generated chat body parses");
    prop_assert_eq!(parsed.segments(), texts.clone());
    parsed.apply_rewrites(&decision.rewrites);
    let upstream = parsed.to_body();
    let reread = ParsedRequest::parse(Api::Chat, &upstream).expect("the redacted body re-parses");
    prop_assert_eq!(
        reread.segments(),
        redacted.iter().map(String::as_str).collect::<Vec<_>>()
    );
    Ok(())
}
