//! Compiled documents: policy and routing versions, each knowing its version number, so a
//! request's versions come from what actually serves it.

use gatewayd_core::{policy, routing};
use pyo3::prelude::*;

use crate::errors::CompileError;

/// A compiled policy version.
#[pyclass(frozen, module = "gatewayd._core")]
pub struct Policy {
    pub compiled: policy::Policy,
    #[pyo3(get)]
    pub version: u64,
}

#[pymethods]
impl Policy {
    /// Raises CompileError naming the field on a document that does not compile.
    #[new]
    fn new(doc_json: &[u8], version: u64) -> PyResult<Self> {
        let compiled =
            policy::Policy::compile(doc_json).map_err(|e| CompileError::new_err(e.to_string()))?;
        Ok(Policy { compiled, version })
    }

    #[getter]
    fn header_names(&self) -> Vec<String> {
        self.compiled.header_names().to_vec()
    }

    #[getter]
    fn rule_count(&self) -> usize {
        self.compiled.rule_count()
    }
}

/// A compiled routing version, checked against the configured (name, kind) providers.
#[pyclass(frozen, module = "gatewayd._core")]
pub struct Routing {
    pub compiled: routing::Routing,
    #[pyo3(get)]
    pub version: u64,
}

#[pymethods]
impl Routing {
    #[new]
    fn new(doc_json: &[u8], version: u64, providers: Vec<(String, String)>) -> PyResult<Self> {
        let compiled = routing::Routing::compile(doc_json, &providers)
            .map_err(|e| CompileError::new_err(e.to_string()))?;
        Ok(Routing { compiled, version })
    }

    #[getter]
    fn models(&self) -> Vec<String> {
        self.compiled.models().to_vec()
    }
}
