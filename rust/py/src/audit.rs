//! Reading, verifying and proving audit chains.

use std::path::Path;
use std::time::Duration;

use gatewayd_core::audit::{self, base64_hash};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList};
use serde::Deserialize;

use crate::errors::{AuditError, ChainCorruptError};

/// A corrupt chain is a `ChainCorruptError`, so a worker can tell a chain to leave alone
/// from a disk or permission failure (an `AuditError`).
pub fn audit_err(e: audit::AuditError) -> PyErr {
    match e {
        audit::AuditError::Corrupt(_) => ChainCorruptError::new_err(e.to_string()),
        e => AuditError::new_err(e.to_string()),
    }
}

fn broken(e: impl ToString) -> PyErr {
    ChainCorruptError::new_err(e.to_string())
}

fn hashes<'py>(py: Python<'py>, hashes: &[audit::Hash]) -> PyResult<Bound<'py, PyList>> {
    PyList::new(py, hashes.iter().map(base64_hash))
}

/// Verifies one replica's chain and its checkpoint notes' roots; returns what it covered
/// and every problem found (`problems`, one line each, empty for an intact chain). Note
/// signatures are the caller's to check: `checkpoints` lists (path, size, root check), the
/// root check being "matches", "retired", "differs" or "not checked".
#[pyfunction]
pub fn verify_chain<'py>(py: Python<'py>, root: &str, chain: &str) -> PyResult<Bound<'py, PyDict>> {
    let report = py.detach(|| audit::check_chain(Path::new(root), chain));
    let d = PyDict::new(py);
    d.set_item("records", report.records)?;
    d.set_item("segments", report.segments)?;
    d.set_item("first_segment", report.first_segment)?;
    d.set_item("first_seq", report.first_seq)?;
    d.set_item("head_seq", report.head_seq)?;
    d.set_item("head_hash", hex::encode(report.head_hash))?;
    d.set_item("root", base64_hash(&report.root))?;
    d.set_item("tail_bytes", report.tail_bytes)?;
    let notes: Vec<(String, u64, &str)> = report
        .checkpoints
        .iter()
        .map(|note| {
            let root = match note.root {
                audit::RootCheck::Matches => "matches",
                audit::RootCheck::Retired => "retired",
                audit::RootCheck::Differs => "differs",
                audit::RootCheck::NotChecked => "not checked",
            };
            (note.path.display().to_string(), note.size, root)
        })
        .collect();
    d.set_item("checkpoints", notes)?;
    let problems: Vec<String> = report.problems.iter().map(ToString::to_string).collect();
    d.set_item("problems", problems)?;
    Ok(d)
}

/// Iterates one chain's record payloads (canonical JSON bytes), verifying as it reads: a
/// broken chain raises ValueError at the first bad record. `from_seq` starts at the segment
/// holding that record; `ts_from` (inclusive) and `ts_to` (exclusive) filter on `ts`, given
/// in the records' own form (`2025-01-31T12:00:00.000000Z`), which sorts as text.
#[pyclass(module = "gatewayd._core")]
pub struct AuditReader {
    records: audit::RecordReader,
    ts_from: Option<String>,
    ts_to: Option<String>,
}

#[derive(Deserialize)]
struct Stamp<'a> {
    ts: &'a str,
}

#[pymethods]
impl AuditReader {
    #[new]
    #[pyo3(signature = (root, chain, from_seq=0, ts_from=None, ts_to=None))]
    fn new(
        root: &str,
        chain: &str,
        from_seq: u64,
        ts_from: Option<String>,
        ts_to: Option<String>,
    ) -> PyResult<Self> {
        let records =
            audit::RecordReader::open_at(Path::new(root), chain, from_seq).map_err(broken)?;
        Ok(AuditReader {
            records,
            ts_from,
            ts_to,
        })
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__<'py>(&mut self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyBytes>>> {
        for record in self.records.by_ref() {
            let record = record.map_err(broken)?;
            if self.ts_from.is_some() || self.ts_to.is_some() {
                let stamp: Stamp = serde_json::from_slice(&record.payload).map_err(broken)?;
                let after_start = self.ts_from.as_deref().is_none_or(|from| stamp.ts >= from);
                let before_end = self.ts_to.as_deref().is_none_or(|to| stamp.ts < to);
                if !(after_start && before_end) {
                    continue;
                }
            }
            return Ok(Some(PyBytes::new(py, &record.payload)));
        }
        Ok(None)
    }
}

#[pyfunction]
pub fn list_chains(root: &str) -> PyResult<Vec<String>> {
    audit::list_chains(Path::new(root)).map_err(|e| AuditError::new_err(e.to_string()))
}

/// (origin, size, base64 root) of a checkpoint note; signatures are not checked here.
#[pyfunction]
pub fn parse_checkpoint(note: &str) -> PyResult<(String, u64, String)> {
    let checkpoint = audit::Checkpoint::parse_note(note).map_err(PyValueError::new_err)?;
    Ok((
        checkpoint.origin,
        checkpoint.size,
        base64_hash(&checkpoint.root),
    ))
}

/// Inclusion proof of record `seq` in the tree of the chain's first `size` records.
#[pyfunction]
pub fn prove_inclusion<'py>(
    py: Python<'py>,
    root: &str,
    chain: &str,
    seq: u64,
    size: u64,
) -> PyResult<Bound<'py, PyDict>> {
    let proof = py
        .detach(|| audit::prove_inclusion(Path::new(root), chain, seq, size))
        .map_err(broken)?;
    let d = PyDict::new(py);
    d.set_item("seq", proof.seq)?;
    d.set_item("size", proof.size)?;
    d.set_item("record", PyBytes::new(py, &proof.record))?;
    d.set_item("leaf", base64_hash(&proof.leaf))?;
    d.set_item("hashes", hashes(py, &proof.hashes)?)?;
    d.set_item("root", base64_hash(&proof.root))?;
    Ok(d)
}

/// Consistency proof from the chain's first `old_size` records to its first `new_size`.
#[pyfunction]
pub fn prove_consistency<'py>(
    py: Python<'py>,
    root: &str,
    chain: &str,
    old_size: u64,
    new_size: u64,
) -> PyResult<Bound<'py, PyDict>> {
    let proof = py
        .detach(|| audit::prove_consistency(Path::new(root), chain, old_size, new_size))
        .map_err(broken)?;
    let d = PyDict::new(py);
    d.set_item("old_size", proof.old_size)?;
    d.set_item("new_size", proof.new_size)?;
    d.set_item("old_root", base64_hash(&proof.old_root))?;
    d.set_item("new_root", base64_hash(&proof.new_root))?;
    d.set_item("hashes", hashes(py, &proof.hashes)?)?;
    Ok(d)
}

/// The fsync policy named in the runtime config.
pub fn sync_policy(name: &str, interval_ms: u64) -> PyResult<audit::SyncPolicy> {
    audit::SyncPolicy::from_name(name, Duration::from_millis(interval_ms)).ok_or_else(|| {
        PyValueError::new_err(format!(
            "unknown fsync policy {name:?}: expected one of {}",
            audit::SyncPolicy::NAMES.join(", ")
        ))
    })
}

/// (name, interval in ms) of a policy, as the runtime config spells it.
pub fn sync_policy_name(policy: audit::SyncPolicy) -> (&'static str, u64) {
    match policy {
        audit::SyncPolicy::Interval(every) => (policy.name(), every.as_millis() as u64),
        other => (other.name(), 0),
    }
}

/// What opening the chain found: whether it was created, a torn tail that was cut, and the
/// checkpoint it was re-verified against.
pub fn open_report<'py>(
    py: Python<'py>,
    report: &audit::OpenReport,
) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("created", report.created)?;
    let torn = report.torn_tail.as_ref().map(|torn| {
        (
            torn.segment.display().to_string(),
            torn.offset,
            torn.bytes_cut,
        )
    });
    d.set_item("torn_tail", torn)?;
    d.set_item("checkpoint", report.checkpoint)?;
    Ok(d)
}

/// A retention decision, already recorded in the chain; see `Engine.audit_plan_retention`.
#[pyclass(frozen, module = "gatewayd._core")]
pub struct RetentionPlan(pub audit::RetentionPlan);

#[pymethods]
impl RetentionPlan {
    #[getter]
    fn first_segment(&self) -> u64 {
        self.0.first_segment
    }
    #[getter]
    fn first_seq(&self) -> u64 {
        self.0.first_seq
    }
    #[getter]
    fn segments(&self) -> u64 {
        self.0.segments
    }
    #[getter]
    fn bytes(&self) -> u64 {
        self.0.bytes
    }
    #[getter]
    fn record_seq(&self) -> u64 {
        self.0.record_seq
    }
}

/// The limits of the static config; zero means no limit.
pub fn retention_policy(max_age_s: f64, max_bytes: u64) -> audit::RetentionPolicy {
    audit::RetentionPolicy {
        max_age: (max_age_s > 0.0).then(|| Duration::from_secs_f64(max_age_s)),
        max_bytes: (max_bytes > 0).then_some(max_bytes),
    }
}
