//! The request phases: `Engine.admit` and `Engine.record`, plus cache and audit controls.

use std::path::Path;
use std::time::Duration;

use gatewayd_core::audit::{AuditOptions, AuditWriter, SyncPolicy};
use gatewayd_core::cache::{ResponseCache, Versions};
use gatewayd_core::gateway::{self, AdmitInput, CacheMode, Gateway, RecordInput, RequestContext};
use gatewayd_core::request::Api;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};

use crate::audit::audit_err;
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
        self.inner.cached.as_ref().map_or("", |c| c.content_type.as_str())
    }
    #[getter]
    fn versions(&self) -> (u64, u64, u64) {
        let v = self.inner.versions;
        (v.policy, v.routing, v.config)
    }
}

/// One replica's hot path: response cache and audit chain.
#[pyclass(frozen, module = "gatewayd._core")]
pub struct Engine(Gateway);

fn api_from(name: &str) -> PyResult<Api> {
    Api::from_name(name).ok_or_else(|| PyValueError::new_err(format!("unknown api {name:?}")))
}

fn versions_from((policy, routing, config): (u64, u64, u64)) -> Versions {
    Versions { policy, routing, config }
}

#[pymethods]
impl Engine {
    #[new]
    fn new(cache_entries: usize, cache_bytes: usize, audit_dir: &str, chain: &str, segment_bytes: u64) -> PyResult<Self> {
        let opts = AuditOptions { segment_bytes, sync: SyncPolicy::Never };
        let (writer, _report) = AuditWriter::open(Path::new(audit_dir), chain, opts).map_err(audit_err)?;
        Ok(Engine(Gateway::new(ResponseCache::new(cache_entries, cache_bytes), writer)))
    }

    #[allow(clippy::too_many_arguments)]
    fn admit(
        &self,
        py: Python<'_>,
        policy: &Policy,
        policy_version: u64,
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
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let cache = match cache_mode {
            0 => CacheMode::Off,
            1 => CacheMode::Deterministic,
            _ => CacheMode::Forced,
        };
        let versions = Versions { policy: policy_version, routing: routing_version, config: config_version };
        let input = AdmitInput {
            ctx: RequestContext { api: api_from(api)?, tenant, request_id, versions },
            policy: &policy.0,
            routing: &routing.0,
            headers: &headers,
            body,
            cache,
        };
        let inner = self.0.admit(&input);
        let body = inner.body.as_ref().map(|b| PyBytes::new(py, b).unbind());
        let cached_body = inner.cached.as_ref().map(|c| PyBytes::new(py, &c.body).unbind());
        Ok(Admission { inner, body, cached_body })
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
        let ctx = RequestContext { api: api_from(api)?, tenant, request_id, versions: versions_from(versions) };
        Ok(Admission { inner: self.0.reject(&ctx, status, code, message), body: None, cached_body: None })
    }

    #[pyo3(signature = (admission, status, error, response, response_sha256, cache_ttl_s))]
    fn record(
        &self,
        admission: &Admission,
        status: u16,
        error: Option<&str>,
        response: Option<&[u8]>,
        response_sha256: Option<&str>,
        cache_ttl_s: f64,
    ) -> PyResult<u64> {
        let out = RecordInput {
            status,
            error,
            response,
            response_sha256,
            cache_ttl: Duration::from_secs_f64(cache_ttl_s.max(0.0)),
        };
        self.0.record(&admission.inner, &out).map_err(audit_err)
    }

    /// Appends a control or replica event given as a JSON object.
    fn event(&self, fields_json: &[u8]) -> PyResult<u64> {
        let fields: serde_json::Map<String, serde_json::Value> =
            serde_json::from_slice(fields_json).map_err(|e| PyValueError::new_err(e.to_string()))?;
        self.0.append(fields).map_err(audit_err)
    }

    fn fence(&self, active: Vec<(u64, u64, u64)>) -> usize {
        self.0.fence(active.into_iter().map(versions_from).collect())
    }

    fn set_audit_sync(&self, policy: &str, interval_ms: u64) -> PyResult<()> {
        let policy = match policy {
            "never" => SyncPolicy::Never,
            "always" => SyncPolicy::Always,
            "interval" => SyncPolicy::Interval(Duration::from_millis(interval_ms)),
            other => return Err(PyValueError::new_err(format!("unknown fsync policy {other:?}"))),
        };
        self.0.set_audit_sync(policy);
        Ok(())
    }

    fn sync_audit(&self, py: Python<'_>) -> PyResult<()> {
        py.detach(|| self.0.sync_audit()).map_err(audit_err)
    }

    fn audit_head(&self) -> (u64, String) {
        let (seq, hash) = self.0.audit_head();
        (seq, hex::encode(hash))
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
