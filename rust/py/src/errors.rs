//! The extension's own exception classes, so Python code catches exactly what it means to:
//! `GatewaydError` is the base of every error gatewayd raises on purpose (the Python
//! package derives its own errors from it), never a bare `OSError` or `ValueError`.

use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;

create_exception!(
    _core,
    GatewaydError,
    PyException,
    "Base of every error gatewayd raises on purpose; the CLI and admin API catch it once."
);
create_exception!(
    _core,
    CompileError,
    GatewaydError,
    "A policy or routing document that does not compile; the message names the field."
);
create_exception!(
    _core,
    AuditError,
    GatewaydError,
    "The audit chain could not be opened, written or read."
);
create_exception!(
    _core,
    ChainCorruptError,
    AuditError,
    "A chain whose stored bytes are not a valid chain: leave it alone for forensics."
);

create_exception!(
    _core,
    StreamTranslationError,
    GatewaydError,
    "An upstream stream event that cannot be read or translated into the caller's protocol."
);

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("GatewaydError", py.get_type::<GatewaydError>())?;
    m.add("CompileError", py.get_type::<CompileError>())?;
    m.add("AuditError", py.get_type::<AuditError>())?;
    m.add("ChainCorruptError", py.get_type::<ChainCorruptError>())?;
    m.add(
        "StreamTranslationError",
        py.get_type::<StreamTranslationError>(),
    )?;
    Ok(())
}
