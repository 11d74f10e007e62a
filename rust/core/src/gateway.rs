//! The two request phases the serving layer calls, each one crossing into Rust once:
//! [`Gateway::admit`] (parse, policy, routing, rewrite, cache lookup) and
//! [`Gateway::record`] (cache fill and audit append).
//!
//! The cache only ever holds entries of the version sets the replica currently serves:
//! [`Gateway::fence`] purges the rest at a flip and refuses late fills from requests that
//! started under a version that has since left service (docs/ROLLBACK.md R5).

use std::sync::RwLock;
use std::time::Duration;

use serde_json::{Map, Value};

use crate::audit::{AuditError, AuditWriter, SharedWriter};
use crate::cache::{CacheKey, ResponseCache, TokenCounts, Versions};
use crate::digest::sha256_hex;
use crate::metrics::{Metrics, ShadowKey};
use crate::policy::{Policy, RequestView, Verdict};
use crate::request::{Api, ParsedRequest};
use crate::routing::{Routing, Unroutable};
use crate::usage::{Meter, Metered, PriceMemo, Priced, Quote};

mod admission;
mod memo;
mod record;
pub use admission::{
    version_headers, Admission, Alternative, Outcome, RequestContext, ShadowOutcome,
};
use memo::Memo;
use record::RequestRecord;

/// Whether a request may be answered from, and fill, the cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CacheMode {
    Off,
    /// Only deterministic requests: temperature 0, and embeddings.
    Deterministic,
    /// The caller asked for caching explicitly.
    Forced,
}

/// Everything one request needs to be admitted.
pub struct AdmitInput<'a> {
    pub ctx: RequestContext<'a>,
    pub policy: &'a Policy,
    /// A candidate policy evaluated beside the active one and recorded, never enforced (R15).
    pub shadow: Option<(&'a Policy, u64)>,
    pub routing: &'a Routing,
    pub headers: &'a [(&'a str, &'a str)],
    pub body: &'a [u8],
    pub cache: CacheMode,
    /// Forwarded request headers that change the answer (API version, betas), as one
    /// string: part of the cache key, so answers of different API versions never mix.
    pub vary: &'a str,
}

/// What happened upstream, for the audit record and the cache fill.
pub struct RecordInput<'a> {
    pub status: u16,
    pub error: Option<&'a str>,
    /// The full response body when it should be cached or digested here.
    pub response: Option<&'a [u8]>,
    /// A digest computed by the caller (streams are hashed as they pass).
    pub response_sha256: Option<&'a str>,
    pub cache_ttl: Duration,
    /// Which upstream answered: 0 the destination, i its fallback i-1.
    pub upstream: usize,
    /// What failed before it, one line per upstream tried ("<provider>: <why>").
    pub failovers: &'a [String],
    /// What a revert did to the request while it was in flight, if one took its version
    /// set out of service (docs/ROLLBACK.md R6).
    pub inflight: Option<Inflight>,
    /// The API the answering upstream spoke, when the request was translated into it.
    pub upstream_api: Option<&'a str>,
    /// The caller's key by name (a run-time key's, or a static one's), for usage by key.
    pub key: Option<&'a str>,
    /// What the answer consumed, and what it cost, when the provider said (or, on a cache
    /// hit, what the hit saved).
    pub usage: Option<Usage<'a>>,
}

/// Token counts in neutral terms (whatever protocol the provider spoke) and their price.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Usage<'a> {
    /// Input tokens, cached ones included.
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// Input tokens the provider read from its prompt cache (priced apart).
    pub cached_tokens: u64,
    /// In `currency`; None when the config version has no price for the upstream model.
    pub cost: Option<f64>,
    pub currency: &'a str,
    /// The config version whose prices gave `cost`.
    pub price_version: u64,
    /// A cache hit: the tokens and cost are what the hit saved, not what was spent.
    pub saved: bool,
}

impl<'a> Usage<'a> {
    /// As the record writes a priced usage.
    pub fn of(priced: &'a Priced) -> Usage<'a> {
        let counts = priced.counts;
        Usage {
            prompt_tokens: counts.prompt,
            completion_tokens: counts.completion,
            cached_tokens: counts.cached,
            cost: priced.cost,
            currency: &priced.currency,
            price_version: priced.price_version,
            saved: priced.saved,
        }
    }

    pub fn counts(&self) -> TokenCounts {
        TokenCounts {
            prompt: self.prompt_tokens,
            completion: self.completion_tokens,
            cached: self.cached_tokens,
        }
    }
}

impl RecordInput<'_> {
    /// A request answered with `status` and nothing else to say: no body to cache or
    /// digest, no error, the destination answered, nothing failed before it.
    pub fn status(status: u16) -> RecordInput<'static> {
        RecordInput {
            status,
            error: None,
            response: None,
            response_sha256: None,
            cache_ttl: Duration::ZERO,
            upstream: 0,
            failovers: &[],
            inflight: None,
            key: None,
            usage: None,
            upstream_api: None,
        }
    }
}

/// What became of a stream whose version set left service while it was relayed
/// (docs/ROLLBACK.md R6): `inflight_on_revert` in the config it was admitted under decides.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Inflight {
    pub outcome: InflightOutcome,
    /// The change after which the replica no longer served the request's version set.
    pub change: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InflightOutcome {
    /// Relayed to its end all the same (`inflight_on_revert: finish`).
    FinishedAfterRevert,
    /// Ended with an error event (`inflight_on_revert: cut`).
    CutOnRevert,
}

impl InflightOutcome {
    pub fn name(self) -> &'static str {
        match self {
            InflightOutcome::FinishedAfterRevert => "finished-after-revert",
            InflightOutcome::CutOnRevert => "cut-on-revert",
        }
    }

    pub fn from_name(name: &str) -> Option<InflightOutcome> {
        match name {
            "finished-after-revert" => Some(InflightOutcome::FinishedAfterRevert),
            "cut-on-revert" => Some(InflightOutcome::CutOnRevert),
            _ => None,
        }
    }
}

/// One replica's hot-path state: its cache, its audit chain, and the version sets it serves.
pub struct Gateway {
    cache: ResponseCache,
    /// Admissions of cacheable requests, for exact repeats (see [`memo`]).
    memo: Memo,
    metrics: Metrics,
    /// Tokens and cost by tenant, key, model, provider and price version.
    meter: Meter,
    /// Each config version's price of each upstream model, once looked up.
    prices: PriceMemo,
    audit: SharedWriter,
    active: RwLock<Vec<Versions>>,
}

impl Gateway {
    pub fn new(cache: ResponseCache, audit: AuditWriter) -> Gateway {
        // As many admissions as responses, in a quarter of the cache's bytes.
        let (max_entries, max_bytes) = cache.limits();
        Gateway {
            memo: Memo::new(max_entries, max_bytes as u64 / 4),
            cache,
            metrics: Metrics::default(),
            meter: Meter::default(),
            prices: PriceMemo::default(),
            audit: SharedWriter::new(audit),
            active: RwLock::new(Vec::new()),
        }
    }

    pub fn cache(&self) -> &ResponseCache {
        &self.cache
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    pub fn meter(&self) -> &Meter {
        &self.meter
    }

    pub fn admit(&self, req: &AdmitInput<'_>) -> Admission {
        if req.cache != CacheMode::Off {
            if let Some(mut adm) = self.memo.recall(req) {
                adm.cached = adm.cache_key.and_then(|key| self.cache.get(&key));
                return adm;
            }
        }
        let adm = self.judge(req);
        if req.cache != CacheMode::Off {
            self.memo.remember(req, &adm);
        }
        adm
    }

    /// Admission worked out in full: parse, policy, routing, rewrite and cache lookup.
    fn judge(&self, req: &AdmitInput<'_>) -> Admission {
        let ctx = &req.ctx;
        let mut adm = Admission::new(ctx, req.body, Outcome::Allow, 200, "", String::new());
        let mut parsed = match ParsedRequest::parse(ctx.api, req.body) {
            Ok(p) => p,
            Err(e) => {
                adm.refuse(Outcome::Invalid, 400, "invalid_request", e.to_string());
                return adm;
            }
        };
        let model = parsed.model().to_string();
        let decision = {
            let segments = parsed.segments();
            let view = RequestView {
                tenant: ctx.tenant,
                model: &model,
                route: ctx.api.name(),
                headers: req.headers,
                segments: &segments,
            };
            if let Some((shadow, version)) = req.shadow {
                adm.shadow = Some(ShadowOutcome::from_decision(
                    version,
                    shadow.evaluate(&view),
                ));
            }
            req.policy.evaluate(&view)
        };
        adm.model = model;
        adm.stream = parsed.stream();
        adm.matched = decision.matched;
        if let Verdict::Deny {
            status,
            message,
            rule,
        } = decision.verdict
        {
            let message = if rule.is_empty() {
                message
            } else {
                format!("{message} (rule {rule})")
            };
            adm.refuse(Outcome::Deny, status, "policy_denied", message);
            adm.rule = Some(rule).filter(|r| !r.is_empty());
            return adm;
        }
        let destination = match req
            .routing
            .resolve(ctx.api, &adm.model, decision.route.as_deref())
        {
            Ok(d) => d,
            Err(Unroutable::UnknownModel) => {
                let message = format!(
                    "the model `{}` does not exist or is not routed here",
                    adm.model
                );
                adm.refuse(Outcome::Unroutable, 404, "model_not_found", message);
                return adm;
            }
            Err(Unroutable::UnknownTarget(target)) => {
                let message = format!(
                    "policy routes to target `{target}`, which the active routing does not define"
                );
                adm.refuse(Outcome::Unroutable, 503, "route_target_missing", message);
                return adm;
            }
        };
        if self.cacheable(req, &parsed) {
            // A streamed answer is stored as SSE bytes: it must never answer a plain request.
            let shape = if parsed.stream() { "stream" } else { "whole" };
            let route = [ctx.api.name(), "/", shape, "\n", req.vary].concat();
            let key = CacheKey::new(ctx.tenant, &route, &parsed.normalized(), ctx.versions);
            adm.cached = self.cache.get(&key);
            adm.cache_key = Some(key);
        }
        adm.redacted = !decision.rewrites.is_empty();
        parsed.apply_rewrites(&decision.rewrites);
        if destination.model != adm.model {
            parsed.set_model(&destination.model);
        }
        let body = if adm.redacted || destination.model != adm.model {
            parsed.to_body()
        } else {
            req.body.to_vec()
        };
        // Only routes with fallbacks pay for their bodies, re-targeted when the model differs.
        for (provider, model) in &destination.fallbacks {
            let body = if *model == destination.model {
                body.clone()
            } else {
                parsed.set_model(model);
                parsed.to_body()
            };
            adm.fallbacks.push(Alternative {
                provider: provider.clone(),
                model: model.clone(),
                body,
            });
        }
        adm.body = Some(body);
        adm.destination = Some(destination);
        adm
    }

    fn cacheable(&self, req: &AdmitInput<'_>, parsed: &ParsedRequest) -> bool {
        match req.cache {
            CacheMode::Off => false,
            CacheMode::Forced => true,
            CacheMode::Deterministic => {
                req.ctx.api == Api::Embeddings || parsed.temperature() == Some(0.0)
            }
        }
    }

    /// An admission for a request refused before it could be parsed (401, 413, ...).
    pub fn reject(
        &self,
        ctx: &RequestContext<'_>,
        status: u16,
        code: &str,
        message: String,
    ) -> Admission {
        Admission::new(ctx, b"", Outcome::Rejected, status, code, message)
    }

    /// Fills the cache (successful, cacheable, still-served versions only) and appends the
    /// request's audit record. Returns the record's sequence number.
    pub fn record(&self, adm: &Admission, out: &RecordInput<'_>) -> Result<u64, AuditError> {
        let digest;
        let response_sha256 = match (out.response_sha256, out.response, &adm.cached) {
            (Some(d), _, _) => Some(d),
            (None, Some(body), _) => {
                digest = sha256_hex(body);
                Some(digest.as_str())
            }
            (None, None, Some(hit)) => Some(hit.body_sha256.as_str()),
            _ => None,
        };
        if let (Some(key), Some(body), None, 200) =
            (adm.cache_key, out.response, &adm.cached, out.status)
        {
            // Held across the insert so a fence cannot slip between the check and the fill.
            let active = self.active.read().unwrap_or_else(|p| p.into_inner());
            if !out.cache_ttl.is_zero() && active.contains(&adm.versions) {
                let content_type = if adm.stream {
                    "text/event-stream"
                } else {
                    "application/json"
                };
                let body_sha256 = match response_sha256 {
                    Some(d) => d.to_owned(),
                    None => sha256_hex(body),
                };
                self.cache.insert_digested(
                    key,
                    200,
                    content_type,
                    body.to_vec(),
                    body_sha256,
                    adm.versions,
                    out.cache_ttl,
                    out.usage.filter(|u| !u.saved).map(|u| u.counts()),
                );
            }
        }
        let v = adm.versions;
        let latency = adm.started.elapsed();
        self.metrics
            .observe(v, adm.api.name(), out.status, adm.cache_state(), latency);
        if let Some(s) = &adm.shadow {
            self.metrics.observe_shadow(ShadowKey {
                shadow_version: s.version,
                active_version: v.policy,
                active: if adm.outcome == Outcome::Deny {
                    "deny"
                } else {
                    "allow"
                },
                shadow: s.verdict,
            });
        }
        let upstream = adm.answered_by(out.upstream);
        let seq = self.audit.append_record(&RequestRecord {
            adm,
            out,
            upstream,
            response_sha256,
            latency_us: latency.as_micros() as u64,
        })?;
        if let (Some(key), Some(usage), Some((provider, model))) = (out.key, out.usage, upstream) {
            self.meter.count(&Metered {
                tenant: &adm.tenant,
                key,
                model,
                provider,
                price_version: usage.price_version,
                currency: usage.currency,
                counts: usage.counts(),
                cost: usage.cost,
                saved: usage.saved,
            });
        }
        Ok(seq)
    }

    /// The usage the record of `adm` carries when `upstream` answered (0 the destination,
    /// i fallback i-1): the tokens its provider `reported`, or on a cache hit (`saved`) the
    /// cached answer's, priced under the admission's config version. `quote` gives a price
    /// the engine has not looked up before (and `None` when it cannot), remembered after.
    /// None: no tokens, or no upstream to price them for.
    pub fn price(
        &self,
        adm: &Admission,
        upstream: usize,
        reported: Option<TokenCounts>,
        saved: bool,
        quote: impl FnOnce(&str, &str) -> Option<Quote>,
    ) -> Option<Priced> {
        let counts = match (reported, saved) {
            (Some(counts), _) => counts,
            (None, true) => adm.cached.as_ref()?.usage?,
            (None, false) => return None,
        };
        let (provider, model) = adm.answered_by(upstream)?;
        let version = adm.versions.config;
        let quote = match self.prices.get(version, provider, model) {
            Some(quote) => quote,
            None => {
                let quote = quote(provider, model)?;
                self.prices.insert(version, provider, model, quote.clone());
                quote
            }
        };
        Some(Priced::new(counts, quote, version, saved))
    }

    /// Appends a control-plane or replica event (change applied, refused, started ...).
    pub fn append(&self, fields: Map<String, Value>) -> Result<u64, AuditError> {
        self.audit.append(fields)
    }

    /// The replica's audit chain: sync, checkpoints and retention.
    pub fn audit(&self) -> &SharedWriter {
        &self.audit
    }

    /// Makes `active` the only version sets the cache may serve or be filled with, and
    /// purges every entry of any other. Returns the number purged.
    pub fn fence(&self, active: Vec<Versions>) -> usize {
        let mut guard = self.active.write().unwrap_or_else(|p| p.into_inner());
        let purged = self.cache.retain_versions(&active);
        self.memo.retain_versions(&active);
        *guard = active;
        purged
    }
}

#[cfg(test)]
mod tests;
