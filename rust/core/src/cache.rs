//! Response cache keyed by the versions that produced each response (docs/ROLLBACK.md R5, R12).
//!
//! The key hashes the policy, routing and config versions together with the request, so
//! a flip makes every entry of the previous versions unreachable at once: requests served
//! under the new snapshot compute different keys. [`ResponseCache::retain_versions`] then
//! frees those entries.
//!
//! # Bounds
//!
//! The cache is bounded in entries and in bytes with a single weight budget of `max_bytes`:
//! every entry is charged `max(its size, max_bytes / max_entries)`. The charged total never
//! exceeds `max_bytes`, and since no entry is charged less than `max_bytes / max_entries`,
//! no more than `max_entries` entries fit. Small entries therefore use up the entry bound and
//! large ones the byte bound, whichever comes first.
//!
//! The budget is split evenly over up to [`MAX_SHARDS`] independently locked shards. A
//! response is cached only if its charge is at most a quarter of one shard's budget
//! ([`ResponseCache::max_entry_bytes`]), so a single large response cannot flush a shard.
//! Caches configured for fewer than four entries therefore hold nothing.

use std::cell::Cell;
use std::mem::size_of;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use quick_cache::sync::Cache;
use quick_cache::{DefaultHashBuilder, Lifecycle, OptionsBuilder, Weighter};
use sha2::{Digest, Sha256};

use crate::digest::{hex_string, sha256_hex};

/// Upper bound on the shard count: enough to keep lock contention negligible on small hosts.
pub const MAX_SHARDS: usize = 8;

/// Each shard gets at least this many entries; fewer shards are used for small caches.
const MIN_ENTRIES_PER_SHARD: usize = 32;

/// Caps the TTL so `Instant + ttl` cannot overflow on a misconfigured value.
const MAX_TTL: Duration = Duration::from_secs(365 * 24 * 3600);

/// Bytes charged per entry on top of its body and content type: the key, the shared value
/// and the body's hex digest.
const ENTRY_OVERHEAD: usize = size_of::<CacheKey>() + size_of::<CachedResponse>() + 16 + 64;

/// The versions of the three domains a response was produced under, and which of them
/// were served from a candidate position (a canary) rather than the current one.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Versions {
    pub policy: u64,
    pub routing: u64,
    pub config: u64,
    /// `CANDIDATE_POLICY | CANDIDATE_ROUTING | CANDIDATE_CONFIG` bits; 0: all current.
    pub candidates: u8,
}

pub const CANDIDATE_POLICY: u8 = 1;
pub const CANDIDATE_ROUTING: u8 = 2;
pub const CANDIDATE_CONFIG: u8 = 4;

impl Versions {
    pub const fn new(policy: u64, routing: u64, config: u64) -> Versions {
        Versions {
            policy,
            routing,
            config,
            candidates: 0,
        }
    }

    pub const fn with_candidates(self, candidates: u8) -> Versions {
        Versions { candidates, ..self }
    }

    /// "current" or "candidate" for each domain, in the order policy, routing, config.
    pub fn positions(&self) -> [(&'static str, &'static str); 3] {
        let at = |bit: u8| {
            if self.candidates & bit != 0 {
                "candidate"
            } else {
                "current"
            }
        };
        [
            ("policy", at(CANDIDATE_POLICY)),
            ("routing", at(CANDIDATE_ROUTING)),
            ("config", at(CANDIDATE_CONFIG)),
        ]
    }
}

/// SHA-256 identifying one cacheable request under one set of versions.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct CacheKey([u8; 32]);

impl CacheKey {
    /// Hashes a domain tag, then tenant, route and normalized request each prefixed by its
    /// u64 LE length (so no two different inputs encode alike), then the three versions as
    /// u64 LE and the candidate bits.
    pub fn new(
        tenant: &str,
        route: &str,
        normalized_request: &[u8],
        versions: Versions,
    ) -> CacheKey {
        let mut hasher = Sha256::new();
        hasher.update(b"gatewayd.cache.v1\0");
        for part in [tenant.as_bytes(), route.as_bytes(), normalized_request] {
            hasher.update((part.len() as u64).to_le_bytes());
            hasher.update(part);
        }
        for version in [versions.policy, versions.routing, versions.config] {
            hasher.update(version.to_le_bytes());
        }
        hasher.update([versions.candidates]);
        CacheKey(hasher.finalize().into())
    }

    pub fn to_hex(&self) -> String {
        hex_string(&self.0)
    }
}

/// A cached upstream response. Shared as `Arc` so a hit never copies the body.
#[derive(Debug)]
pub struct CachedResponse {
    pub status: u16,
    pub content_type: String,
    pub body: Vec<u8>,
    /// Hex SHA-256 of `body`, computed once at insert: every hit's audit record names it.
    pub body_sha256: String,
    pub versions: Versions,
    pub expires_at: Instant,
    /// The tokens the provider reported for this answer: what each hit saves, recorded
    /// without reading the body again.
    pub usage: Option<TokenCounts>,
}

/// Token counts in neutral terms, whatever protocol the provider spoke.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TokenCounts {
    /// Input tokens, cached ones included.
    pub prompt: u64,
    pub completion: u64,
    /// Input tokens the provider read from its prompt cache.
    pub cached: u64,
}

impl CachedResponse {
    fn size(&self) -> usize {
        self.body.len() + self.content_type.len() + ENTRY_OVERHEAD
    }
}

/// Point-in-time counters; `entries` and `bytes` are current, the others count since creation.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, serde::Serialize)]
pub struct CacheStats {
    pub entries: usize,
    /// Bytes charged against `max_bytes` (see the module docs); never more than `max_bytes`.
    pub bytes: u64,
    pub hits: u64,
    pub misses: u64,
    pub inserts: u64,
    /// Inserts refused because the response was larger than `max_entry_bytes`.
    pub refused: u64,
    /// Entries dropped to make room for new ones.
    pub evictions: u64,
    /// Entries found expired on lookup and dropped.
    pub expired: u64,
    /// Entries dropped by `retain_versions`.
    pub purged: u64,
}

/// Thread-safe, version-keyed response cache with TTL. All methods take `&self`.
pub struct ResponseCache {
    entries: Cache<CacheKey, Arc<CachedResponse>, Charge, DefaultHashBuilder, CollectEvicted>,
    charge: Charge,
    max_entry_bytes: u64,
    /// (max_entries, max_bytes) as configured.
    limits: (usize, usize),
    counters: Counters,
}

#[derive(Default)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    inserts: AtomicU64,
    refused: AtomicU64,
    evictions: AtomicU64,
    expired: AtomicU64,
    purged: AtomicU64,
}

impl ResponseCache {
    pub fn new(max_entries: usize, max_bytes: usize) -> ResponseCache {
        let shards = shard_count(max_entries);
        let shard_bytes = (max_bytes / shards) as u64;
        let min_charge = max_bytes.div_ceil(max_entries.max(1)) as u64;
        let options = OptionsBuilder::new()
            .shards(shards)
            .estimated_items_capacity(max_entries)
            // A multiple of the shard count, so the shards' budgets add up to at most max_bytes.
            .weight_capacity(shard_bytes * shards as u64)
            .build()
            .expect("weight and item capacities are set");
        let charge = Charge { min_charge };
        ResponseCache {
            entries: Cache::with_options(
                options,
                charge,
                DefaultHashBuilder::default(),
                CollectEvicted,
            ),
            charge,
            max_entry_bytes: shard_bytes / 4,
            limits: (max_entries, max_bytes),
            counters: Counters::default(),
        }
    }

    /// (max_entries, max_bytes) as configured.
    pub fn limits(&self) -> (usize, usize) {
        self.limits
    }

    /// Largest charge a single response may have to be cached.
    pub fn max_entry_bytes(&self) -> u64 {
        self.max_entry_bytes
    }

    /// Returns the live entry for `key`. An expired entry counts as a miss and is dropped.
    pub fn get(&self, key: &CacheKey) -> Option<Arc<CachedResponse>> {
        let Some(hit) = self.entries.get(key) else {
            self.counters.misses.fetch_add(1, Relaxed);
            return None;
        };
        if hit.expires_at <= Instant::now() {
            // Only drop this very entry: a fresh one may have replaced it meanwhile.
            if self
                .entries
                .remove_if(key, |live| Arc::ptr_eq(live, &hit))
                .is_some()
            {
                self.counters.expired.fetch_add(1, Relaxed);
            }
            self.counters.misses.fetch_add(1, Relaxed);
            return None;
        }
        self.counters.hits.fetch_add(1, Relaxed);
        Some(hit)
    }

    /// Caches a response for `ttl` (capped at one year). Returns false, caching nothing, if
    /// `ttl` is zero or the response is larger than [`Self::max_entry_bytes`].
    pub fn insert(
        &self,
        key: CacheKey,
        status: u16,
        content_type: &str,
        body: Vec<u8>,
        versions: Versions,
        ttl: Duration,
    ) -> bool {
        let body_sha256 = sha256_hex(&body);
        self.insert_digested(
            key,
            status,
            content_type,
            body,
            body_sha256,
            versions,
            ttl,
            None,
        )
    }

    /// [`Self::insert`] with the body's hex SHA-256 already computed by the caller, and
    /// the answer's token usage when the provider reported it.
    #[allow(clippy::too_many_arguments)]
    pub fn insert_digested(
        &self,
        key: CacheKey,
        status: u16,
        content_type: &str,
        body: Vec<u8>,
        body_sha256: String,
        versions: Versions,
        ttl: Duration,
        usage: Option<TokenCounts>,
    ) -> bool {
        let response = CachedResponse {
            status,
            content_type: content_type.to_owned(),
            body,
            body_sha256,
            versions,
            expires_at: Instant::now() + ttl.min(MAX_TTL),
            usage,
        };
        if ttl.is_zero() || self.charge.of(&response) > self.max_entry_bytes {
            self.counters.refused.fetch_add(1, Relaxed);
            return false;
        }
        let evicted = self.entries.insert_with_lifecycle(key, Arc::new(response));
        self.counters.inserts.fetch_add(1, Relaxed);
        self.counters
            .evictions
            .fetch_add(evicted.len() as u64, Relaxed);
        true
    }

    /// Drops every entry produced under versions not in `active`; returns how many.
    /// Call after each flip: stale entries are already unreachable, this frees their memory.
    pub fn retain_versions(&self, active: &[Versions]) -> usize {
        let purged = Cell::new(0);
        self.entries.retain(|_, response| {
            let keep = active.contains(&response.versions);
            if !keep {
                purged.set(purged.get() + 1);
            }
            keep
        });
        self.counters.purged.fetch_add(purged.get() as u64, Relaxed);
        purged.get()
    }

    pub fn clear(&self) {
        self.entries.clear();
    }

    pub fn stats(&self) -> CacheStats {
        let c = &self.counters;
        CacheStats {
            entries: self.entries.len(),
            bytes: self.entries.weight(),
            hits: c.hits.load(Relaxed),
            misses: c.misses.load(Relaxed),
            inserts: c.inserts.load(Relaxed),
            refused: c.refused.load(Relaxed),
            evictions: c.evictions.load(Relaxed),
            expired: c.expired.load(Relaxed),
            purged: c.purged.load(Relaxed),
        }
    }
}

/// Up to [`MAX_SHARDS`], a power of two, and at least [`MIN_ENTRIES_PER_SHARD`] entries
/// each (quick_cache would merge smaller shards itself, breaking the per-shard arithmetic).
fn shard_count(max_entries: usize) -> usize {
    let wanted = (max_entries / MIN_ENTRIES_PER_SHARD).clamp(1, MAX_SHARDS);
    1 << wanted.ilog2()
}

/// Charges each entry `max(size, min_charge)`: the scheme that bounds entries and bytes.
#[derive(Clone, Copy)]
struct Charge {
    min_charge: u64,
}

impl Charge {
    fn of(&self, response: &CachedResponse) -> u64 {
        (response.size() as u64).max(self.min_charge)
    }
}

impl Weighter<CacheKey, Arc<CachedResponse>> for Charge {
    fn weight(&self, _key: &CacheKey, response: &Arc<CachedResponse>) -> u64 {
        self.of(response)
    }
}

/// Hands evicted entries back to the inserting caller, so they are counted, and their
/// bodies freed, after the shard lock is released.
#[derive(Clone)]
struct CollectEvicted;

impl Lifecycle<CacheKey, Arc<CachedResponse>> for CollectEvicted {
    type RequestState = Vec<Arc<CachedResponse>>;

    fn begin_request(&self) -> Self::RequestState {
        Vec::new()
    }

    fn on_evict(
        &self,
        evicted: &mut Self::RequestState,
        _key: CacheKey,
        response: Arc<CachedResponse>,
    ) {
        evicted.push(response);
    }
}

#[cfg(test)]
mod tests;
