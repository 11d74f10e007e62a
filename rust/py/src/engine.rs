//! The request phases: `Engine.admit` and `Engine.record`, plus cache and audit controls.

use std::path::Path;
use std::time::Duration;

use gatewayd_core::audit::{AuditOptions, AuditWriter, OpenReport, SyncPolicy};
use gatewayd_core::cache::{ResponseCache, Versions};
use gatewayd_core::gateway::{self, AdmitInput, CacheMode, Gateway, RecordInput, RequestContext};
use gatewayd_core::request::Api;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};

use crate::audit::{self, audit_err, RetentionPlan};
use crate::documents::{Policy, Routing};

/// The outcome of `Engine.admit`: what to answer or where to send the request.
#[pyclass(frozen, module = "gatewayd._core")]
pub struct Admission {
    inner: gateway::Admission,
    body: Option<Py<PyBytes>>,
    cached_body: Option<Py<PyBytes>>,
}

#[pymethods]
impl Admission {
    #[getter]
    fn request_id(&self) -> &str {
        &self.inner.request_id
    }
    #[getter]
    fn api(&self) -> &'static str {
        self.inner.api.name()
    }
    #[getter]
    fn verdict(&self) -> &'static str {
        self.inner.outcome.name()
    }
    #[getter]
    fn status(&self) -> u16 {
        self.inner.status
    }
    #[getter]
    fn code(&self) -> &str {
        &self.inner.code
    }
    #[getter]
    fn message(&self) -> &str {
        &self.inner.message
    }
    #[getter]
    fn rule(&self) -> Option<&str> {
        self.inner.rule.as_deref()
    }
    #[getter]
    fn matched(&self) -> Vec<String> {
        self.inner.matched.clone()
    }
    #[getter]
    fn model(&self) -> &str {
        &self.inner.model
    }
    #[getter]
    fn stream(&self) -> bool {
        self.inner.stream
    }
    #[getter]
    fn provider(&self) -> Option<&str> {
        self.inner.destination.as_ref().map(|d| d.provider.as_str())
    }
    #[getter]
    fn upstream_model(&self) -> Option<&str> {
        self.inner.destination.as_ref().map(|d| d.model.as_str())
    }
    #[getter]
    fn redacted(&self) -> bool {
        self.inner.redacted
    }
    /// (provider, body) of each fallback, in order; built when asked (a provider failed).
    #[getter]
    fn fallbacks<'py>(&self, py: Python<'py>) -> Vec<(&str, Bound<'py, PyBytes>)> {
        self.inner
            .fallbacks
            .iter()
            .map(|a| (a.provider.as_str(), PyBytes::new(py, &a.body)))
            .collect()
    }
    #[getter]
    fn body(&self, py: Python<'_>) -> Option<Py<PyBytes>> {
        self.body.as_ref().map(|b| b.clone_ref(py))
    }
    #[getter]
    fn cache(&self) -> &'static str {
        self.inner.cache_state()
    }
    #[getter]
    fn cache_key(&self) -> Option<String> {
        self.inner.cache_key.map(|k| k.to_hex())
    }
    #[getter]
    fn cached_body(&self, py: Python<'_>) -> Option<Py<PyBytes>> {
        self.cached_body.as_ref().map(|b| b.clone_ref(py))
    }
    #[getter]
    fn cached_status(&self) -> u16 {
        self.inner.cached.as_ref().map_or(0, |c| c.status)
    }
    #[getter]
    fn cached_content_type(&self) -> &str {
        self.inner
            .cached
            .as_ref()
            .map_or("", |c| c.content_type.as_str())
    }
    #[getter]
    fn versions(&self) -> (u64, u64, u64) {
        let v = self.inner.versions;
        (v.policy, v.routing, v.config)
    }
}

/// One replica's hot path: response cache and audit chain (and what opening it found).
#[pyclass(frozen, module = "gatewayd._core")]
pub struct Engine(Gateway, OpenReport);

fn api_from(name: &str) -> PyResult<Api> {
    Api::from_name(name).ok_or_else(|| PyValueError::new_err(format!("unknown api {name:?}")))
}

fn versions_from((policy, routing, config): (u64, u64, u64)) -> Versions {
    Versions::new(policy, routing, config)
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

    #[allow(clippy::too_many_arguments)]
    fn admit(
        &self,
        py: Python<'_>,
        policy: &Policy,
        policy_version: u64,
        shadow: Option<(PyRef<'_, Policy>, u64)>,
        routing: &Routing,
        routing_version: u64,
        config_version: u64,
        api: &str,
        tenant: &str,
        request_id: &str,
        headers: Vec<(String, String)>,
        body: &[u8],
        cache_mode: u8,
    ) -> PyResult<Admission> {
        let headers: Vec<(&str, &str)> = headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let cache = match cache_mode {
            0 => CacheMode::Off,
            1 => CacheMode::Deterministic,
            _ => CacheMode::Forced,
        };
        let versions = Versions::new(policy_version, routing_version, config_version);
        let input = AdmitInput {
            ctx: RequestContext {
                api: api_from(api)?,
                tenant,
                request_id,
                versions,
            },
            policy: &policy.0,
            shadow: shadow.as_ref().map(|(p, v)| (&p.0, *v)),
            routing: &routing.0,
            headers: &headers,
            body,
            cache,
        };
        let inner = self.0.admit(&input);
        let body = inner.body.as_ref().map(|b| PyBytes::new(py, b).unbind());
        let cached_body = inner
            .cached
            .as_ref()
            .map(|c| PyBytes::new(py, &c.body).unbind());
        Ok(Admission {
            inner,
            body,
            cached_body,
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn reject(
        &self,
        api: &str,
        tenant: &str,
        request_id: &str,
        status: u16,
        code: &str,
        message: String,
        versions: (u64, u64, u64),
    ) -> PyResult<Admission> {
        let ctx = RequestContext {
            api: api_from(api)?,
            tenant,
            request_id,
            versions: versions_from(versions),
        };
        Ok(Admission {
            inner: self.0.reject(&ctx, status, code, message),
            body: None,
            cached_body: None,
        })
    }

    #[pyo3(signature = (admission, status, error, response, response_sha256, cache_ttl_s, upstream=0, failovers=Vec::new()))]
    #[allow(clippy::too_many_arguments)]
    fn record(
        &self,
        admission: &Admission,
        status: u16,
        error: Option<&str>,
        response: Option<&[u8]>,
        response_sha256: Option<&str>,
        cache_ttl_s: f64,
        upstream: usize,
        failovers: Vec<String>,
    ) -> PyResult<u64> {
        let out = RecordInput {
            status,
            error,
            response,
            response_sha256,
            cache_ttl: Duration::from_secs_f64(cache_ttl_s.max(0.0)),
            upstream,
            failovers: &failovers,
        };
        self.0.record(&admission.inner, &out).map_err(audit_err)
    }

    /// Appends a control or replica event given as a JSON object.
    fn event(&self, fields_json: &[u8]) -> PyResult<u64> {
        let fields: serde_json::Map<String, serde_json::Value> =
            serde_json::from_slice(fields_json)
                .map_err(|e| PyValueError::new_err(e.to_string()))?;
        self.0.append(fields).map_err(audit_err)
    }

    fn fence(&self, active: Vec<(u64, u64, u64)>) -> usize {
        self.0
            .fence(active.into_iter().map(versions_from).collect())
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

    /// This replica's request metrics as JSON, for shipping with its heartbeat.
    fn metrics_json<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        let snapshot = self.0.metrics().snapshot();
        let bytes =
            serde_json::to_vec(&snapshot).map_err(|e| PyValueError::new_err(e.to_string()))?;
        Ok(PyBytes::new(py, &bytes))
    }

    fn cache_stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = self.0.cache().stats();
        let d = PyDict::new(py);
        d.set_item("entries", s.entries)?;
        d.set_item("bytes", s.bytes)?;
        d.set_item("hits", s.hits)?;
        d.set_item("misses", s.misses)?;
        d.set_item("inserts", s.inserts)?;
        d.set_item("evictions", s.evictions)?;
        d.set_item("expired", s.expired)?;
        d.set_item("purged", s.purged)?;
        Ok(d)
    }
}
