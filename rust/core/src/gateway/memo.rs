//! The admission memo: a cacheable request whose bytes and context repeat exactly those of
//! one already admitted, under the same compiled documents, gets that admission again
//! without being parsed, judged by policy, routed or normalised anew.
//!
//! Admission is a pure function of what is compared here (the policy reads tenant, model,
//! route, the headers it names and the prompt; routing reads api and model; the cache key
//! adds the versions, the cache mode and the answer-changing headers), so the memo changes
//! no decision: it only skips recomputing one. Every input is compared byte for byte on a
//! hit, so a hash collision can only cost a miss, never another request's judgement.
//! Only allowed, cacheable requests are kept (the ones a cache hit repeats); the memo is
//! bounded in bytes and purged with the response cache at each fence.

use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::Arc;
use std::time::Instant;

use quick_cache::sync::Cache;
use quick_cache::{DefaultHashBuilder, Weighter};

use crate::cache::Versions;
use crate::request::Api;

use super::admission::Admission;
use super::{AdmitInput, CacheMode};

/// Bytes charged per entry on top of what it copies of its request and admission.
const ENTRY_OVERHEAD: u64 = 512;

/// What admission depends on, compared whole on every hit.
struct Inputs {
    api: Api,
    tenant: String,
    versions: Versions,
    policy: u64,
    shadow: Option<u64>,
    routing: u64,
    cache: CacheMode,
    vary: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Inputs {
    fn matches(&self, req: &AdmitInput<'_>) -> bool {
        self.body == req.body
            && self.api == req.ctx.api
            && self.tenant == req.ctx.tenant
            && self.versions == req.ctx.versions
            && self.policy == req.policy.id()
            && self.shadow == req.shadow.map(|(p, _)| p.id())
            && self.routing == req.routing.id()
            && self.cache == req.cache
            && self.vary == req.vary
            && self.headers.len() == req.headers.len()
            && self
                .headers
                .iter()
                .zip(req.headers)
                .all(|((n, v), (rn, rv))| n == rn && v == rv)
    }

    fn of(req: &AdmitInput<'_>) -> Inputs {
        Inputs {
            api: req.ctx.api,
            tenant: req.ctx.tenant.to_owned(),
            versions: req.ctx.versions,
            policy: req.policy.id(),
            shadow: req.shadow.map(|(p, _)| p.id()),
            routing: req.routing.id(),
            cache: req.cache,
            vary: req.vary.to_owned(),
            headers: req
                .headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            body: req.body.to_vec(),
        }
    }
}

struct Entry {
    inputs: Inputs,
    /// The admission as it left `admit`, less what is per request (id, start, cache hit).
    admission: Admission,
}

#[derive(Clone)]
struct Charge;

impl Weighter<u64, Arc<Entry>> for Charge {
    fn weight(&self, _key: &u64, entry: &Arc<Entry>) -> u64 {
        let adm = &entry.admission;
        let bodies: usize = adm.body.as_ref().map_or(0, Vec::len)
            + adm.fallbacks.iter().map(|f| f.body.len()).sum::<usize>();
        (entry.inputs.body.len() + bodies) as u64 + ENTRY_OVERHEAD
    }
}

pub(super) struct Memo {
    entries: Cache<u64, Arc<Entry>, Charge>,
    hasher: DefaultHashBuilder,
}

impl Memo {
    pub fn new(max_entries: usize, max_bytes: u64) -> Memo {
        Memo {
            entries: Cache::with_weighter(max_entries.max(1), max_bytes.max(1), Charge),
            hasher: DefaultHashBuilder::default(),
        }
    }

    fn key(&self, req: &AdmitInput<'_>) -> u64 {
        let mut h = self.hasher.build_hasher();
        req.body.hash(&mut h);
        req.ctx.tenant.hash(&mut h);
        req.ctx.api.hash(&mut h);
        req.ctx.versions.hash(&mut h);
        req.policy.id().hash(&mut h);
        req.routing.id().hash(&mut h);
        req.vary.hash(&mut h);
        h.finish()
    }

    /// The admission `req` got before, for this request (its id, started now), if its
    /// inputs repeat exactly.
    pub fn recall(&self, req: &AdmitInput<'_>) -> Option<Admission> {
        let entry = self.entries.get(&self.key(req))?;
        if !entry.inputs.matches(req) {
            return None;
        }
        let mut adm = entry.admission.clone();
        adm.request_id = req.ctx.request_id.to_owned();
        adm.started = Instant::now();
        Some(adm)
    }

    /// Keeps `adm` for requests that repeat `req`: only allowed, cacheable ones.
    pub fn remember(&self, req: &AdmitInput<'_>, adm: &Admission) {
        if adm.cache_key.is_none() || adm.body.is_none() {
            return;
        }
        let mut admission = adm.clone();
        admission.cached = None;
        let entry = Entry {
            inputs: Inputs::of(req),
            admission,
        };
        self.entries.insert(self.key(req), Arc::new(entry));
    }

    /// Drops every entry of a version set not in `active` (at a fence, with the cache).
    pub fn retain_versions(&self, active: &[Versions]) {
        self.entries
            .retain(|_, entry| active.contains(&entry.inputs.versions));
    }
}

#[cfg(test)]
mod tests {
    use crate::audit::{AuditOptions, AuditWriter};
    use crate::cache::{ResponseCache, Versions};
    use crate::gateway::{AdmitInput, CacheMode, Gateway, RequestContext};
    use crate::policy::Policy;
    use crate::request::Api;
    use crate::routing::Routing;

    const V1: Versions = Versions::new(1, 1, 1);
    const ALLOW: &str = r#"{"rules": []}"#;
    const NO_HI: &str = r#"{"rules": [{"id": "no-hi", "when": {"prompt": {"keywords": ["hi"]}}, "action": "deny"}]}"#;
    const ROUTING: &str = r#"{"routes": [{"match": "gpt-*", "provider": "oa"}]}"#;
    const BODY: &[u8] =
        br#"{"model":"gpt-4o","temperature":0,"messages":[{"role":"user","content":"hi"}]}"#;

    fn gateway(dir: &std::path::Path) -> Gateway {
        let (writer, _) = AuditWriter::open(dir, "r", AuditOptions::default()).unwrap();
        let gateway = Gateway::new(ResponseCache::new(1000, 1 << 20), writer);
        gateway.fence(vec![V1]);
        gateway
    }

    fn input<'a>(
        policy: &'a Policy,
        routing: &'a Routing,
        headers: &'a [(&'a str, &'a str)],
        id: &'a str,
    ) -> AdmitInput<'a> {
        AdmitInput {
            ctx: RequestContext {
                api: Api::Chat,
                tenant: "acme",
                request_id: id,
                versions: V1,
            },
            policy,
            shadow: None,
            routing,
            headers,
            body: BODY,
            cache: CacheMode::Deterministic,
            vary: "",
        }
    }

    #[test]
    fn a_repeat_gets_the_same_admission_under_its_own_id() {
        let dir = tempfile::tempdir().unwrap();
        let gw = gateway(dir.path());
        let policy = Policy::compile(ALLOW.as_bytes()).unwrap();
        let routing =
            Routing::compile(ROUTING.as_bytes(), &[("oa".into(), "openai".into())]).unwrap();
        let first = gw.admit(&input(&policy, &routing, &[], "a"));
        assert!(gw
            .memo
            .recall(&input(&policy, &routing, &[], "x"))
            .is_some());
        let again = gw.admit(&input(&policy, &routing, &[], "b"));
        assert_eq!(again.request_id, "b");
        assert_eq!(
            (
                again.cache_key,
                &again.body,
                &again.model,
                &again.prompt_sha256
            ),
            (
                first.cache_key,
                &first.body,
                &first.model,
                &first.prompt_sha256
            )
        );
    }

    #[test]
    fn another_compilation_or_other_headers_are_judged_anew() {
        let dir = tempfile::tempdir().unwrap();
        let gw = gateway(dir.path());
        let providers = [("oa".to_string(), "openai".to_string())];
        let routing = Routing::compile(ROUTING.as_bytes(), &providers).unwrap();
        let allow = Policy::compile(ALLOW.as_bytes()).unwrap();
        assert_eq!(
            gw.admit(&input(&allow, &routing, &[], "a")).outcome.name(),
            "allow"
        );
        // The same version numbers, another document: its own verdict, never the memo's.
        let deny = Policy::compile(NO_HI.as_bytes()).unwrap();
        assert_eq!(
            gw.admit(&input(&deny, &routing, &[], "b")).outcome.name(),
            "deny"
        );
        let headers = [("x-team", "a")];
        assert!(gw
            .memo
            .recall(&input(&allow, &routing, &headers, "c"))
            .is_none());
        let other = Routing::compile(ROUTING.as_bytes(), &providers).unwrap();
        assert!(gw.memo.recall(&input(&allow, &other, &[], "d")).is_none());
        assert!(gw.memo.recall(&input(&allow, &routing, &[], "e")).is_some());
        gw.fence(vec![Versions::new(2, 1, 1)]);
        assert!(gw.memo.recall(&input(&allow, &routing, &[], "f")).is_none());
    }
}
