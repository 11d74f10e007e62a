//! What the crate's property tests share.

use proptest::test_runner::{Config, RngSeed};

/// Short mode (`cargo test`): `default` cases from a fixed seed, the same every run. Long
/// mode: PROPTEST_CASES cases, from a random seed unless PROPTEST_RNG_SEED names one.
pub fn cases(default: u32) -> Config {
    let long = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok());
    let fixed = long.is_none() && std::env::var_os("PROPTEST_RNG_SEED").is_none();
    Config {
        cases: long.unwrap_or(default),
        rng_seed: if fixed {
            RngSeed::Fixed(9)
        } else {
            Config::default().rng_seed
        },
        ..Config::default()
    }
}
