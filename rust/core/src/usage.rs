//! What answered requests consumed and cost: each config version's prices as they are
//! looked up, the cost of one request's tokens, and the counters `/metrics` shows by tenant,
//! key, model, provider and price version.
//!
//! The counters count exactly the records that carry usage, after each is written, so
//! `gatewayd usage` over the audit chains totals the same figures.

use crate::FastMap as HashMap;
use std::io::Write as _;
use std::sync::{Arc, Mutex, RwLock};

use crate::cache::TokenCounts;

/// (config version, provider, model) prices remembered before starting over.
pub const MAX_PRICES: usize = 4096;
const PER_MILLION: f64 = 1_000_000.0;

/// One model's price per million tokens, in its prices' currency.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Price {
    pub input: f64,
    pub output: f64,
    /// Input tokens read from the provider's prompt cache; None: priced as `input`.
    pub cached: Option<f64>,
}

impl Price {
    /// What `counts` cost at this price, rounded to 12 decimals as Python's `round` does
    /// (the exact binary value, half to even), so sums stay free of float noise.
    pub fn cost(&self, counts: &TokenCounts) -> f64 {
        let fresh = counts.prompt.saturating_sub(counts.cached) as f64;
        let cached = counts.cached as f64 * self.cached.unwrap_or(self.input);
        let total = fresh * self.input + cached + counts.completion as f64 * self.output;
        round_12(total / PER_MILLION)
    }
}

/// `x` rounded to 12 decimal places, correctly: formatting is exact in Rust and Python alike.
///
/// Most costs need no rounding at all: when `x`'s shortest round-trip decimal has at most 12
/// fractional digits and an ulp of `x` is under 1e-12 (|x| < 2^13), that decimal is within
/// half a unit of the 12th place of `x`'s exact value, so rounding gives it back, and it
/// parses back to `x`. Only the rest take the exact (bignum) formatting.
fn round_12(x: f64) -> f64 {
    if x.is_finite()
        && x.abs() < 8192.0
        && fraction_digits(zmij::Buffer::new().format_finite(x)) <= 12
    {
        return x;
    }
    round_12_exact(x)
}

/// Digits after the decimal point of a number as zmij prints it (`1.305e-5`, `0.3`, `12.0`).
fn fraction_digits(printed: &str) -> i32 {
    let (mantissa, exponent) = match printed.split_once('e') {
        Some((mantissa, exponent)) => (mantissa, exponent.parse::<i32>().unwrap_or(i32::MAX / 2)),
        None => (printed, 0),
    };
    let fraction = mantissa
        .split_once('.')
        .map_or(0, |(_, digits)| digits.len() as i32);
    (fraction - exponent).max(0)
}

fn round_12_exact(x: f64) -> f64 {
    let mut digits = [0u8; 64];
    let mut cursor = std::io::Cursor::new(&mut digits[..]);
    if write!(cursor, "{x:.12}").is_err() {
        return x; // too large to need rounding (over 50 digits before the point)
    }
    let len = cursor.position() as usize;
    std::str::from_utf8(&digits[..len])
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(x)
}

/// A record's usage, priced: what its provider reported, or a cache hit's (`saved`).
#[derive(Clone, Debug, PartialEq)]
pub struct Priced {
    pub counts: TokenCounts,
    /// None: no price for the model under `price_version`.
    pub cost: Option<f64>,
    pub currency: Arc<str>,
    /// The config version whose prices gave `cost`.
    pub price_version: u64,
    pub saved: bool,
}

impl Priced {
    /// Prices `counts` (a cache hit's when `saved`) at `quote`, the price config version
    /// `price_version` gives the model that answered.
    pub fn new(counts: TokenCounts, quote: Quote, price_version: u64, saved: bool) -> Priced {
        Priced {
            cost: quote.price.map(|price| price.cost(&counts)),
            counts,
            currency: quote.currency,
            price_version,
            saved,
        }
    }
}

/// What one config version prices a (provider, model) at.
#[derive(Clone, Debug, PartialEq)]
pub struct Quote {
    /// None: the version has no price for the model (its cost is unknown, not zero).
    pub price: Option<Price>,
    pub currency: Arc<str>,
}

/// Config versions' prices by (provider, model), kept as they are looked up: a version
/// never changes, and its glob lookup is done once per model, by the caller.
#[derive(Default)]
pub struct PriceMemo {
    quotes: RwLock<HashMap<u64, Quotes>>,
}

/// One config version's quotes, by provider, then model: looked up by `&str`, no allocation.
type Quotes = HashMap<String, HashMap<String, Quote>>;

impl PriceMemo {
    pub fn get(&self, version: u64, provider: &str, model: &str) -> Option<Quote> {
        let quotes = self.quotes.read().unwrap_or_else(|p| p.into_inner());
        quotes.get(&version)?.get(provider)?.get(model).cloned()
    }

    /// Remembers a quote; the memo starts over past [`MAX_PRICES`] quotes.
    pub fn insert(&self, version: u64, provider: &str, model: &str, quote: Quote) {
        let mut quotes = self.quotes.write().unwrap_or_else(|p| p.into_inner());
        let held: usize = quotes
            .values()
            .flat_map(|p| p.values())
            .map(HashMap::len)
            .sum();
        if held >= MAX_PRICES {
            quotes.clear();
        }
        quotes
            .entry(version)
            .or_default()
            .entry(provider.to_owned())
            .or_default()
            .insert(model.to_owned(), quote);
    }
}

/// The labels of one usage series.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct UsageLabels {
    pub tenant: String,
    pub key: String,
    /// The upstream model that answered (or whose answer a cache hit replayed).
    pub model: String,
    pub provider: String,
    pub price_version: u64,
    pub currency: String,
}

/// One series' totals: what was spent, and apart from it what cache hits saved.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct UsageTotals {
    pub requests: u64,
    pub prompt: u64,
    pub completion: u64,
    pub cached: u64,
    pub cost: f64,
    pub saved_prompt: u64,
    pub saved_completion: u64,
    pub saved_cost: f64,
}

impl UsageTotals {
    /// Adds one record's tokens and cost (a hit's to what was saved).
    pub fn add(&mut self, counts: &TokenCounts, cost: Option<f64>, saved: bool) {
        self.requests += 1;
        if saved {
            self.saved_prompt += counts.prompt;
            self.saved_completion += counts.completion;
            self.saved_cost += cost.unwrap_or(0.0);
        } else {
            self.prompt += counts.prompt;
            self.completion += counts.completion;
            self.cached += counts.cached;
            self.cost += cost.unwrap_or(0.0);
        }
    }
}

/// One record's usage, borrowed, as the meter counts it.
pub struct Metered<'a> {
    pub tenant: &'a str,
    pub key: &'a str,
    pub model: &'a str,
    pub provider: &'a str,
    pub price_version: u64,
    pub currency: &'a str,
    pub counts: TokenCounts,
    pub cost: Option<f64>,
    pub saved: bool,
}

/// A replica's usage counters. Looked up by the labels joined in one reused buffer (each
/// label after its length, so no two label sets join alike): a request that adds to an
/// existing series allocates nothing.
#[derive(Default)]
pub struct Meter {
    state: Mutex<MeterState>,
}

#[derive(Default)]
struct MeterState {
    joined: Vec<u8>,
    series: HashMap<Vec<u8>, (UsageLabels, UsageTotals)>,
}

impl Meter {
    pub fn count(&self, usage: &Metered<'_>) {
        let mut guard = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let MeterState { joined, series } = &mut *guard;
        joined.clear();
        for label in [
            usage.tenant,
            usage.key,
            usage.model,
            usage.provider,
            usage.currency,
        ] {
            joined.extend_from_slice(&label.len().to_le_bytes());
            joined.extend_from_slice(label.as_bytes());
        }
        joined.extend_from_slice(&usage.price_version.to_le_bytes());
        let totals = match series.get_mut(joined.as_slice()) {
            Some((_, totals)) => totals,
            None => {
                let labels = UsageLabels {
                    tenant: usage.tenant.to_owned(),
                    key: usage.key.to_owned(),
                    model: usage.model.to_owned(),
                    provider: usage.provider.to_owned(),
                    price_version: usage.price_version,
                    currency: usage.currency.to_owned(),
                };
                &mut series
                    .entry(joined.clone())
                    .or_insert((labels, UsageTotals::default()))
                    .1
            }
        };
        totals.add(&usage.counts, usage.cost, usage.saved);
    }

    /// Every series, in no particular order.
    pub fn rows(&self) -> Vec<(UsageLabels, UsageTotals)> {
        let guard = self.state.lock().unwrap_or_else(|p| p.into_inner());
        guard.series.values().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(prompt: u64, completion: u64, cached: u64) -> TokenCounts {
        TokenCounts {
            prompt,
            completion,
            cached,
        }
    }

    #[test]
    fn cached_input_has_its_own_price_else_the_inputs() {
        let price = Price {
            input: 4.0,
            output: 8.0,
            cached: Some(2.0),
        };
        assert_eq!(price.cost(&counts(1_000_000, 500_000, 400_000)), 7.2);
        let plain = Price {
            cached: None,
            ..price
        };
        assert_eq!(plain.cost(&counts(1_000_000, 0, 400_000)), 4.0);
        // More cached than prompt tokens (a provider's odd report) never goes negative.
        assert_eq!(plain.cost(&counts(1, 0, 5)), 0.00002);
    }

    #[test]
    fn costs_are_rounded_to_12_decimals_half_to_even() {
        assert_eq!(round_12(0.1 + 0.2), 0.3);
        assert_eq!(round_12(1.0000000000005), 1.000000000001); // just above half
        assert_eq!(round_12(2.5e-13), 0.0); // 2.5e-13 is just below half in binary
        assert_eq!(round_12(1e300), 1e300);
        assert!(round_12(f64::NAN).is_nan());
        assert_eq!(round_12(1.305e-5), 1.305e-5);
        assert_eq!(round_12(1.2345678901234e-5), 1.2345679e-5); // Python: the same
        assert_eq!(round_12(8191.999999999999), 8191.999999999999);
    }

    proptest::proptest! {
        /// The shortcut never changes a result: the exact rounding is the reference.
        #[test]
        fn rounding_without_formatting_agrees_with_the_exact_rounding(
            tokens in 0u64..2_000_000,
            per_million in 0.0f64..100.0,
            x in -9000.0f64..9000.0,
        ) {
            let cost = tokens as f64 * per_million / PER_MILLION;
            proptest::prop_assert_eq!(round_12(cost).to_bits(), round_12_exact(cost).to_bits());
            proptest::prop_assert_eq!(round_12(x).to_bits(), round_12_exact(x).to_bits());
            let short = (x * 1e6).round() / 1e9; // few digits: the shortcut's own case
            proptest::prop_assert_eq!(round_12(short).to_bits(), round_12_exact(short).to_bits());
        }
    }

    #[test]
    fn the_memo_answers_by_version_provider_and_model_and_starts_over_when_full() {
        let memo = PriceMemo::default();
        let quote = |input| Quote {
            price: Some(Price {
                input,
                output: 0.0,
                cached: None,
            }),
            currency: "EUR".into(),
        };
        memo.insert(3, "oa", "gpt-4o", quote(1.0));
        memo.insert(4, "oa", "gpt-4o", quote(2.0));
        assert_eq!(memo.get(3, "oa", "gpt-4o"), Some(quote(1.0)));
        assert_eq!(memo.get(4, "oa", "gpt-4o"), Some(quote(2.0)));
        assert_eq!(memo.get(3, "an", "gpt-4o"), None);
        assert_eq!(memo.get(3, "oa", "gpt-4"), None);
        for i in 0..MAX_PRICES {
            memo.insert(9, "oa", &format!("m{i}"), quote(0.5));
        }
        assert_eq!(memo.get(3, "oa", "gpt-4o"), None, "cleared when full");
        assert_eq!(
            memo.get(9, "oa", &format!("m{}", MAX_PRICES - 1)),
            Some(quote(0.5))
        );
    }

    #[test]
    fn the_meter_keeps_spent_and_saved_apart_per_label_set() {
        let meter = Meter::default();
        let usage = |key, counts, cost, saved| Metered {
            tenant: "acme",
            key,
            model: "gpt-4o",
            provider: "oa",
            price_version: 3,
            currency: "USD",
            counts,
            cost,
            saved,
        };
        meter.count(&usage("bot", counts(1_000_000, 0, 0), Some(4.0), false));
        meter.count(&usage("bot", counts(10, 5, 2), Some(0.5), true));
        meter.count(&usage("bot", counts(3, 1, 1), None, false));
        // "b" + "ot..." must not meet "bo" + "t...": the labels are joined with lengths.
        meter.count(&usage("bo", counts(1, 1, 0), None, false));
        let mut rows = meter.rows();
        rows.sort_by(|a, b| a.0.key.cmp(&b.0.key));
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[1].0.key, "bot");
        assert_eq!(
            rows[1].1,
            UsageTotals {
                requests: 3,
                prompt: 1_000_003,
                completion: 1,
                cached: 1,
                cost: 4.0,
                saved_prompt: 10,
                saved_completion: 5,
                saved_cost: 0.5,
            }
        );
        assert_eq!(rows[0].1.requests, 1);
    }
}
