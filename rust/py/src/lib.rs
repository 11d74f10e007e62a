//! `gatewayd._core`: the thin PyO3 layer over `gatewayd-core`. It converts arguments and
//! results and nothing else; all behaviour lives in the core crate and its tests.

mod admission;
mod audit;
mod documents;
mod engine;
mod errors;
mod headers;
mod translate;

use pyo3::prelude::*;

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    errors::register(m)?;
    m.add_class::<documents::Policy>()?;
    m.add_class::<documents::Routing>()?;
    m.add_class::<admission::Admission>()?;
    m.add_class::<admission::CacheMode>()?;
    m.add_class::<admission::Fallback>()?;
    m.add_class::<admission::Versions>()?;
    m.add_class::<engine::Engine>()?;
    m.add_class::<headers::HeaderScanner>()?;
    m.add_class::<headers::Seen>()?;
    m.add_class::<headers::KeyTable>()?;
    m.add_class::<translate::StreamTranslator>()?;
    m.add("LATENCY_BUCKETS", engine::latency_buckets())?;
    m.add("STICKY_BUCKETS", gatewayd_core::request::sticky::BUCKETS)?;
    m.add_function(wrap_pyfunction!(engine::sticky_bucket, m)?)?;
    m.add(
        "FSYNC_POLICIES",
        gatewayd_core::audit::SyncPolicy::NAMES.to_vec(),
    )?;
    m.add_class::<audit::AuditReader>()?;
    m.add_class::<audit::RetentionPlan>()?;
    m.add_function(wrap_pyfunction!(audit::verify_chain, m)?)?;
    m.add_function(wrap_pyfunction!(audit::list_chains, m)?)?;
    m.add_function(wrap_pyfunction!(audit::parse_checkpoint, m)?)?;
    m.add_function(wrap_pyfunction!(audit::prove_inclusion, m)?)?;
    m.add_function(wrap_pyfunction!(audit::prove_consistency, m)?)?;
    Ok(())
}
