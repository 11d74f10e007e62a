//! The request phases: `Engine.admit` and `Engine.record`, plus cache and audit controls.

use std::path::Path;
use std::time::Duration;

use gatewayd_core::audit::{AuditOptions, AuditWriter, OpenReport, SyncPolicy};
use gatewayd_core::cache::{ResponseCache, TokenCounts, Versions as CoreVersions};
use gatewayd_core::gateway::{
    AdmitInput, Gateway, Inflight, InflightOutcome, RecordInput, RequestContext, Usage,
};
use gatewayd_core::metrics::LATENCY_BUCKETS;
use gatewayd_core::request::{sticky, Api};
use gatewayd_core::usage::{Price, Priced, Quote};
use pyo3::exceptions::PyValueError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};

use crate::admission::{Admission, CacheMode, Versions};
use crate::audit::{self, audit_err, RetentionPlan};
use crate::documents::{Policy, Routing};
use crate::errors::GatewaydError;
use crate::headers::header_pairs;

/// One replica's hot path: response cache and audit chain (and what opening it found).
#[pyclass(frozen, module = "gatewayd._core")]
pub struct Engine(Gateway, OpenReport);

fn api_from(name: &str) -> PyResult<Api> {
    Api::from_name(name).ok_or_else(|| PyValueError::new_err(format!("unknown api {name:?}")))
}

/// What a `Served` names: the compiled documents and the versions, which must be the
/// policy's and routing's own.
struct ServedUnder<'py> {
    policy: PyRef<'py, Policy>,
    shadow: Option<PyRef<'py, Policy>>,
    routing: PyRef<'py, Routing>,
    versions: CoreVersions,
}

impl<'py> ServedUnder<'py> {
    fn of(served: &Bound<'py, PyAny>) -> PyResult<ServedUnder<'py>> {
        let policy: PyRef<'py, Policy> =
            served.getattr(intern!(served.py(), "policy"))?.extract()?;
        let shadow: Option<PyRef<'py, Policy>> =
            served.getattr(intern!(served.py(), "shadow"))?.extract()?;
        let routing: PyRef<'py, Routing> =
            served.getattr(intern!(served.py(), "routing"))?.extract()?;
        let versions = served
            .getattr(intern!(served.py(), "versions"))?
            .extract::<Versions>()?
            .0;
        if versions.policy != policy.version || versions.routing != routing.version {
            return Err(PyValueError::new_err(format!(
                "versions (policy {}, routing {}) do not name the policy {} and routing {} served",
                versions.policy, versions.routing, policy.version, routing.version
            )));
        }
        Ok(ServedUnder {
            policy,
            shadow,
            routing,
            versions,
        })
    }
}

/// The sticky bucket (0..BUCKETS) of a request: its `x-gatewayd-sticky` header, else its
/// end user (OpenAI `user`, Anthropic `metadata.user_id`), else the caller's key.
#[pyfunction]
#[pyo3(signature = (*, api, sticky, body, key))]
pub fn sticky_bucket(api: &str, sticky: Option<&str>, body: &[u8], key: &str) -> PyResult<u32> {
    Ok(sticky::request_bucket(api_from(api)?, sticky, body, key))
}

/// The headers of `headers` (ASGI (name, value) bytes pairs) that `policy`'s rules read;
/// nothing is looked at when no rule reads a header.
fn policy_headers(policy: &Policy, headers: &Bound<'_, PyAny>) -> PyResult<Vec<(String, String)>> {
    if policy.compiled.header_names().is_empty() {
        return Ok(Vec::new());
    }
    let pairs = header_pairs(headers)?;
    Ok(policy.compiled.select_headers(
        pairs
            .iter()
            .map(|(name, value)| (name.as_bytes(), value.as_bytes())),
    ))
}

/// `LATENCY_BUCKETS`: the histogram's upper bounds in seconds, for rendering `/metrics`.
pub fn latency_buckets() -> Vec<f64> {
    LATENCY_BUCKETS.to_vec()
}

#[pymethods]
impl Engine {
    #[new]
    fn new(
        cache_entries: usize,
        cache_bytes: usize,
        audit_dir: &str,
        chain: &str,
        segment_bytes: u64,
    ) -> PyResult<Self> {
        let opts = AuditOptions {
            segment_bytes,
            sync: SyncPolicy::Never,
        };
        let (writer, report) =
            AuditWriter::open(Path::new(audit_dir), chain, opts).map_err(audit_err)?;
        Ok(Engine(
            Gateway::new(ResponseCache::new(cache_entries, cache_bytes), writer),
            report,
        ))
    }

    /// Parse, policy, routing, rewrite and cache lookup for one request, in one call.
    /// `headers` are the request's, as the ASGI scope has them ((name, value) bytes): the
    /// ones the policy's rules read are picked out here.
    /// `served` (gatewayd.control.snapshot.Served) names what the request is served under:
    /// its policy, shadow policy, routing and versions are read from it, and it rides on
    /// the admission to the request's end (R6). `vary` holds the forwarded request headers
    /// that change the answer (API version, betas): it is part of the cache key.
    /// `waited_s`: how long ago the request started (took its snapshot), so its record's
    /// latency, and the start a drill derives from it, count from then.
    #[pyo3(signature = (*, served, api, tenant, request_id, headers, body, cache, vary, waited_s=0.0))]
    #[allow(clippy::too_many_arguments)]
    fn admit(
        &self,
        py: Python<'_>,
        served: Bound<'_, PyAny>,
        api: &str,
        tenant: &str,
        request_id: &str,
        headers: Bound<'_, PyAny>,
        body: &[u8],
        cache: CacheMode,
        vary: &str,
        waited_s: f64,
    ) -> PyResult<Admission> {
        let under = ServedUnder::of(&served)?;
        let shadow = under.shadow.as_ref();
        let headers = policy_headers(&under.policy, &headers)?;
        let headers: Vec<(&str, &str)> = headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let input = AdmitInput {
            ctx: RequestContext {
                api: api_from(api)?,
                tenant,
                request_id,
                versions: under.versions,
            },
            policy: &under.policy.compiled,
            shadow: shadow.map(|p| (&p.compiled, p.version)),
            routing: &under.routing.compiled,
            headers: &headers,
            body,
            cache: cache.into(),
            vary,
        };
        let mut admission = self.0.admit(&input);
        admission.started_earlier(waited_s);
        Ok(Admission::new(py, admission, served.unbind()))
    }

    /// An admission for a request refused before its body was judged (401, 413, 429):
    /// still audited, under the versions `served` names (`waited_s` as for `admit`).
    #[pyo3(signature = (*, served, api, tenant, request_id, status, code, message, waited_s=0.0))]
    #[allow(clippy::too_many_arguments)]
    fn reject(
        &self,
        py: Python<'_>,
        served: Bound<'_, PyAny>,
        api: &str,
        tenant: &str,
        request_id: &str,
        status: u16,
        code: &str,
        message: String,
        waited_s: f64,
    ) -> PyResult<Admission> {
        let ctx = RequestContext {
            api: api_from(api)?,
            tenant,
            request_id,
            versions: ServedUnder::of(&served)?.versions,
        };
        let mut admission = self.0.reject(&ctx, status, code, message);
        admission.started_earlier(waited_s);
        Ok(Admission::new(py, admission, served.unbind()))
    }

    /// Cache fill and audit append for an answered request; returns the record's seq and
    /// what the request cost (None: no usage, or no price for the model).
    /// `upstream` is who answered (0 the provider, i its fallback i-1), `failovers` what
    /// failed before it, one "<provider>: <why>" each. `inflight` says what a revert did to
    /// the request in flight ("finished-after-revert" or "cut-on-revert"), `reverted_by`
    /// the change after which its version set was no longer served (R6). `upstream_api`
    /// names the protocol the answering upstream spoke when it is not the request's own
    /// (the request was translated). `key` names the caller's key. `counts` are the
    /// (prompt, completion, cached) tokens the provider reported. Usage is priced here under
    /// the request's config version, recorded, and counted in `usage_rows` (with a key).
    #[pyo3(signature = (admission, *, status, error=None, response=None, response_sha256=None, cache_ttl_s=0.0, upstream=0, failovers=Vec::new(), inflight=None, reverted_by=0, upstream_api=None, key=None, counts=None))]
    #[allow(clippy::too_many_arguments)]
    fn record(
        &self,
        py: Python<'_>,
        admission: &Admission,
        status: u16,
        error: Option<&str>,
        response: Option<&[u8]>,
        response_sha256: Option<&str>,
        cache_ttl_s: f64,
        upstream: usize,
        failovers: Vec<String>,
        inflight: Option<&str>,
        reverted_by: u64,
        upstream_api: Option<&str>,
        key: Option<&str>,
        counts: Option<(u64, u64, u64)>,
    ) -> PyResult<(u64, Option<f64>)> {
        let inflight = match inflight {
            None => None,
            Some(name) => Some(Inflight {
                outcome: InflightOutcome::from_name(name).ok_or_else(|| {
                    PyValueError::new_err(format!(
                        "unknown inflight outcome {name:?} (finished-after-revert or cut-on-revert)"
                    ))
                })?,
                change: reverted_by,
            }),
        };
        let reported = counts.map(|(prompt, completion, cached)| TokenCounts {
            prompt,
            completion,
            cached,
        });
        let priced = self.priced(py, admission, upstream, reported, false)?;
        let out = RecordInput {
            status,
            error,
            response,
            response_sha256,
            cache_ttl: Duration::from_secs_f64(cache_ttl_s.max(0.0)),
            upstream,
            failovers: &failovers,
            inflight,
            upstream_api,
            key,
            usage: priced.as_ref().map(Usage::of),
        };
        let seq = self.0.record(&admission.inner, &out).map_err(audit_err)?;
        Ok((seq, priced.and_then(|p| p.cost)))
    }

    /// A cache hit's record: its cached status, the caller's `key`, and the tokens the
    /// cached answer's provider reported, as what the hit saved. The hit path's one call,
    /// without keywords to parse.
    fn record_hit(&self, py: Python<'_>, admission: &Admission, key: &str) -> PyResult<u64> {
        let status = admission.inner.cached.as_ref().map_or(0, |c| c.status);
        let priced = self.priced(py, admission, 0, None, true)?;
        let out = RecordInput {
            key: Some(key),
            usage: priced.as_ref().map(Usage::of),
            ..RecordInput::status(status)
        };
        self.0.record(&admission.inner, &out).map_err(audit_err)
    }

    /// Tokens and cost of the records written so far, by (tenant, key, model, provider,
    /// price version, currency): requests, prompt, completion, cached tokens, cost, then a
    /// cache hit's saved prompt, completion tokens and cost.
    fn usage_rows(&self) -> Vec<(UsageKey, UsageRow)> {
        self.0
            .meter()
            .rows()
            .into_iter()
            .map(|(l, t)| {
                let labels = (
                    l.tenant,
                    l.key,
                    l.model,
                    l.provider,
                    l.price_version,
                    l.currency,
                );
                let totals = (
                    t.requests,
                    t.prompt,
                    t.completion,
                    t.cached,
                    t.cost,
                    t.saved_prompt,
                    t.saved_completion,
                    t.saved_cost,
                );
                (labels, totals)
            })
            .collect()
    }

    /// Appends a control or replica event given as a JSON object.
    fn event(&self, fields_json: &[u8]) -> PyResult<u64> {
        let fields: serde_json::Map<String, serde_json::Value> =
            serde_json::from_slice(fields_json).map_err(|e| {
                GatewaydError::new_err(format!("an event must be a JSON object: {e}"))
            })?;
        self.0.append(fields).map_err(audit_err)
    }

    /// Makes `active` the only version sets the cache serves and fills; returns how many
    /// entries of other versions were purged (R5).
    fn fence(&self, active: Vec<Versions>) -> usize {
        self.0.fence(active.into_iter().map(|v| v.0).collect())
    }

    /// never | interval | group | always; only `always` syncs inside an append, the rest
    /// is driven from Python (gatewayd.audit.sync) through `sync_audit`.
    fn set_audit_sync(&self, policy: &str, interval_ms: u64) -> PyResult<()> {
        self.0
            .audit()
            .set_sync_policy(audit::sync_policy(policy, interval_ms)?);
        Ok(())
    }

    /// (policy, interval_ms, head seq, synced seq).
    fn audit_sync_state(&self) -> (&'static str, u64, u64, u64) {
        let state = self.0.audit().sync_state();
        let (policy, interval_ms) = audit::sync_policy_name(state.policy);
        (policy, interval_ms, state.head_seq, state.synced_seq)
    }

    /// Syncs every record appended so far, without holding up appends meanwhile; returns
    /// the seq up to which records are durable.
    fn sync_audit(&self, py: Python<'_>) -> PyResult<u64> {
        py.detach(|| self.0.audit().sync()).map_err(audit_err)
    }

    /// At shutdown: the current segment ends with its last record again, without the
    /// space reserved for appends (an append after this reserves anew).
    fn release_audit_reserve(&self) -> PyResult<()> {
        self.0.audit().release_reserve().map_err(audit_err)
    }

    fn audit_head(&self) -> (u64, String) {
        let (seq, hash) = self.0.audit().head();
        (seq, hex::encode(hash))
    }

    /// The chain's directory: segments, and checkpoint notes under `checkpoints/`.
    fn audit_dir(&self) -> String {
        self.0.audit().dir().display().to_string()
    }

    /// What opening the chain found (created, torn tail cut, checkpoint re-verified).
    fn audit_opened<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        audit::open_report(py, &self.1)
    }

    /// The current tree head, synced first, as (size, checkpoint note body) for the log
    /// `<origin>/<chain>`; the caller signs the body.
    fn audit_checkpoint(&self, py: Python<'_>, origin: &str) -> PyResult<(u64, String)> {
        let checkpoint = py
            .detach(|| self.0.audit().checkpoint(origin))
            .map_err(audit_err)?;
        Ok((checkpoint.size, checkpoint.body()))
    }

    /// Picks the sealed segments older than `max_age_s` or beyond `max_bytes` (0: no
    /// limit) and records the decision in the chain; None if nothing is due. Sign a
    /// checkpoint, then `audit_apply_retention`.
    fn audit_plan_retention(
        &self,
        max_age_s: f64,
        max_bytes: u64,
    ) -> PyResult<Option<RetentionPlan>> {
        let policy = audit::retention_policy(max_age_s, max_bytes);
        let plan = self.0.audit().plan_retention(&policy).map_err(audit_err)?;
        Ok(plan.map(RetentionPlan))
    }

    /// Removes the segments a plan lets go, once a checkpoint covers its record.
    fn audit_apply_retention(&self, py: Python<'_>, plan: &RetentionPlan) -> PyResult<u64> {
        py.detach(|| self.0.audit().apply_retention(&plan.0))
            .map_err(audit_err)
    }

    /// This replica's request metrics and cache counters as JSON, for `/metrics` and the
    /// heartbeat: the field names are the Rust structs', defined once.
    fn metrics_json<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        let snapshot = EngineMetrics {
            metrics: self.0.metrics().snapshot(),
            cache: self.0.cache().stats(),
        };
        let bytes =
            serde_json::to_vec(&snapshot).map_err(|e| GatewaydError::new_err(e.to_string()))?;
        Ok(PyBytes::new(py, &bytes))
    }
}

type UsageKey = (String, String, String, String, u64, String);
type UsageRow = (u64, u64, u64, u64, f64, u64, u64, f64);

/// What the admission's config (`served.config.prices`) prices `provider`'s `model` at:
/// `Prices.price` picks the exact name, else the longest matching glob (fnmatch), so the
/// engine asks it once per model and config version.
impl Engine {
    /// The usage to record (`reported` by the provider, or a hit's `saved` tokens), priced
    /// under the admission's config version.
    fn priced(
        &self,
        py: Python<'_>,
        admission: &Admission,
        upstream: usize,
        reported: Option<TokenCounts>,
        saved: bool,
    ) -> PyResult<Option<Priced>> {
        let mut failed = None;
        let priced = self.0.price(
            &admission.inner,
            upstream,
            reported,
            saved,
            |provider, model| {
                quote(py, admission, provider, model)
                    .map_err(|err| failed = Some(err))
                    .ok()
            },
        );
        failed.map_or(Ok(priced), Err)
    }
}

fn quote(py: Python<'_>, adm: &Admission, provider: &str, model: &str) -> PyResult<Quote> {
    let prices = adm
        .served
        .bind(py)
        .getattr(intern!(py, "config"))?
        .getattr(intern!(py, "prices"))?;
    let found = prices.call_method1(intern!(py, "price"), (provider, model))?;
    let price = if found.is_none() {
        None
    } else {
        Some(Price {
            input: found.getattr(intern!(py, "input"))?.extract()?,
            output: found.getattr(intern!(py, "output"))?.extract()?,
            cached: found.getattr(intern!(py, "cached"))?.extract()?,
        })
    };
    let currency: String = prices.getattr(intern!(py, "currency"))?.extract()?;
    Ok(Quote {
        price,
        currency: currency.into(),
    })
}

#[derive(serde::Serialize)]
struct EngineMetrics {
    #[serde(flatten)]
    metrics: gatewayd_core::metrics::Snapshot,
    cache: gatewayd_core::cache::CacheStats,
}
