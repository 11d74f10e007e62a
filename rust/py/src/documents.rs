//! Compiled documents: policy and routing versions.

use gatewayd_core::{policy, routing};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

/// A compiled policy version.
#[pyclass(frozen, module = "gatewayd._core")]
pub struct Policy(pub policy::Policy);

#[pymethods]
impl Policy {
    #[new]
    fn new(doc_json: &[u8]) -> PyResult<Self> {
        policy::Policy::compile(doc_json)
            .map(Policy)
            .map_err(|e| PyValueError::new_err(e.to_string()))
    }

    #[getter]
    fn header_names(&self) -> Vec<String> {
        self.0.header_names().to_vec()
    }

    #[getter]
    fn rule_count(&self) -> usize {
        self.0.rule_count()
    }
}

/// A compiled routing version.
#[pyclass(frozen, module = "gatewayd._core")]
pub struct Routing(pub routing::Routing);

#[pymethods]
impl Routing {
    #[new]
    fn new(doc_json: &[u8], providers: Vec<(String, String)>) -> PyResult<Self> {
        routing::Routing::compile(doc_json, &providers)
            .map(Routing)
            .map_err(|e| PyValueError::new_err(e.to_string()))
    }

    #[getter]
    fn models(&self) -> Vec<String> {
        self.0.models().to_vec()
    }
}
