//! What admission decides about one request, and the context it decides in.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::cache::{CacheKey, CachedResponse, Versions};
use crate::digest::sha256_hex;
use crate::policy::{Decision, Verdict};
use crate::request::Api;
use crate::routing::Destination;

/// How a request left admission.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Allow,
    Deny,
    Invalid,
    Unroutable,
    /// Refused before admission (authentication, body size).
    Rejected,
}

impl Outcome {
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Allow => "allow",
            Outcome::Deny => "deny",
            Outcome::Invalid => "invalid",
            Outcome::Unroutable => "unroutable",
            Outcome::Rejected => "rejected",
        }
    }
}

/// The result of admission; the serving layer acts on it and hands it back to `record`.
#[derive(Debug, Clone)]
pub struct Admission {
    pub request_id: String,
    pub api: Api,
    pub tenant: String,
    pub outcome: Outcome,
    /// The HTTP status and error to answer with when the outcome is not `Allow`.
    pub status: u16,
    pub code: String,
    pub message: String,
    pub rule: Option<String>,
    pub matched: Vec<String>,
    pub model: String,
    pub stream: bool,
    pub destination: Option<Destination>,
    /// The body to send upstream (redacted and re-targeted as the policy and routing say).
    pub body: Option<Vec<u8>>,
    /// The destination's fallbacks, in order, each with the body to send it (its model).
    pub fallbacks: Vec<Alternative>,
    pub redacted: bool,
    pub cache_key: Option<CacheKey>,
    pub cached: Option<Arc<CachedResponse>>,
    pub versions: Versions,
    pub shadow: Option<ShadowOutcome>,
    pub prompt_sha256: String,
    pub started: Instant,
}

/// A fallback upstream of an admitted request.
#[derive(Debug, Clone)]
pub struct Alternative {
    pub provider: String,
    pub model: String,
    pub body: Vec<u8>,
}

/// What the shadow policy would have decided for this request.
#[derive(Debug, Clone)]
pub struct ShadowOutcome {
    pub version: u64,
    pub verdict: &'static str,
    pub rule: Option<String>,
    pub matched: Vec<String>,
}

impl ShadowOutcome {
    pub(super) fn from_decision(version: u64, decision: Decision) -> ShadowOutcome {
        let (verdict, rule) = match decision.verdict {
            Verdict::Allow => ("allow", None),
            Verdict::Deny { rule, .. } => ("deny", Some(rule).filter(|r| !r.is_empty())),
        };
        ShadowOutcome {
            version,
            verdict,
            rule,
            matched: decision.matched,
        }
    }
}

/// Who is asking, under which versions: known before the body is even read.
#[derive(Clone, Copy)]
pub struct RequestContext<'a> {
    pub api: Api,
    pub tenant: &'a str,
    pub request_id: &'a str,
    pub versions: Versions,
}

impl Admission {
    pub(super) fn new(
        ctx: &RequestContext<'_>,
        body: &[u8],
        outcome: Outcome,
        status: u16,
        code: &str,
        message: String,
    ) -> Admission {
        Admission {
            request_id: ctx.request_id.to_string(),
            api: ctx.api,
            tenant: ctx.tenant.to_string(),
            outcome,
            status,
            code: code.to_string(),
            message,
            rule: None,
            matched: Vec::new(),
            model: String::new(),
            stream: false,
            destination: None,
            body: None,
            fallbacks: Vec::new(),
            redacted: false,
            cache_key: None,
            cached: None,
            versions: ctx.versions,
            shadow: None,
            prompt_sha256: sha256_hex(body),
            started: Instant::now(),
        }
    }

    pub(super) fn refuse(&mut self, outcome: Outcome, status: u16, code: &str, message: String) {
        self.outcome = outcome;
        self.status = status;
        self.code = code.to_string();
        self.message = message;
    }

    /// Dates the request's start `waited_s` seconds back, to when it took its snapshot
    /// (before its body was read): its latency, and the start a drill derives from its
    /// record (ROLLBACK.md R6), count from then. A negative or absurd value changes nothing.
    pub fn started_earlier(&mut self, waited_s: f64) {
        if let Ok(waited) = Duration::try_from_secs_f64(waited_s) {
            self.started = self.started.checked_sub(waited).unwrap_or(self.started);
        }
    }

    /// (provider, model) of the upstream that answers when `upstream` is 0 (the
    /// destination) or i (fallback i-1); None when there is no such upstream.
    pub fn answered_by(&self, upstream: usize) -> Option<(&str, &str)> {
        match upstream {
            0 => self
                .destination
                .as_ref()
                .map(|d| (d.provider.as_str(), d.model.as_str())),
            i => self
                .fallbacks
                .get(i - 1)
                .map(|f| (f.provider.as_str(), f.model.as_str())),
        }
    }

    /// "hit", "miss" (cacheable, not found) or "bypass" (not cacheable).
    pub fn cache_state(&self) -> &'static str {
        match (&self.cached, &self.cache_key) {
            (Some(_), _) => "hit",
            (None, Some(_)) => "miss",
            _ => "bypass",
        }
    }
}

/// The headers naming the versions and positions an answer was served under (R3): the same
/// for every answer of a version set.
pub fn version_headers(v: Versions) -> [(&'static str, String); 4] {
    let positions = v
        .positions()
        .map(|(domain, position)| format!("{domain}={position}"));
    [
        ("x-gatewayd-policy-version", v.policy.to_string()),
        ("x-gatewayd-routing-version", v.routing.to_string()),
        ("x-gatewayd-config-version", v.config.to_string()),
        ("x-gatewayd-position", positions.join(", ")),
    ]
}
