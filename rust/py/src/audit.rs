//! Reading and verifying audit chains.

use std::path::Path;

use gatewayd_core::audit;
use pyo3::exceptions::{PyOSError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};

pub fn audit_err(e: audit::AuditError) -> PyErr {
    PyOSError::new_err(e.to_string())
}

/// Verifies one replica's chain; returns counts or raises ValueError naming the first break.
#[pyfunction]
pub fn verify_chain<'py>(py: Python<'py>, root: &str, chain: &str) -> PyResult<Bound<'py, PyDict>> {
    let report = py
        .detach(|| audit::verify_chain(Path::new(root), chain))
        .map_err(|e| PyValueError::new_err(e.to_string()))?;
    let d = PyDict::new(py);
    d.set_item("records", report.records)?;
    d.set_item("segments", report.segments)?;
    d.set_item("head_seq", report.head_seq)?;
    d.set_item("head_hash", hex::encode(report.head_hash))?;
    Ok(d)
}

/// Iterates one chain's record payloads (canonical JSON bytes), verifying as it reads:
/// a broken chain raises ValueError at the first bad record.
#[pyclass(module = "gatewayd._core")]
pub struct AuditReader(audit::RecordReader);

#[pymethods]
impl AuditReader {
    #[new]
    fn new(root: &str, chain: &str) -> Self {
        AuditReader(audit::read_records(Path::new(root), chain))
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__<'py>(&mut self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyBytes>>> {
        match self.0.next() {
            None => Ok(None),
            Some(Ok(record)) => Ok(Some(PyBytes::new(py, &record.payload))),
            Some(Err(e)) => Err(PyValueError::new_err(e.to_string())),
        }
    }
}

#[pyfunction]
pub fn list_chains(root: &str) -> PyResult<Vec<String>> {
    audit::list_chains(Path::new(root)).map_err(|e| PyOSError::new_err(e.to_string()))
}
