//! `gatewayd._core`: the thin PyO3 layer over `gatewayd-core`. It converts arguments and
//! results and nothing else; all behaviour lives in the core crate and its tests.

mod audit;
mod documents;
mod engine;

use pyo3::prelude::*;

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<documents::Policy>()?;
    m.add_class::<documents::Routing>()?;
    m.add_class::<engine::Admission>()?;
    m.add_class::<engine::Engine>()?;
    m.add_class::<audit::AuditReader>()?;
    m.add_class::<audit::RetentionPlan>()?;
    m.add_function(wrap_pyfunction!(audit::verify_chain, m)?)?;
    m.add_function(wrap_pyfunction!(audit::list_chains, m)?)?;
    m.add_function(wrap_pyfunction!(audit::parse_checkpoint, m)?)?;
    m.add_function(wrap_pyfunction!(audit::prove_inclusion, m)?)?;
    m.add_function(wrap_pyfunction!(audit::prove_consistency, m)?)?;
    Ok(())
}
