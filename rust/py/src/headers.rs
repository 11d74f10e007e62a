//! The request-header scan the pipeline starts with (`gatewayd_core::request::headers`).

use gatewayd_core::request::headers::{self, latin1_into};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyTuple};

/// Scans request headers for what the pipeline acts on; made once with the forwarded
/// headers that change a provider's answer.
#[pyclass(frozen, module = "gatewayd._core")]
pub struct HeaderScanner {
    answer_changing: Vec<Vec<u8>>,
}

#[pymethods]
impl HeaderScanner {
    #[new]
    fn new(answer_changing: Vec<Vec<u8>>) -> HeaderScanner {
        HeaderScanner { answer_changing }
    }

    /// What `headers` (the ASGI scope's (name, value) bytes pairs) say, in one pass.
    fn scan(&self, py: Python<'_>, headers: &Bound<'_, PyAny>) -> PyResult<Seen> {
        let pairs = header_pairs(headers)?;
        let seen = headers::scan(
            pairs
                .iter()
                .map(|(name, value)| (name.as_bytes(), value.as_bytes())),
            &self.answer_changing,
        );
        let bytes = |b: &[u8]| PyBytes::new(py, b).unbind();
        Ok(Seen {
            credential: match seen.credential {
                Some((name, value)) => {
                    Some(PyTuple::new(py, [bytes(name), bytes(value)])?.unbind())
                }
                None => None,
            },
            request_id: seen.request_id.map(str::to_owned),
            content_length: seen.content_length,
            cache: seen.cache.as_deref().map(bytes),
            vary: seen.vary,
            transfer_encoding: match seen.transfer_encoding {
                Some(values) => Some(PyList::new(py, values.into_iter().map(bytes))?.unbind()),
                None => None,
            },
            sticky: seen.sticky.map(|value| {
                let mut text = String::new();
                latin1_into(&mut text, value);
                text
            }),
        })
    }
}

/// ASGI headers as (name, value) bytes: read item by item from the list of 2-tuples servers
/// give (a third of the generic conversion's cost), any other sequence of pairs converted.
pub fn header_pairs<'py>(
    headers: &Bound<'py, PyAny>,
) -> PyResult<Vec<(Bound<'py, PyBytes>, Bound<'py, PyBytes>)>> {
    let Ok(list) = headers.cast::<PyList>() else {
        return headers.extract();
    };
    let mut pairs = Vec::with_capacity(list.len());
    for item in list.iter() {
        match item.cast::<PyTuple>() {
            Ok(pair) if pair.len() == 2 => {
                let name = pair.get_item(0)?.cast_into::<PyBytes>()?;
                let value = pair.get_item(1)?.cast_into::<PyBytes>()?;
                pairs.push((name, value));
            }
            _ => pairs.push(item.extract()?),
        }
    }
    Ok(pairs)
}

/// What a request's headers say (see `HeaderScanner.scan`).
#[pyclass(frozen, get_all, module = "gatewayd._core")]
pub struct Seen {
    /// (name, value) of the first `authorization` or `x-api-key` header.
    credential: Option<Py<PyTuple>>,
    /// The caller's sane `x-request-id`, if any.
    request_id: Option<String>,
    content_length: Option<u64>,
    /// `x-gatewayd-cache`, lowercased.
    cache: Option<Py<PyBytes>>,
    /// The answer-changing forwarded headers, `name:value\n` each: part of the cache key.
    vary: String,
    /// Every `transfer-encoding` value, when any was sent.
    transfer_encoding: Option<Py<PyList>>,
    /// `x-gatewayd-sticky`, for canary assignment.
    sticky: Option<String>,
}

#[pymethods]
impl Seen {
    /// The caller's key as sent (`Bearer` and whitespace stripped), when a credential was.
    fn key(&self, py: Python<'_>) -> PyResult<Option<String>> {
        let Some(credential) = &self.credential else {
            return Ok(None);
        };
        let (name, value): (Bound<'_, PyBytes>, Bound<'_, PyBytes>) =
            credential.bind(py).extract()?;
        let seen = headers::Seen {
            credential: Some((name.as_bytes(), value.as_bytes())),
            ..headers::Seen::default()
        };
        Ok(seen.key())
    }
}
