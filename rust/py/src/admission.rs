//! What crosses back from `Engine.admit`: typed, with named fields.

use gatewayd_core::cache::Versions as CoreVersions;
use gatewayd_core::gateway::{self, CacheMode as CoreCacheMode};
use gatewayd_core::FastMap as HashMap;
use std::sync::Mutex;

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyList, PyTuple};

/// How one request may use the response cache, decided from the config and the caller's
/// `x-gatewayd-cache` header.
#[pyclass(frozen, eq, eq_int, module = "gatewayd._core")]
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum CacheMode {
    #[pyo3(name = "OFF")]
    Off,
    /// Only deterministic requests: temperature 0, and embeddings.
    #[pyo3(name = "DETERMINISTIC")]
    Deterministic,
    /// The caller asked for caching explicitly.
    #[pyo3(name = "FORCED")]
    Forced,
}

impl From<CacheMode> for CoreCacheMode {
    fn from(mode: CacheMode) -> CoreCacheMode {
        match mode {
            CacheMode::Off => CoreCacheMode::Off,
            CacheMode::Deterministic => CoreCacheMode::Deterministic,
            CacheMode::Forced => CoreCacheMode::Forced,
        }
    }
}

/// The policy, routing and config versions a request was served under (R3), and which
/// domains were served from a candidate position (`candidates`: policy 1, routing 2, config 4).
#[pyclass(frozen, eq, hash, module = "gatewayd._core")]
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Versions(pub CoreVersions);

#[pymethods]
impl Versions {
    #[new]
    #[pyo3(signature = (policy, routing, config, candidates=0))]
    fn new(policy: u64, routing: u64, config: u64, candidates: u8) -> Versions {
        Versions(CoreVersions::new(policy, routing, config).with_candidates(candidates))
    }
    #[getter]
    fn candidates(&self) -> u8 {
        self.0.candidates
    }
    /// (domain, "current" | "candidate") for policy, routing and config.
    #[getter]
    fn positions(&self) -> Vec<(&'static str, &'static str)> {
        self.0.positions().to_vec()
    }
    #[getter]
    fn policy(&self) -> u64 {
        self.0.policy
    }
    #[getter]
    fn routing(&self) -> u64 {
        self.0.routing
    }
    #[getter]
    fn config(&self) -> u64 {
        self.0.config
    }
    fn __repr__(&self) -> String {
        let v = self.0;
        format!(
            "Versions(policy={}, routing={}, config={}, candidates={})",
            v.policy, v.routing, v.config, v.candidates
        )
    }
}

/// An upstream to try when the one before it fails the request, with the body for it.
#[pyclass(frozen, get_all, module = "gatewayd._core")]
pub struct Fallback {
    pub provider: String,
    pub model: String,
    pub body: Py<PyBytes>,
}

/// The outcome of `Engine.admit`: what to answer or where to send the request.
#[pyclass(frozen, module = "gatewayd._core")]
pub struct Admission {
    pub inner: gateway::Admission,
    pub cached_body: Option<Py<PyBytes>>,
    /// What the request is served under (its snapshot's versions for its scope and position),
    /// carried to its end (R6).
    pub served: Py<PyAny>,
}

impl Admission {
    pub fn new(py: Python<'_>, inner: gateway::Admission, served: Py<PyAny>) -> Admission {
        let cached_body = inner
            .cached
            .as_ref()
            .map(|c| PyBytes::new(py, &c.body).unbind());
        Admission {
            inner,
            cached_body,
            served,
        }
    }
}

#[pymethods]
impl Admission {
    /// What was given to `admit` as `served`: every later decision of the request reads it.
    #[getter]
    fn served(&self, py: Python<'_>) -> Py<PyAny> {
        self.served.clone_ref(py)
    }
    #[getter]
    fn request_id(&self) -> &str {
        &self.inner.request_id
    }
    #[getter]
    fn api(&self) -> &'static str {
        self.inner.api.name()
    }
    /// allow | deny | invalid | unroutable | rejected
    #[getter]
    fn verdict(&self) -> &'static str {
        self.inner.outcome.name()
    }
    /// The status to answer with when the verdict is not `allow`.
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
    /// The fallbacks, in order; built when asked (a provider failed).
    #[getter]
    fn fallbacks(&self, py: Python<'_>) -> Vec<Fallback> {
        self.inner
            .fallbacks
            .iter()
            .map(|a| Fallback {
                provider: a.provider.clone(),
                model: a.model.clone(),
                body: PyBytes::new(py, &a.body).unbind(),
            })
            .collect()
    }
    /// The body to send upstream; built when asked (a cache hit never asks).
    #[getter]
    fn body<'py>(&self, py: Python<'py>) -> Option<Bound<'py, PyBytes>> {
        self.inner.body.as_ref().map(|b| PyBytes::new(py, b))
    }
    /// hit | miss | bypass
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
    /// The tokens the cached answer's provider reported, (prompt, completion, cached):
    /// what this hit saved. None on a miss, or when the provider reported none.
    #[getter]
    fn cached_usage(&self) -> Option<(u64, u64, u64)> {
        let usage = self.inner.cached.as_ref()?.usage?;
        Some((usage.prompt, usage.completion, usage.cached))
    }
    #[getter]
    fn cached_content_type(&self) -> &str {
        self.inner
            .cached
            .as_ref()
            .map_or("", |c| c.content_type.as_str())
    }
    #[getter]
    fn versions(&self) -> Versions {
        Versions(self.inner.versions)
    }
    /// The answer's ASGI headers: `content_type` (None: the cached answer's, for a hit),
    /// then the ones every answer carries (R3: request id, versions, positions, cache), then
    /// `extra` ((name, value) bytes pairs).
    #[pyo3(signature = (content_type=None, extra=None))]
    fn answer_headers<'py>(
        &self,
        py: Python<'py>,
        content_type: Option<Bound<'py, PyBytes>>,
        extra: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyList>> {
        let made = HEADERS.get_or_init(py, || AnswerHeaders::new(py));
        let adm = &self.inner;
        let headers = PyList::empty(py);
        let content_type = match content_type {
            Some(given) => given,
            None => PyBytes::new(py, self.cached_content_type().as_bytes()),
        };
        headers.append(pair(py, made.content_type.bind(py), content_type.as_any())?)?;
        let id = PyBytes::new(py, adm.request_id.as_bytes());
        headers.append(pair(py, made.request_id.bind(py), id.as_any())?)?;
        made.append_versions(py, adm.versions, &headers)?;
        headers.append(made.cache_state(py, adm.cache_state()))?;
        if let Some(extra) = extra {
            for header in extra.try_iter()? {
                headers.append(header?)?;
            }
        }
        Ok(headers)
    }
}

/// The header objects answers share: names, what each cache state says, and each version
/// set's headers, made once (a replica serves a few version sets at a time).
struct AnswerHeaders {
    content_type: Py<PyBytes>,
    request_id: Py<PyBytes>,
    cache_states: Vec<(&'static str, Py<PyTuple>)>,
    by_versions: Mutex<HashMap<CoreVersions, Vec<Py<PyTuple>>>>,
}

static HEADERS: PyOnceLock<AnswerHeaders> = PyOnceLock::new();
/// Version sets whose headers are kept before starting over.
const KEPT_VERSION_SETS: usize = 64;

impl AnswerHeaders {
    fn new(py: Python<'_>) -> AnswerHeaders {
        let bytes = |text: &str| PyBytes::new(py, text.as_bytes());
        let cache_states = ["hit", "miss", "bypass"]
            .into_iter()
            .map(|state| {
                let header = PyTuple::new(py, [bytes("x-gatewayd-cache"), bytes(state)]);
                (state, header.expect("a tuple of two").unbind())
            })
            .collect();
        AnswerHeaders {
            content_type: bytes("content-type").unbind(),
            request_id: bytes("x-request-id").unbind(),
            cache_states,
            by_versions: Mutex::new(HashMap::default()),
        }
    }

    /// Appends the headers of version set `v` to `headers`, made the first time it is seen.
    fn append_versions(
        &self,
        py: Python<'_>,
        v: CoreVersions,
        headers: &Bound<'_, PyList>,
    ) -> PyResult<()> {
        let mut kept = self.by_versions.lock().unwrap_or_else(|p| p.into_inner());
        if !kept.contains_key(&v) {
            if kept.len() >= KEPT_VERSION_SETS {
                kept.clear();
            }
            let mut made = Vec::new();
            for (name, value) in gateway::version_headers(v) {
                let (name, value) = (
                    PyBytes::new(py, name.as_bytes()),
                    PyBytes::new(py, value.as_bytes()),
                );
                made.push(pair(py, name.as_any(), value.as_any())?.unbind());
            }
            kept.insert(v, made);
        }
        for header in &kept[&v] {
            headers.append(header.bind(py))?;
        }
        Ok(())
    }

    fn cache_state<'py>(&self, py: Python<'py>, state: &str) -> Bound<'py, PyTuple> {
        let (_, header) = self
            .cache_states
            .iter()
            .find(|(known, _)| *known == state)
            .expect("hit, miss or bypass");
        header.bind(py).clone()
    }
}

fn pair<'py>(
    py: Python<'py>,
    name: &Bound<'py, PyAny>,
    value: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyTuple>> {
    PyTuple::new(py, [name, value])
}
