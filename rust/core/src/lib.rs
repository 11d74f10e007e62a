pub mod audit;
pub mod cache;
pub mod digest;
pub mod gateway;
pub mod metrics;
pub mod policy;
pub mod request;
pub mod routing;
pub mod usage;

/// The hash map of per-request lookups (metrics series, prices, usage meter): aHash instead
/// of SipHash, a few times faster on short keys and as randomly seeded against collisions.
pub type FastMap<K, V> = std::collections::HashMap<K, V, ahash::RandomState>;

/// A process-unique id for each compiled document (policy, routing), so state keyed by a
/// document (the admission memo) never mistakes one compilation for another, even when
/// two carry the same version number (as in tests, or after a store was re-seeded).
pub(crate) fn compiled_id() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}
#[cfg(test)]
mod testing;
pub mod translate;
