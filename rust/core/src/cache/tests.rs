use super::*;
use std::thread;

const V1: Versions = Versions::new(1, 1, 1);
const V2: Versions = Versions::new(2, 1, 1);
const V3: Versions = Versions::new(1, 1, 2);
const HOUR: Duration = Duration::from_secs(3600);

fn key(n: usize, versions: Versions) -> CacheKey {
    CacheKey::new(
        "tenant-a",
        "/v1/chat/completions",
        n.to_string().as_bytes(),
        versions,
    )
}

fn put(cache: &ResponseCache, key: CacheKey, body: Vec<u8>, versions: Versions) -> bool {
    cache.insert(key, 200, "application/json", body, versions, HOUR)
}

#[test]
fn hit_after_insert_and_miss_otherwise() {
    let cache = ResponseCache::new(100, 1 << 20);
    assert!(cache.get(&key(1, V1)).is_none());
    assert!(put(&cache, key(1, V1), b"{\"ok\":true}".to_vec(), V1));

    let hit = cache.get(&key(1, V1)).expect("hit");
    assert_eq!(
        (hit.status, hit.content_type.as_str()),
        (200, "application/json")
    );
    assert_eq!(hit.body, b"{\"ok\":true}");
    assert_eq!(hit.versions, V1);
    assert!(cache.get(&key(2, V1)).is_none());

    let stats = cache.stats();
    assert_eq!(
        (stats.entries, stats.hits, stats.misses, stats.inserts),
        (1, 1, 2, 1)
    );
}

#[test]
fn different_versions_never_hit_each_other() {
    let cache = ResponseCache::new(100, 1 << 20);
    assert!(put(&cache, key(1, V1), b"under v1".to_vec(), V1));
    for other in [V2, V3, Versions::new(1, 2, 1)] {
        assert_ne!(key(1, V1), key(1, other));
        assert!(cache.get(&key(1, other)).is_none());
    }
    assert!(cache.get(&key(1, V1)).is_some());
}

#[test]
fn key_fields_cannot_run_into_each_other() {
    let a = CacheKey::new("ab", "c", b"", V1);
    let b = CacheKey::new("a", "bc", b"", V1);
    let c = CacheKey::new("a", "b", b"c", V1);
    assert!(a != b && b != c && a != c);
    assert_eq!(a, CacheKey::new("ab", "c", b"", V1));
    assert_eq!(a.to_hex().len(), 64);
}

#[test]
fn expired_entries_are_a_miss_and_dropped() {
    let cache = ResponseCache::new(100, 1 << 20);
    let ttl = Duration::from_millis(20);
    assert!(cache.insert(key(1, V1), 200, "text/plain", b"x".to_vec(), V1, ttl));
    assert!(cache.get(&key(1, V1)).is_some());
    thread::sleep(ttl * 2);
    assert!(cache.get(&key(1, V1)).is_none());
    let stats = cache.stats();
    assert_eq!(
        (stats.entries, stats.expired, stats.hits, stats.misses),
        (0, 1, 1, 1)
    );
}

#[test]
fn zero_ttl_is_refused() {
    let cache = ResponseCache::new(100, 1 << 20);
    assert!(!cache.insert(
        key(1, V1),
        200,
        "text/plain",
        b"x".to_vec(),
        V1,
        Duration::ZERO
    ));
    assert_eq!(cache.stats().entries, 0);
}

#[test]
fn byte_bound_holds_under_many_inserts() {
    let max_bytes = 1 << 20;
    let cache = ResponseCache::new(10_000, max_bytes);
    for n in 0..5_000 {
        assert!(put(&cache, key(n, V1), vec![b'x'; 2_000], V1));
        let stats = cache.stats();
        assert!(stats.bytes <= max_bytes as u64, "{stats:?}");
        assert!(stats.entries * 2_000 <= max_bytes, "{stats:?}");
    }
    let stats = cache.stats();
    assert!(stats.evictions > 0 && stats.entries > 0, "{stats:?}");
    assert_eq!(stats.inserts, 5_000);
}

#[test]
fn entry_bound_holds_under_many_inserts() {
    let max_entries = 256;
    let cache = ResponseCache::new(max_entries, 64 << 20);
    for n in 0..20_000 {
        assert!(put(&cache, key(n, V1), b"tiny".to_vec(), V1));
        assert!(cache.stats().entries <= max_entries);
    }
    let stats = cache.stats();
    assert!(
        stats.evictions >= (20_000 - max_entries) as u64,
        "{stats:?}"
    );
}

#[test]
fn retain_versions_purges_exactly_the_inactive_ones() {
    let cache = ResponseCache::new(1_000, 1 << 20);
    for versions in [V1, V2, V3] {
        for n in 0..20 {
            assert!(put(&cache, key(n, versions), b"body".to_vec(), versions));
        }
    }
    assert_eq!(cache.retain_versions(&[V1, V3]), 20);
    for n in 0..20 {
        assert!(cache.get(&key(n, V1)).is_some());
        assert!(cache.get(&key(n, V2)).is_none());
        assert!(cache.get(&key(n, V3)).is_some());
    }
    assert_eq!(cache.retain_versions(&[V1, V3]), 0);
    let stats = cache.stats();
    assert_eq!((stats.entries, stats.purged), (40, 20));
}

#[test]
fn oversized_body_is_refused() {
    let cache = ResponseCache::new(1_000, 1 << 20);
    let limit = cache.max_entry_bytes() as usize;
    assert_eq!(limit, (1 << 20) / MAX_SHARDS / 4);
    let fits = limit - ENTRY_OVERHEAD - "application/json".len();

    assert!(put(&cache, key(1, V1), vec![0; fits], V1));
    assert!(!put(&cache, key(2, V1), vec![0; fits + 1], V1));
    assert!(cache.get(&key(1, V1)).is_some());
    assert!(cache.get(&key(2, V1)).is_none());
    assert_eq!(cache.stats().refused, 1);
}

#[test]
fn degenerate_sizes_cache_nothing() {
    for (max_entries, max_bytes) in [(0, 1 << 20), (100, 0), (3, 1 << 20)] {
        let cache = ResponseCache::new(max_entries, max_bytes);
        assert!(
            !put(&cache, key(1, V1), b"x".to_vec(), V1),
            "{max_entries} {max_bytes}"
        );
        assert_eq!(cache.stats().entries, 0);
    }
}

#[test]
fn clear_drops_everything() {
    let cache = ResponseCache::new(100, 1 << 20);
    for n in 0..10 {
        put(&cache, key(n, V1), b"body".to_vec(), V1);
    }
    cache.clear();
    assert_eq!((cache.stats().entries, cache.stats().bytes), (0, 0));
    assert!(cache.get(&key(1, V1)).is_none());
}

#[test]
fn concurrent_use_keeps_bounds_and_values() {
    let (max_entries, max_bytes) = (512, 256 << 10);
    let cache = ResponseCache::new(max_entries, max_bytes);
    thread::scope(|scope| {
        for t in 0..4 {
            let cache = &cache;
            scope.spawn(move || {
                let versions = Versions::new(t, 1, 1);
                for n in 0..5_000 {
                    let body = format!("{t}:{n}").into_bytes();
                    put(cache, key(n, versions), body.clone(), versions);
                    if let Some(hit) = cache.get(&key(n / 2, versions)) {
                        assert_eq!(hit.body, format!("{t}:{}", n / 2).into_bytes());
                        assert_eq!(hit.versions, versions);
                    }
                    if n % 1_000 == 0 {
                        cache.retain_versions(&[versions]);
                    }
                }
            });
        }
    });
    let stats = cache.stats();
    assert!(
        stats.entries <= max_entries && stats.bytes <= max_bytes as u64,
        "{stats:?}"
    );
    assert_eq!(stats.inserts, 20_000);
    assert!(stats.hits > 0, "{stats:?}");
}
