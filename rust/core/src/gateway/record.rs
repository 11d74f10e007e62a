//! The request record as the audit chain stores it, written field by field in key order
//! (see [`RecordFields`]): no JSON map is built per request.

use serde_json::Value;

use crate::audit::{FieldValue, RecordFields};
use crate::cache::Versions;

use super::admission::{Admission, ShadowOutcome};
use super::RecordInput;

/// One request's audit record: what admission decided and what happened upstream.
pub(super) struct RequestRecord<'a> {
    pub adm: &'a Admission,
    pub out: &'a RecordInput<'a>,
    /// (provider, model) of the upstream that answered, if any.
    pub upstream: Option<(&'a str, &'a str)>,
    pub response_sha256: Option<&'a str>,
    pub latency_us: u64,
}

impl RecordFields for RequestRecord<'_> {
    fn each_sorted(&self, field: &mut dyn FnMut(&str, FieldValue<'_>)) {
        use FieldValue::{Bool, Json, Null, Object, Str, Strs, Uint};
        let (adm, out, v) = (self.adm, self.out, self.adm.versions);
        // A hit spent nothing: what it would have cost is `saved_cost`.
        let costs = out.usage.map(|u| {
            let (cost, saved) = if u.saved {
                (Some(0.0), u.cost)
            } else {
                (u.cost, None)
            };
            (Value::from(cost), Value::from(saved))
        });
        field("api", Str(adm.api.name()));
        field("cache", Str(adm.cache_state()));
        if let Some(u) = out.usage {
            field("cached_tokens", Uint(u.cached_tokens));
            field("completion_tokens", Uint(u.completion_tokens));
        }
        field("config_version", Uint(v.config));
        if let (Some(u), Some((cost, _))) = (out.usage, &costs) {
            field("cost", Json(cost));
            field("currency", Str(u.currency));
        }
        field("decision", Str(adm.outcome.name()));
        field("error", out.error.into());
        if !out.failovers.is_empty() {
            field("failovers", Strs(out.failovers));
        }
        if let Some(inflight) = out.inflight {
            field("inflight", Str(inflight.outcome.name()));
        }
        if let Some(key) = out.key {
            field("key", Str(key));
        }
        field("kind", Str("request"));
        field("latency_us", Uint(self.latency_us));
        field("model", Str(&adm.model));
        field("policy_version", Uint(v.policy));
        field("position", Object(&Positions(v)));
        if let Some(u) = out.usage {
            field("price_version", Uint(u.price_version));
        }
        field("prompt_sha256", Str(&adm.prompt_sha256));
        if let Some(u) = out.usage {
            field("prompt_tokens", Uint(u.prompt_tokens));
        }
        field("redacted", Bool(adm.redacted));
        field("request_id", Str(&adm.request_id));
        field("response_sha256", self.response_sha256.into());
        if let Some(inflight) = out.inflight {
            field("reverted_by", Uint(inflight.change));
        }
        field("routing_version", Uint(v.routing));
        field("rule", adm.rule.as_deref().into());
        field("rules", Strs(&adm.matched));
        if let (Some(u), Some((_, saved))) = (out.usage, &costs) {
            if u.saved {
                field("saved_cost", Json(saved));
            }
        }
        match &adm.shadow {
            Some(shadow) => field("shadow", Object(shadow)),
            None => field("shadow", Null),
        }
        field("status", Uint(out.status.into()));
        field("stream", Bool(adm.stream));
        field("tenant", Str(&adm.tenant));
        field(
            "upstream",
            self.upstream.map(|(provider, _)| provider).into(),
        );
        if let Some(api) = out.upstream_api {
            field("upstream_api", Str(api));
        }
        field(
            "upstream_model",
            self.upstream.map(|(_, model)| model).into(),
        );
    }
}

/// `{"config": ..., "policy": ..., "routing": ...}`: the position each domain was served from.
struct Positions(Versions);

impl RecordFields for Positions {
    fn each_sorted(&self, field: &mut dyn FnMut(&str, FieldValue<'_>)) {
        let [policy, routing, config] = self.0.positions();
        for (domain, position) in [config, policy, routing] {
            field(domain, FieldValue::Str(position));
        }
    }
}

/// What the shadow policy would have decided (R15).
impl RecordFields for ShadowOutcome {
    fn each_sorted(&self, field: &mut dyn FnMut(&str, FieldValue<'_>)) {
        field("decision", FieldValue::Str(self.verdict));
        field("rule", self.rule.as_deref().into());
        field("rules", FieldValue::Strs(&self.matched));
        field("version", FieldValue::Uint(self.version));
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Map, Value};

    use super::*;
    use crate::audit::frame_record;
    use crate::gateway::admission::{Alternative, Outcome, RequestContext};
    use crate::gateway::{Inflight, InflightOutcome, Usage};
    use crate::request::Api;
    use crate::routing::Destination;

    /// The record as a JSON map, field by field as the record has always been built: the
    /// typed record must encode to the very same bytes.
    fn as_map(r: &RequestRecord<'_>) -> Map<String, Value> {
        let (adm, out, v) = (r.adm, r.out, r.adm.versions);
        let shadow = adm.shadow.as_ref().map(|s| {
            json!({"version": s.version, "decision": s.verdict, "rule": s.rule, "rules": s.matched})
        });
        let positions: Map<String, Value> = v
            .positions()
            .into_iter()
            .map(|(domain, position)| (domain.to_string(), Value::from(position)))
            .collect();
        let mut fields = json!({
            "kind": "request", "request_id": adm.request_id, "tenant": adm.tenant,
            "api": adm.api.name(), "model": adm.model, "decision": adm.outcome.name(),
            "rule": adm.rule, "rules": adm.matched, "redacted": adm.redacted,
            "policy_version": v.policy, "routing_version": v.routing, "config_version": v.config,
            "position": positions,
            "upstream": r.upstream.map(|(p, _)| p), "upstream_model": r.upstream.map(|(_, m)| m),
            "stream": adm.stream, "status": out.status, "error": out.error,
            "latency_us": r.latency_us, "cache": adm.cache_state(),
            "prompt_sha256": adm.prompt_sha256, "response_sha256": r.response_sha256,
            "shadow": shadow,
        });
        if !out.failovers.is_empty() {
            fields["failovers"] = json!(out.failovers);
        }
        if let Some(inflight) = out.inflight {
            fields["inflight"] = json!(inflight.outcome.name());
            fields["reverted_by"] = json!(inflight.change);
        }
        if let Some(key) = out.key {
            fields["key"] = json!(key);
        }
        if let Some(u) = out.usage {
            fields["prompt_tokens"] = json!(u.prompt_tokens);
            fields["completion_tokens"] = json!(u.completion_tokens);
            fields["cached_tokens"] = json!(u.cached_tokens);
            fields["cost"] = json!(if u.saved { Some(0.0) } else { u.cost });
            fields["currency"] = json!(u.currency);
            fields["price_version"] = json!(u.price_version);
            if u.saved {
                fields["saved_cost"] = json!(u.cost);
            }
        }
        if let Some(api) = out.upstream_api {
            fields["upstream_api"] = json!(api);
        }
        match fields {
            Value::Object(map) => map,
            _ => unreachable!(),
        }
    }

    fn frame(fields: &dyn RecordFields) -> Vec<u8> {
        let mut out = Vec::new();
        frame_record(&mut out, "r1", 3, &[7; 32], 1_700_000_000_000_001, fields).unwrap();
        out
    }

    #[test]
    fn the_typed_record_encodes_exactly_as_its_json_map() {
        let ctx = RequestContext {
            api: Api::Chat,
            tenant: "acme \"quoted\"",
            request_id: "req-1",
            versions: Versions::new(3, 2, 1).with_candidates(2),
        };
        let mut adm = Admission::new(&ctx, b"{}", Outcome::Allow, 200, "", String::new());
        let ok = RecordInput::status(200);
        let plain = RequestRecord {
            adm: &adm,
            out: &ok,
            upstream: None,
            response_sha256: None,
            latency_us: 12,
        };
        assert_eq!(frame(&plain), frame(&as_map(&plain)));
        adm.model = "gpt-\u{e9}\n".into();
        adm.rule = Some("mask".into());
        adm.matched = vec!["mask".into(), "route\t".into()];
        adm.redacted = true;
        adm.stream = true;
        adm.shadow = Some(ShadowOutcome {
            version: 4,
            verdict: "deny",
            rule: Some("strict".into()),
            matched: vec!["strict".into()],
        });
        adm.destination = Some(Destination {
            provider: "oa".into(),
            model: "gpt-4o".into(),
            fallbacks: vec![("an".into(), "claude".into())],
        });
        adm.fallbacks.push(Alternative {
            provider: "an".into(),
            model: "claude".into(),
            body: Vec::new(),
        });
        let failovers = ["oa: status 503".to_string()];
        let out = RecordInput {
            error: Some("protocol: cut"),
            response_sha256: Some("ab"),
            upstream: 1,
            failovers: &failovers,
            inflight: Some(Inflight {
                outcome: InflightOutcome::CutOnRevert,
                change: 9,
            }),
            key: Some("ci-bot"),
            usage: Some(Usage {
                prompt_tokens: 10,
                completion_tokens: 4,
                cached_tokens: 2,
                cost: Some(0.125),
                currency: "USD",
                price_version: 3,
                saved: false,
            }),
            upstream_api: Some("messages"),
            ..RecordInput::status(502)
        };
        let full = RequestRecord {
            adm: &adm,
            out: &out,
            upstream: Some(("an", "claude")),
            response_sha256: Some("ab"),
            latency_us: 1234,
        };
        assert_eq!(frame(&full), frame(&as_map(&full)));
        for (saved, cost) in [(true, Some(0.5)), (true, None), (false, None)] {
            let usage = out.usage.map(|u| Usage { saved, cost, ..u });
            let hit = RecordInput { usage, ..out };
            let record = RequestRecord { out: &hit, ..full };
            assert_eq!(frame(&record), frame(&as_map(&record)));
        }
    }
}
