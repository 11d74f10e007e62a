//! The request intake the pipeline starts with: one pass over the headers
//! (`gatewayd_core::request::headers`), the caller their credential names
//! (`gatewayd_core::request::keys`) and the request's id (`gatewayd_core::request::ids`).

use std::sync::Mutex;

use gatewayd_core::request::headers::{self, latin1_into};
use gatewayd_core::request::{ids, keys};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyTuple};

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

    /// What `headers` (the ASGI scope's (name, value) bytes pairs) say, in one pass, with
    /// the caller `keys` knows their credential by.
    fn scan(&self, py: Python<'_>, headers: &Bound<'_, PyAny>, keys: &KeyTable) -> PyResult<Seen> {
        let pairs = header_pairs(headers)?;
        let seen = headers::scan(
            pairs
                .iter()
                .map(|(name, value)| (name.as_bytes(), value.as_bytes())),
            &self.answer_changing,
        );
        let caller = match seen.credential {
            Some((name, value)) => keys.caller(py, name, value),
            None => None,
        };
        // The credential header's own objects (no copy): its key is read only for a canary.
        let credential = seen.credential.and_then(|(_, value)| {
            pairs
                .iter()
                .find(|(_, v)| v.as_bytes().as_ptr() == value.as_ptr())
                .map(|(n, v)| (n.clone().unbind(), v.clone().unbind()))
        });
        let bytes = |b: &[u8]| PyBytes::new(py, b).unbind();
        Ok(Seen {
            caller,
            credential,
            request_id: seen.request_id.map_or_else(ids::fresh, str::to_owned),
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

/// The callers by key digest (`gatewayd_core::request::keys::KeyTable`), each a Python
/// object the table hands back as it was given. Replaced whole when keys change: the
/// values remembered as valid go with the old table, so a revoked key is never recalled.
#[pyclass(frozen, module = "gatewayd._core")]
pub struct KeyTable(Mutex<keys::KeyTable<Py<PyAny>>>);

#[pymethods]
impl KeyTable {
    #[new]
    fn new(callers: &Bound<'_, PyDict>) -> PyResult<KeyTable> {
        Ok(KeyTable(Mutex::new(table_of(callers)?)))
    }

    /// Serves `callers` (32-byte SHA-256 digest of the key -> caller) from now on.
    fn replace(&self, callers: &Bound<'_, PyDict>) -> PyResult<()> {
        let table = table_of(callers)?;
        *self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = table;
        Ok(())
    }

    /// The caller one credential header (`authorization` or `x-api-key`) names, or None.
    fn caller_for(&self, py: Python<'_>, name: &[u8], value: &[u8]) -> Option<Py<PyAny>> {
        self.caller(py, name, value)
    }
}

impl KeyTable {
    fn caller(&self, py: Python<'_>, name: &[u8], value: &[u8]) -> Option<Py<PyAny>> {
        let mut table = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        table.caller(name, value).map(|caller| caller.clone_ref(py))
    }
}

fn table_of(callers: &Bound<'_, PyDict>) -> PyResult<keys::KeyTable<Py<PyAny>>> {
    let mut entries = Vec::with_capacity(callers.len());
    for (digest, caller) in callers.iter() {
        let digest: [u8; 32] = digest
            .extract::<Vec<u8>>()?
            .try_into()
            .map_err(|d: Vec<u8>| {
                pyo3::exceptions::PyValueError::new_err(format!(
                    "a key digest is 32 bytes (SHA-256), not {}",
                    d.len()
                ))
            })?;
        entries.push((digest, caller.unbind()));
    }
    Ok(keys::KeyTable::new(entries))
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
#[pyclass(frozen, module = "gatewayd._core")]
pub struct Seen {
    /// Who the first `authorization` or `x-api-key` header names; None: no such header,
    /// or an unknown key.
    #[pyo3(get)]
    caller: Option<Py<PyAny>>,
    /// That header's (name, value).
    credential: Option<(Py<PyBytes>, Py<PyBytes>)>,
    /// The caller's sane `x-request-id`, else a fresh one.
    #[pyo3(get)]
    request_id: String,
    #[pyo3(get)]
    content_length: Option<u64>,
    /// `x-gatewayd-cache`, lowercased.
    #[pyo3(get)]
    cache: Option<Py<PyBytes>>,
    /// The answer-changing forwarded headers, `name:value\n` each: part of the cache key.
    #[pyo3(get)]
    vary: String,
    /// Every `transfer-encoding` value, when any was sent.
    #[pyo3(get)]
    transfer_encoding: Option<Py<PyList>>,
    /// `x-gatewayd-sticky`, for canary assignment.
    #[pyo3(get)]
    sticky: Option<String>,
}

#[pymethods]
impl Seen {
    /// The key as sent in the credential header (`Bearer` and whitespace stripped), for
    /// the sticky bucket of a caller who names no other id; read only during a canary.
    #[getter]
    fn key(&self, py: Python<'_>) -> Option<String> {
        let (name, value) = self.credential.as_ref()?;
        let seen = headers::Seen {
            credential: Some((name.as_bytes(py), value.as_bytes(py))),
            ..headers::Seen::default()
        };
        seen.key()
    }
}
