//! A stream's translation between the OpenAI and Anthropic protocols, chunk by chunk.

use gatewayd_core::translate::StreamTranslation;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::errors::StreamTranslationError;

/// One stream's translation: `feed` each upstream chunk, send what it returns (empty
/// while an event is incomplete or has no counterpart, like a ping).
#[pyclass(module = "gatewayd._core")]
pub struct StreamTranslator {
    inner: StreamTranslation,
    out: Vec<u8>,
}

#[pymethods]
impl StreamTranslator {
    #[new]
    #[pyo3(signature = (*, from_anthropic, include_usage=false))]
    fn new(from_anthropic: bool, include_usage: bool) -> StreamTranslator {
        StreamTranslator {
            inner: StreamTranslation::new(from_anthropic, include_usage),
            out: Vec::with_capacity(512),
        }
    }

    /// The caller's events for what `chunk` completes; raises StreamTranslationError on
    /// an event it cannot read or translate.
    fn feed<'py>(&mut self, py: Python<'py>, chunk: &[u8]) -> PyResult<Bound<'py, PyBytes>> {
        self.out.clear();
        self.inner
            .feed(chunk, &mut self.out)
            .map_err(|e| StreamTranslationError::new_err(e.to_string()))?;
        Ok(PyBytes::new(py, &self.out))
    }
}
