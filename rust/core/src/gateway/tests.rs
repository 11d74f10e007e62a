//! The request phases end to end in Rust: admission outcomes, rewriting, version-keyed
//! caching with the fence, and the audit record each request leaves.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use sha2::{Digest, Sha256};

use super::*;
use crate::audit::{AuditOptions, RecordReader};
use crate::cache::CANDIDATE_ROUTING;

const POLICY: &str = r#"{"rules": [
    {"id": "no-cards", "when": {"prompt": {"regex": ["\\b(?:\\d[ -]?){13,16}\\b"]}}, "action": "deny"},
    {"id": "mask-mail", "when": {"prompt": {"regex": ["[a-z]+@[a-z]+\\.com"]}}, "action": "redact", "replacement": "[EMAIL]"},
    {"id": "cheap", "when": {"tenants": ["free"]}, "action": "route", "upstream": "small"}
]}"#;
const ROUTING: &str = r#"{"routes": [{"match": "gpt-*", "provider": "oa"}],
    "targets": {"small": {"provider": "oa", "model": "gpt-mini"}}}"#;

struct Fixture {
    gateway: Gateway,
    policy: Policy,
    routing: Routing,
    dir: tempfile::TempDir,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let (writer, _) = AuditWriter::open(dir.path(), "replica-a", AuditOptions::default()).unwrap();
    let gateway = Gateway::new(ResponseCache::new(1000, 1 << 20), writer);
    gateway.fence(vec![V1, V2]);
    let providers = [("oa".to_string(), "openai".to_string())];
    Fixture {
        gateway,
        policy: Policy::compile(POLICY.as_bytes()).unwrap(),
        routing: Routing::compile(ROUTING.as_bytes(), &providers).unwrap(),
        dir,
    }
}

const V1: Versions = Versions::new(1, 1, 1);
const V2: Versions = Versions::new(2, 1, 1);

fn admit(f: &Fixture, tenant: &str, body: &str, versions: Versions, cache: CacheMode) -> Admission {
    admit_varying(f, tenant, body, versions, cache, "")
}

fn admit_varying(
    f: &Fixture,
    tenant: &str,
    body: &str,
    versions: Versions,
    cache: CacheMode,
    vary: &str,
) -> Admission {
    f.gateway.admit(&AdmitInput {
        ctx: RequestContext {
            api: Api::Chat,
            tenant,
            request_id: "req-1",
            versions,
        },
        policy: &f.policy,
        shadow: None,
        routing: &f.routing,
        headers: &[],
        body: body.as_bytes(),
        cache,
        vary,
    })
}

fn chat(text: &str, temperature: f64) -> String {
    serde_json::json!({"model": "gpt-4o", "temperature": temperature,
        "messages": [{"role": "user", "content": text}]})
    .to_string()
}

fn ok(body: &[u8]) -> RecordInput<'_> {
    RecordInput {
        response: Some(body),
        cache_ttl: Duration::from_secs(60),
        ..RecordInput::status(200)
    }
}

fn records(dir: &Path) -> Vec<Value> {
    RecordReader::open(dir, "replica-a")
        .unwrap()
        .map(|r| serde_json::from_slice(&r.unwrap().payload).unwrap())
        .collect()
}

#[test]
fn deny_names_the_rule_and_sends_nothing_upstream() {
    let f = fixture();
    let adm = admit(
        &f,
        "acme",
        &chat("card 4111 1111 1111 1111", 1.0),
        V1,
        CacheMode::Off,
    );
    assert_eq!(
        (adm.outcome, adm.status, adm.code.as_str()),
        (Outcome::Deny, 403, "policy_denied")
    );
    assert!(adm.message.contains("no-cards"), "{}", adm.message);
    assert!(adm.body.is_none() && adm.destination.is_none());
}

#[test]
fn bad_json_and_unknown_models_are_client_errors() {
    let f = fixture();
    let adm = admit(&f, "acme", "{nope", V1, CacheMode::Off);
    assert_eq!((adm.outcome, adm.status), (Outcome::Invalid, 400));
    let body = r#"{"model": "claude-x", "messages": []}"#;
    let adm = admit(&f, "acme", body, V1, CacheMode::Off);
    assert_eq!(
        (adm.outcome, adm.status, adm.code.as_str()),
        (Outcome::Unroutable, 404, "model_not_found")
    );
}

#[test]
fn redaction_and_route_targets_rewrite_the_upstream_body() {
    let f = fixture();
    let adm = admit(
        &f,
        "free",
        &chat("write to bob@mail.com", 1.0),
        V1,
        CacheMode::Off,
    );
    assert_eq!(adm.outcome, Outcome::Allow);
    assert!(adm.redacted);
    let sent: Value = serde_json::from_slice(adm.body.as_ref().unwrap()).unwrap();
    assert_eq!(sent["messages"][0]["content"], "write to [EMAIL]");
    assert_eq!(sent["model"], "gpt-mini");
    assert_eq!(adm.destination.unwrap().model, "gpt-mini");
    assert_eq!(
        adm.matched,
        vec!["mask-mail".to_string(), "cheap".to_string()]
    );
}

#[test]
fn answers_name_their_versions_and_positions() {
    let canary = Versions::new(7, 3, 2).with_candidates(CANDIDATE_ROUTING);
    let expected = [
        ("x-gatewayd-policy-version", "7"),
        ("x-gatewayd-routing-version", "3"),
        ("x-gatewayd-config-version", "2"),
        (
            "x-gatewayd-position",
            "policy=current, routing=candidate, config=current",
        ),
    ];
    assert_eq!(
        version_headers(canary),
        expected.map(|(n, v)| (n, v.to_string()))
    );
}

#[test]
fn usage_is_metered_for_written_records_with_a_key_under_the_answering_model() {
    let f = fixture();
    let usage = Usage {
        prompt_tokens: 10,
        completion_tokens: 4,
        cached_tokens: 0,
        cost: Some(0.5),
        currency: "USD",
        price_version: 1,
        saved: false,
    };
    let adm = admit(&f, "acme", &chat("metered", 1.0), V1, CacheMode::Off);
    let with_key = RecordInput {
        key: Some("bot"),
        usage: Some(usage),
        ..RecordInput::status(200)
    };
    f.gateway.record(&adm, &with_key).unwrap();
    f.gateway.record(&adm, &with_key).unwrap();
    let no_key = RecordInput {
        usage: Some(usage),
        ..RecordInput::status(200)
    };
    f.gateway.record(&adm, &no_key).unwrap();
    let rows = f.gateway.meter().rows();
    assert_eq!(rows.len(), 1);
    let (labels, totals) = &rows[0];
    assert_eq!(
        (
            labels.tenant.as_str(),
            labels.key.as_str(),
            labels.provider.as_str()
        ),
        ("acme", "bot", "oa")
    );
    assert_eq!(labels.model, "gpt-4o");
    assert_eq!((totals.requests, totals.prompt, totals.cost), (2, 20, 1.0));
}

#[test]
fn usage_is_priced_once_per_model_and_config_version_and_a_hit_saves_its_entrys() {
    use crate::usage::{Price, Quote};
    let f = fixture();
    let counts = TokenCounts {
        prompt: 1_000_000,
        completion: 0,
        cached: 0,
    };
    let quote = || Quote {
        price: Some(Price {
            input: 2.0,
            output: 0.0,
            cached: None,
        }),
        currency: "EUR".into(),
    };
    let body = chat("priced", 0.0);
    let miss = admit(&f, "acme", &body, V1, CacheMode::Deterministic);
    let asked = std::cell::RefCell::new(Vec::new());
    let ask = |provider: &str, model: &str| {
        asked.borrow_mut().push(format!("{provider}/{model}"));
        Some(quote())
    };
    let priced = f.gateway.price(&miss, 0, Some(counts), false, ask).unwrap();
    assert_eq!(
        (priced.cost, priced.price_version, &*priced.currency),
        (Some(2.0), 1, "EUR")
    );
    let usage = Usage::of(&priced);
    f.gateway
        .record(
            &miss,
            &RecordInput {
                usage: Some(usage),
                ..ok(b"{}")
            },
        )
        .unwrap();
    let hit = admit(&f, "acme", &body, V1, CacheMode::Deterministic);
    let saved = f.gateway.price(&hit, 0, None, true, ask).unwrap();
    assert_eq!(
        (saved.counts, saved.cost, saved.saved),
        (counts, Some(2.0), true)
    );
    assert_eq!(
        *asked.borrow(),
        ["oa/gpt-4o"],
        "asked once, remembered after"
    );
    assert_eq!(
        f.gateway.price(&miss, 0, None, false, ask),
        None,
        "no tokens"
    );
    assert_eq!(
        f.gateway.price(&miss, 1, Some(counts), false, ask),
        None,
        "no fallback 1"
    );
    let other_config = admit(
        &f,
        "acme",
        &chat("other", 1.0),
        Versions::new(1, 1, 2),
        CacheMode::Off,
    );
    f.gateway
        .price(&other_config, 0, Some(counts), false, ask)
        .unwrap();
    assert_eq!(
        asked.borrow().len(),
        2,
        "another config version is asked anew"
    );
}

#[test]
fn cache_hits_only_the_same_tenant_request_and_versions() {
    let f = fixture();
    let body = chat("same question", 0.0);
    let first = admit(&f, "acme", &body, V1, CacheMode::Deterministic);
    assert_eq!(first.cache_state(), "miss");
    f.gateway.record(&first, &ok(b"{\"answer\":1}")).unwrap();
    let again = admit(&f, "acme", &body, V1, CacheMode::Deterministic);
    assert_eq!(again.cache_state(), "hit");
    assert_eq!(again.cached.as_ref().unwrap().body, b"{\"answer\":1}");
    assert_eq!(
        admit(&f, "other", &body, V1, CacheMode::Deterministic).cache_state(),
        "miss"
    );
    assert_eq!(
        admit(&f, "acme", &body, V2, CacheMode::Deterministic).cache_state(),
        "miss"
    );
    assert_eq!(
        admit(
            &f,
            "acme",
            &chat("same question", 0.7),
            V1,
            CacheMode::Deterministic
        )
        .cache_state(),
        "bypass"
    );
    let streamed = body.replace("\"model\"", "\"stream\":true,\"model\"");
    assert_eq!(
        admit(&f, "acme", &streamed, V1, CacheMode::Deterministic).cache_state(),
        "miss"
    );
}

#[test]
fn answer_changing_headers_split_the_cache() {
    let f = fixture();
    let body = chat("same question", 0.0);
    let with_version = |vary| admit_varying(&f, "acme", &body, V1, CacheMode::Deterministic, vary);
    let first = with_version("anthropic-version:2023-06-01");
    f.gateway.record(&first, &ok(b"{\"answer\":1}")).unwrap();
    assert_eq!(
        with_version("anthropic-version:2023-06-01").cache_state(),
        "hit"
    );
    let other = with_version("anthropic-version:2024-01-01");
    assert_eq!(other.cache_state(), "miss");
    assert_ne!(other.cache_key, first.cache_key);
}

#[test]
fn fence_purges_other_versions_and_refuses_late_fills() {
    let f = fixture();
    let body = chat("fenced", 0.0);
    let under_v2 = admit(&f, "acme", &body, V2, CacheMode::Deterministic);
    f.gateway.record(&under_v2, &ok(b"v2 answer")).unwrap();
    let in_flight = admit(
        &f,
        "acme",
        &chat("still running", 0.0),
        V2,
        CacheMode::Deterministic,
    );
    assert_eq!(f.gateway.fence(vec![V1]), 1); // the revert: v2 leaves service
    f.gateway
        .record(&in_flight, &ok(b"late v2 answer"))
        .unwrap();
    f.gateway.fence(vec![V1, V2]); // even if v2 came back, nothing of it survived
    assert_eq!(
        admit(&f, "acme", &body, V2, CacheMode::Deterministic).cache_state(),
        "miss"
    );
    assert_eq!(
        admit(
            &f,
            "acme",
            &chat("still running", 0.0),
            V2,
            CacheMode::Deterministic
        )
        .cache_state(),
        "miss"
    );
}

#[test]
fn every_request_leaves_one_audit_record_with_its_versions() {
    let f = fixture();
    let adm = admit(&f, "acme", &chat("hello", 1.0), V2, CacheMode::Off);
    f.gateway.record(&adm, &ok(b"{}")).unwrap();
    let rejected = f.gateway.reject(
        &RequestContext {
            api: Api::Messages,
            tenant: "",
            request_id: "req-2",
            versions: V1,
        },
        401,
        "invalid_api_key",
        "no key".into(),
    );
    f.gateway
        .record(
            &rejected,
            &RecordInput {
                error: Some("no key"),
                ..RecordInput::status(401)
            },
        )
        .unwrap();
    let all = records(f.dir.path());
    assert_eq!(all.len(), 2);
    assert_eq!(all[0]["policy_version"], 2);
    assert_eq!(all[0]["decision"], "allow");
    assert_eq!(all[0]["upstream"], "oa");
    assert_eq!(
        all[0]["response_sha256"],
        hex::encode(Sha256::digest(b"{}"))
    );
    assert_eq!(all[1]["decision"], "rejected");
    assert_eq!(all[1]["status"], 401);
    let snapshot = f.gateway.metrics().snapshot();
    assert_eq!(
        snapshot.requests.iter().map(|(_, s)| s.count).sum::<u64>(),
        2
    );
}

#[test]
fn fallbacks_get_their_own_bodies_and_the_record_names_who_answered() {
    let mut f = fixture();
    let providers = [
        ("oa".to_string(), "openai".to_string()),
        ("az".to_string(), "openai".to_string()),
    ];
    let routing = r#"{"routes": [{"match": "gpt-*", "provider": "oa",
        "fallbacks": [{"provider": "az"}, {"provider": "oa", "model": "gpt-mini"}]}]}"#;
    f.routing = Routing::compile(routing.as_bytes(), &providers).unwrap();
    let adm = admit(&f, "acme", &chat("hello", 1.0), V1, CacheMode::Off);
    let models: Vec<(&str, &str, Value)> = adm
        .fallbacks
        .iter()
        .map(|a| {
            let body: Value = serde_json::from_slice(&a.body).unwrap();
            (a.provider.as_str(), a.model.as_str(), body["model"].clone())
        })
        .collect();
    assert_eq!(
        models,
        [
            ("az", "gpt-4o", "gpt-4o".into()),
            ("oa", "gpt-mini", "gpt-mini".into())
        ]
    );
    assert_eq!(adm.fallbacks[0].body, adm.body.clone().unwrap());
    let failed = ["oa: unreachable".to_string(), "az: status 503".to_string()];
    let answered = RecordInput {
        upstream: 2,
        failovers: &failed,
        upstream_api: Some("messages"),
        ..ok(b"{}")
    };
    f.gateway.record(&adm, &answered).unwrap();
    f.gateway.record(&adm, &ok(b"{}")).unwrap();
    let all = records(f.dir.path());
    assert_eq!(
        (&all[0]["upstream"], &all[0]["upstream_model"]),
        (&Value::from("oa"), &Value::from("gpt-mini"))
    );
    assert_eq!(all[0]["failovers"], serde_json::json!(failed));
    assert_eq!(all[0]["upstream_api"], "messages");
    assert!(all[1].get("upstream_api").is_none());
    assert_eq!(all[1]["upstream"], "oa");
    assert_eq!(all[1]["upstream_model"], "gpt-4o");
    assert!(all[1].get("failovers").is_none());
}

#[test]
fn a_stream_a_revert_overtook_says_whether_it_finished_or_was_cut() {
    let f = fixture();
    let adm = admit(&f, "acme", &chat("a long story", 1.0), V1, CacheMode::Off);
    let finished = RecordInput {
        response: None,
        response_sha256: Some("ab"),
        inflight: Some(Inflight {
            outcome: InflightOutcome::FinishedAfterRevert,
            change: 7,
        }),
        ..ok(b"")
    };
    let cut = RecordInput {
        error: Some("cut on revert"),
        inflight: Some(Inflight {
            outcome: InflightOutcome::CutOnRevert,
            change: 8,
        }),
        ..finished
    };
    f.gateway.record(&adm, &finished).unwrap();
    f.gateway.record(&adm, &cut).unwrap();
    f.gateway.record(&adm, &ok(b"{}")).unwrap();
    let all = records(f.dir.path());
    assert_eq!(
        (
            &all[0]["inflight"],
            &all[0]["reverted_by"],
            &all[0]["error"]
        ),
        (
            &Value::from("finished-after-revert"),
            &Value::from(7),
            &Value::Null
        )
    );
    assert_eq!(
        (
            &all[1]["inflight"],
            &all[1]["reverted_by"],
            &all[1]["status"]
        ),
        (
            &Value::from("cut-on-revert"),
            &Value::from(8),
            &Value::from(200)
        )
    );
    assert_eq!(all[1]["error"], "cut on revert");
    assert!(all[2].get("inflight").is_none() && all[2].get("reverted_by").is_none());
    for outcome in [
        InflightOutcome::FinishedAfterRevert,
        InflightOutcome::CutOnRevert,
    ] {
        assert_eq!(InflightOutcome::from_name(outcome.name()), Some(outcome));
    }
    assert_eq!(InflightOutcome::from_name("finished"), None);
}

#[test]
fn a_record_carries_the_key_tokens_and_cost_and_a_hit_what_it_saved() {
    let f = fixture();
    let adm = admit(&f, "acme", &chat("count me", 1.0), V1, CacheMode::Off);
    let usage = Usage {
        prompt_tokens: 12,
        completion_tokens: 5,
        cached_tokens: 2,
        cost: Some(0.25),
        currency: "EUR",
        price_version: 3,
        saved: false,
    };
    let spent = RecordInput {
        key: Some("ci-bot"),
        usage: Some(usage),
        ..ok(b"{}")
    };
    let saved = RecordInput {
        usage: Some(Usage {
            saved: true,
            ..usage
        }),
        ..ok(b"{}")
    };
    f.gateway.record(&adm, &spent).unwrap();
    f.gateway.record(&adm, &saved).unwrap();
    f.gateway.record(&adm, &ok(b"{}")).unwrap();
    let all = records(f.dir.path());
    assert_eq!(all[0]["key"], "ci-bot");
    assert_eq!(
        (
            &all[0]["prompt_tokens"],
            &all[0]["completion_tokens"],
            &all[0]["cached_tokens"]
        ),
        (&Value::from(12), &Value::from(5), &Value::from(2))
    );
    assert_eq!(
        (
            &all[0]["cost"],
            &all[0]["currency"],
            &all[0]["price_version"]
        ),
        (&Value::from(0.25), &Value::from("EUR"), &Value::from(3))
    );
    assert!(all[0].get("saved_cost").is_none());
    assert_eq!(
        (&all[1]["cost"], &all[1]["saved_cost"]),
        (&Value::from(0.0), &Value::from(0.25))
    );
    assert!(all[2].get("prompt_tokens").is_none() && all[2].get("key").is_none());
}

#[test]
fn a_cached_answer_keeps_the_tokens_it_was_filled_with_for_its_hits() {
    let f = fixture();
    let body = chat("how many tokens", 0.0);
    let usage = Usage {
        prompt_tokens: 40,
        completion_tokens: 9,
        cached_tokens: 8,
        cost: Some(0.5),
        currency: "USD",
        price_version: 1,
        saved: false,
    };
    let counted = RecordInput {
        usage: Some(usage),
        ..ok(b"{\"answer\":2}")
    };
    let first = admit(&f, "acme", &body, V1, CacheMode::Deterministic);
    f.gateway.record(&first, &counted).unwrap();
    let hit = admit(&f, "acme", &body, V1, CacheMode::Deterministic);
    let kept = hit.cached.as_ref().unwrap().usage;
    let expected = TokenCounts {
        prompt: 40,
        completion: 9,
        cached: 8,
    };
    assert_eq!(kept, Some(expected));
    // A hit's own record (what it saved) fills nothing: the entry stays as it was.
    let saved = RecordInput {
        usage: Some(Usage {
            saved: true,
            ..usage
        }),
        ..ok(b"{}")
    };
    f.gateway.record(&hit, &saved).unwrap();
    let again = admit(&f, "acme", &body, V1, CacheMode::Deterministic);
    assert_eq!(again.cached.as_ref().unwrap().usage, Some(expected));
    // An answer whose provider reported nothing has nothing to save.
    let other = chat("no usage reported", 0.0);
    let quiet = admit(&f, "acme", &other, V1, CacheMode::Deterministic);
    f.gateway.record(&quiet, &ok(b"{\"answer\":3}")).unwrap();
    let hit = admit(&f, "acme", &other, V1, CacheMode::Deterministic);
    assert_eq!(hit.cached.as_ref().unwrap().usage, None);
}

#[test]
fn a_request_dated_back_to_its_snapshot_records_the_latency_from_then() {
    let f = fixture();
    let mut adm = admit(
        &f,
        "acme",
        &chat("when did I start", 1.0),
        V1,
        CacheMode::Off,
    );
    adm.started_earlier(0.25);
    let mut unchanged = admit(&f, "acme", &chat("and I", 1.0), V1, CacheMode::Off);
    unchanged.started_earlier(-1.0);
    unchanged.started_earlier(f64::NAN);
    f.gateway.record(&adm, &ok(b"{}")).unwrap();
    f.gateway.record(&unchanged, &ok(b"{}")).unwrap();
    let all = records(f.dir.path());
    assert!(all[0]["latency_us"].as_u64().unwrap() >= 250_000);
    assert!(all[1]["latency_us"].as_u64().unwrap() < 250_000);
}
