//! Request metrics labelled by the versions that served the traffic (docs/ROLLBACK.md R10), so
//! a dashboard shows the reverted version's numbers, not a stale one.
//!
//! One replica's counters live here; the control layer ships snapshots of them with the
//! replica's heartbeat and renders the sum over replicas in Prometheus' text format.

use crate::FastMap as HashMap;
use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;

use crate::cache::Versions;

/// Upper bounds (seconds) of the latency histogram buckets; +Inf is implied.
pub const LATENCY_BUCKETS: [f64; 16] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

/// The labels of one series.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct SeriesKey {
    pub policy_version: u64,
    pub routing_version: u64,
    pub config_version: u64,
    /// Which domains were served from a candidate position (`cache::CANDIDATE_*` bits).
    pub candidates: u8,
    pub api: &'static str,
    pub status: u16,
    pub cache: &'static str,
}

/// Count, latency sum and cumulative-ready bucket counts of one series.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Series {
    pub count: u64,
    pub sum_seconds: f64,
    /// Non-cumulative: `buckets[i]` counts observations in (LATENCY_BUCKETS[i-1], LATENCY_BUCKETS[i]];
    /// the last entry counts those above every bound.
    pub buckets: [u64; LATENCY_BUCKETS.len() + 1],
}

/// Shadow-policy outcomes: what a candidate would have decided, beside what was enforced.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct ShadowKey {
    pub shadow_version: u64,
    pub active_version: u64,
    pub active: &'static str,
    pub shadow: &'static str,
}

#[derive(Default)]
struct State {
    requests: HashMap<SeriesKey, Series>,
    shadow: HashMap<ShadowKey, u64>,
}

/// Thread-safe metrics of one replica.
#[derive(Default)]
pub struct Metrics {
    state: Mutex<State>,
}

/// A point-in-time copy, serialisable for shipping to the control store.
#[derive(Serialize)]
pub struct Snapshot {
    pub requests: Vec<(SeriesKey, Series)>,
    pub shadow: Vec<(ShadowKey, u64)>,
}

impl Metrics {
    pub fn observe(
        &self,
        versions: Versions,
        api: &'static str,
        status: u16,
        cache: &'static str,
        latency: Duration,
    ) {
        let key = SeriesKey {
            policy_version: versions.policy,
            routing_version: versions.routing,
            config_version: versions.config,
            candidates: versions.candidates,
            api,
            status,
            cache,
        };
        let seconds = latency.as_secs_f64();
        let bucket = LATENCY_BUCKETS
            .iter()
            .position(|&b| seconds <= b)
            .unwrap_or(LATENCY_BUCKETS.len());
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let series = state.requests.entry(key).or_default();
        series.count += 1;
        series.sum_seconds += seconds;
        series.buckets[bucket] += 1;
    }

    pub fn observe_shadow(&self, key: ShadowKey) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        *state.shadow.entry(key).or_default() += 1;
    }

    pub fn snapshot(&self) -> Snapshot {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        Snapshot {
            requests: state
                .requests
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            shadow: state.shadow.iter().map(|(k, v)| (k.clone(), *v)).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(policy: u64) -> Versions {
        Versions::new(policy, 1, 1)
    }

    #[test]
    fn series_are_split_by_version_and_bucketed() {
        let m = Metrics::default();
        m.observe(v(1), "chat", 200, "miss", Duration::from_micros(300));
        m.observe(v(1), "chat", 200, "miss", Duration::from_millis(20));
        m.observe(v(2), "chat", 200, "miss", Duration::from_secs(100));
        let snap = m.snapshot();
        assert_eq!(snap.requests.len(), 2);
        let (_, one) = snap
            .requests
            .iter()
            .find(|(k, _)| k.policy_version == 1)
            .unwrap();
        assert_eq!(one.count, 2);
        assert_eq!(one.buckets[0], 1); // <= 0.5 ms
        assert_eq!(one.buckets[5], 1); // (10 ms, 25 ms]
        let (_, two) = snap
            .requests
            .iter()
            .find(|(k, _)| k.policy_version == 2)
            .unwrap();
        assert_eq!(two.buckets[LATENCY_BUCKETS.len()], 1); // above every bound
        assert!((one.sum_seconds - 0.0203).abs() < 1e-9);
    }

    #[test]
    fn shadow_outcomes_are_counted() {
        let m = Metrics::default();
        let key = ShadowKey {
            shadow_version: 3,
            active_version: 2,
            active: "allow",
            shadow: "deny",
        };
        m.observe_shadow(key.clone());
        m.observe_shadow(key.clone());
        assert_eq!(m.snapshot().shadow, vec![(key, 2)]);
    }
}
