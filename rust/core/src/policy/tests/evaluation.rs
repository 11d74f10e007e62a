//! The rule walk: ordering, terminal rules, each condition kind, routes and defaults.

use serde_json::json;

use super::super::{RequestView, Verdict};
use super::{compile, deny, matched, request};

#[test]
fn higher_priority_runs_first_and_ties_keep_document_order() {
    let policy = compile(json!({"rules": [
        {"id": "low-allow", "priority": -5, "action": "allow"},
        {"id": "first-tie", "priority": 10, "action": "route", "upstream": "a"},
        {"id": "high-deny", "priority": 100, "action": "deny", "when": {"tenants": ["blocked"]}},
        {"id": "second-tie", "priority": 10, "action": "route", "upstream": "b"},
        {"id": "default-prio", "action": "deny"},
    ]}));
    let decision = policy.evaluate(&request(&[]));
    assert_eq!(
        matched(&decision),
        ["first-tie", "second-tie", "default-prio"]
    );
    assert_eq!(
        decision.verdict,
        deny(
            403,
            "request denied by policy rule default-prio",
            "default-prio"
        )
    );

    let blocked = RequestView {
        tenant: "blocked",
        ..request(&[])
    };
    let decision = policy.evaluate(&blocked);
    assert_eq!(matched(&decision), ["high-deny"]);
}

#[test]
fn terminal_rule_stops_the_walk() {
    let policy = compile(json!({"rules": [
        {"id": "route", "action": "route", "upstream": "small"},
        {"id": "allow", "action": "allow"},
        {"id": "never-reached", "action": "deny"},
    ]}));
    let decision = policy.evaluate(&request(&[]));
    assert_eq!(decision.verdict, Verdict::Allow);
    assert_eq!(matched(&decision), ["route", "allow"]);
    assert_eq!(decision.route.as_deref(), Some("small"));
}

#[test]
fn default_applies_when_no_terminal_rule_matches() {
    let policy = compile(json!({"default": "deny", "rules": [
        {"id": "ok-tenant", "when": {"tenants": ["acme"]}, "action": "allow"},
        {"id": "route", "action": "route", "upstream": "x"},
    ]}));
    let other = RequestView {
        tenant: "other",
        ..request(&[])
    };
    let decision = policy.evaluate(&other);
    assert_eq!(
        decision.verdict,
        deny(403, "request denied by policy default", "")
    );
    assert_eq!(matched(&decision), ["route"]);
    assert_eq!(decision.route, None, "a deny discards the route");
    assert_eq!(policy.evaluate(&request(&[])).verdict, Verdict::Allow);
}

#[test]
fn deny_uses_configured_status_and_message() {
    let policy = compile(json!({"rules": [
        {"id": "teapot", "action": "deny", "status": 418, "message": "short and stout"},
    ]}));
    assert_eq!(
        policy.evaluate(&request(&[])).verdict,
        deny(418, "short and stout", "teapot")
    );
}

#[test]
fn tenants_match_exactly() {
    let policy = compile(json!({"rules": [
        {"id": "t", "when": {"tenants": ["acme", "beta"]}, "action": "deny"},
    ]}));
    for (tenant, denied) in [
        ("acme", true),
        ("beta", true),
        ("acme2", false),
        ("ACME", false),
        ("", false),
    ] {
        let decision = policy.evaluate(&RequestView {
            tenant,
            ..request(&[])
        });
        assert_eq!(
            decision.verdict != Verdict::Allow,
            denied,
            "tenant {tenant:?}"
        );
    }
}

#[test]
fn models_match_by_glob() {
    let policy = compile(json!({"rules": [
        {"id": "m", "when": {"models": ["gpt-4*", "claude-*", "exact-model"]}, "action": "deny"},
    ]}));
    let cases = [
        ("gpt-4", true),
        ("gpt-4o-mini", true),
        ("claude-3-5-sonnet", true),
        ("exact-model", true),
        ("gpt-3.5-turbo", false),
        ("exact-model-2", false),
        ("my-gpt-4", false),
        ("", false),
    ];
    for (model, denied) in cases {
        let decision = policy.evaluate(&RequestView {
            model,
            ..request(&[])
        });
        assert_eq!(
            decision.verdict != Verdict::Allow,
            denied,
            "model {model:?}"
        );
    }
}

#[test]
fn model_globs_cross_slashes() {
    let policy = compile(json!({"rules": [
        {"id": "m", "when": {"models": ["accounts/*"]}, "action": "deny"},
    ]}));
    let decision = policy.evaluate(&RequestView {
        model: "accounts/fw/models/llama",
        ..request(&[])
    });
    assert_eq!(matched(&decision), ["m"]);
}

#[test]
fn routes_match_exactly() {
    let policy = compile(json!({"rules": [
        {"id": "r", "when": {"routes": ["embeddings", "models"]}, "action": "deny"},
    ]}));
    for (route, denied) in [
        ("embeddings", true),
        ("models", true),
        ("chat", false),
        ("messages", false),
    ] {
        let decision = policy.evaluate(&RequestView {
            route,
            ..request(&[])
        });
        assert_eq!(
            decision.verdict != Verdict::Allow,
            denied,
            "route {route:?}"
        );
    }
}

#[test]
fn header_conditions_match_values_by_glob_and_need_the_header() {
    let policy = compile(json!({"rules": [
        {"id": "h", "when": {"headers": {"X-Team": ["ml", "data*"], "x-env": ["prod"]}}, "action": "deny"},
    ]}));
    let cases: [(&[(&str, &str)], bool); 7] = [
        (&[("x-team", "ml"), ("x-env", "prod")], true),
        (&[("x-env", "prod"), ("x-team", "data-eng")], true),
        (&[("X-Team", "ml"), ("X-ENV", "prod")], true),
        (
            &[("x-team", "other"), ("x-team", "ml"), ("x-env", "prod")],
            true,
        ),
        (&[("x-team", "ml")], false),
        (&[("x-team", "ML"), ("x-env", "prod")], false),
        (&[], false),
    ];
    for (headers, denied) in cases {
        let decision = policy.evaluate(&RequestView {
            headers,
            ..request(&[])
        });
        assert_eq!(
            decision.verdict != Verdict::Allow,
            denied,
            "headers {headers:?}"
        );
    }
}

#[test]
fn all_conditions_must_hold() {
    let policy = compile(json!({"rules": [{
        "id": "all",
        "when": {
            "tenants": ["acme"],
            "models": ["gpt-*"],
            "routes": ["chat"],
            "headers": {"x-team": ["ml"]},
            "prompt": {"keywords": ["secret"]},
        },
        "action": "deny",
    }]}));
    let headers = [("x-team", "ml")];
    let segments = ["a secret"];
    let full = RequestView {
        headers: &headers,
        ..request(&segments)
    };
    assert_eq!(matched(&policy.evaluate(&full)), ["all"]);
    let partials = [
        RequestView {
            tenant: "beta",
            ..full
        },
        RequestView {
            model: "claude-3",
            ..full
        },
        RequestView {
            route: "messages",
            ..full
        },
        RequestView {
            headers: &[],
            ..full
        },
        RequestView {
            segments: &["nothing here"],
            ..full
        },
    ];
    for partial in partials {
        assert_eq!(
            policy.evaluate(&partial).verdict,
            Verdict::Allow,
            "{partial:?}"
        );
    }
}

#[test]
fn prompt_regex_and_keywords_respect_case_sensitivity() {
    let policy = compile(json!({"rules": [
        {"id": "cs-kw", "when": {"prompt": {"keywords": ["Password"]}}, "action": "route", "upstream": "a"},
        {"id": "ci-kw", "when": {"prompt": {"keywords": ["api key"], "case_insensitive": true}}, "action": "route", "upstream": "b"},
        {"id": "cs-re", "when": {"prompt": {"regex": [r"\bSSN\b"]}}, "action": "route", "upstream": "c"},
        {"id": "ci-re", "when": {"prompt": {"regex": [r"\btoken\b"], "case_insensitive": true}}, "action": "route", "upstream": "d"},
    ]}));
    let cases: [(&str, &[&str]); 5] = [
        ("my Password and API KEY", &["cs-kw", "ci-kw"]),
        ("my password and Api Key", &["ci-kw"]),
        ("SSN and TOKEN", &["cs-re", "ci-re"]),
        ("ssn and tokens", &[]),
        ("nothing", &[]),
    ];
    for (text, expected) in cases {
        let segments = [text];
        assert_eq!(
            matched(&policy.evaluate(&request(&segments))),
            expected,
            "prompt {text:?}"
        );
    }
}

#[test]
fn prompt_conditions_hold_if_any_segment_matches() {
    let policy = compile(json!({"rules": [
        {"id": "k", "when": {"prompt": {"keywords": ["secret"]}}, "action": "deny"},
    ]}));
    assert_eq!(
        matched(&policy.evaluate(&request(&["hello", "a secret", "bye"]))),
        ["k"]
    );
    assert!(policy
        .evaluate(&request(&["hello", "sec", "ret"]))
        .matched
        .is_empty());
    assert!(policy.evaluate(&request(&[])).matched.is_empty());
}

/// Many rules share one regex set and two automata; the pattern-to-rule mapping must
/// report exactly the rules a rule-by-rule check would.
#[test]
fn one_pass_matching_agrees_with_checking_each_rule_alone() {
    let rules: Vec<_> = (0..60)
        .map(|i| {
            let prompt = match i % 3 {
                0 => json!({"keywords": [format!("<kw{i}>")]}),
                1 => json!({"regex": [format!(r"#re{i}:\d+#")]}),
                _ => json!({"keywords": [format!("<KW{i}>")], "regex": [format!("@ci{i}@")], "case_insensitive": true}),
            };
            json!({"id": format!("rule-{i}"), "priority": i % 7, "when": {"prompt": prompt}, "action": "route", "upstream": "u"})
        })
        .collect();
    let policy = compile(json!({"rules": rules.clone()}));
    let segments = [
        "start <kw3> then #re4:12# and #re7:x#",
        "<kw11> <kw12> @CI14@",
        "",
        "<kw59>",
    ];
    let decision = policy.evaluate(&request(&segments));

    let mut expected = Vec::new();
    for rule in &rules {
        let single = compile(json!({"rules": [rule]}));
        if !single.evaluate(&request(&segments)).matched.is_empty() {
            expected.push(rule["id"].as_str().unwrap().to_string());
        }
    }
    let mut reported = decision.matched.clone();
    reported.sort();
    expected.sort();
    assert_eq!(reported, expected);
    assert_eq!(
        expected,
        ["rule-11", "rule-12", "rule-14", "rule-3", "rule-4", "rule-59"]
    );
    // Walk order: priority (i % 7) descending, then document order.
    assert_eq!(
        matched(&decision),
        ["rule-12", "rule-4", "rule-11", "rule-3", "rule-59", "rule-14"]
    );
}

#[test]
fn the_same_keyword_in_several_rules_matches_each_of_them() {
    let policy = compile(json!({"rules": [
        {"id": "a", "when": {"prompt": {"keywords": ["secret"]}}, "action": "route", "upstream": "x"},
        {"id": "b", "when": {"prompt": {"keywords": ["secret", "other"]}}, "action": "route", "upstream": "y"},
        {"id": "c", "when": {"prompt": {"regex": ["secret"]}}, "action": "route", "upstream": "z"},
        {"id": "d", "when": {"prompt": {"regex": ["secret"]}}, "action": "route", "upstream": "w"},
    ]}));
    let decision = policy.evaluate(&request(&["top secret"]));
    assert_eq!(matched(&decision), ["a", "b", "c", "d"]);
    assert_eq!(
        decision.route.as_deref(),
        Some("x"),
        "the first route rule wins"
    );
}

#[test]
fn overlapping_keywords_are_all_found() {
    let policy = compile(json!({"rules": [
        {"id": "long", "when": {"prompt": {"keywords": ["password"]}}, "action": "route", "upstream": "x"},
        {"id": "inner", "when": {"prompt": {"keywords": ["word"]}}, "action": "route", "upstream": "y"},
        {"id": "prefix", "when": {"prompt": {"keywords": ["pass"]}}, "action": "route", "upstream": "z"},
    ]}));
    assert_eq!(
        matched(&policy.evaluate(&request(&["password"]))),
        ["long", "inner", "prefix"]
    );
}

#[test]
fn route_is_set_by_the_first_matching_route_rule() {
    let policy = compile(json!({"rules": [
        {"id": "free", "when": {"tenants": ["free"]}, "action": "route", "upstream": "small"},
        {"id": "everyone", "action": "route", "upstream": "big"},
    ]}));
    let free = policy.evaluate(&RequestView {
        tenant: "free",
        ..request(&[])
    });
    assert_eq!(
        (free.route.as_deref(), matched(&free)),
        (Some("small"), vec!["free", "everyone"])
    );
    let paid = policy.evaluate(&request(&[]));
    assert_eq!(
        (paid.route.as_deref(), matched(&paid)),
        (Some("big"), vec!["everyone"])
    );
}
