//! Caller authentication on the request path: gatewayd API keys are known by their SHA-256
//! digests, and each credential header value found valid is remembered, so a caller's next
//! request costs one hash-map lookup instead of a SHA-256.

use sha2::{Digest, Sha256};

use crate::FastMap;

/// Header values remembered as valid, at most: a valid key can be spelt many ways
/// (whitespace, the case of `Bearer`), so the memo is bounded and starts over when full.
pub const KNOWN_LIMIT: usize = 4096;

/// The callers (`C`, whatever the embedding language keeps for one) by key digest.
pub struct KeyTable<C> {
    callers: Vec<C>,
    by_digest: FastMap<[u8; 32], usize>,
    /// The values of credential headers found valid: `x-api-key`'s, then `authorization`'s
    /// (a lookup borrows the value: no copy per request).
    known: [FastMap<Vec<u8>, usize>; 2],
}

impl<C> KeyTable<C> {
    pub fn new(by_digest: impl IntoIterator<Item = ([u8; 32], C)>) -> KeyTable<C> {
        let mut callers = Vec::new();
        let mut index = FastMap::default();
        for (digest, caller) in by_digest {
            index.insert(digest, callers.len());
            callers.push(caller);
        }
        KeyTable {
            callers,
            by_digest: index,
            known: Default::default(),
        }
    }

    /// The caller a credential header names (`authorization: Bearer <key>` or
    /// `x-api-key: <key>`), or None when its key is unknown or the header is malformed.
    pub fn caller(&mut self, name: &[u8], value: &[u8]) -> Option<&C> {
        let bearer = match name {
            b"authorization" => true,
            b"x-api-key" => false,
            _ => return None,
        };
        if let Some(&found) = self.known[usize::from(bearer)].get(value) {
            return Some(&self.callers[found]);
        }
        let key = presented_key(bearer, value)?;
        let digest: [u8; 32] = Sha256::digest(key).into();
        let found = *self.by_digest.get(&digest)?;
        if self.known.iter().map(FastMap::len).sum::<usize>() >= KNOWN_LIMIT {
            self.known.iter_mut().for_each(FastMap::clear);
        }
        self.known[usize::from(bearer)].insert(value.to_vec(), found);
        Some(&self.callers[found])
    }
}

/// The key a credential header presents: after a case-insensitive `Bearer ` for
/// `authorization` (None without it), with the surrounding whitespace stripped as
/// Python's `bytes.strip` does (space, `\t`, `\n`, `\r`, `\x0b`, `\x0c`), so a key
/// authenticates exactly as it did when the table was Python's.
pub fn presented_key(bearer: bool, value: &[u8]) -> Option<&[u8]> {
    let key = if bearer {
        if value.len() < 7 || !value[..7].eq_ignore_ascii_case(b"bearer ") {
            return None;
        }
        &value[7..]
    } else {
        value
    };
    let blank = |b: &u8| matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c);
    let start = key.iter().position(|b| !blank(b)).unwrap_or(key.len());
    let end = key.iter().rposition(|b| !blank(b)).map_or(start, |i| i + 1);
    Some(&key[start..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> KeyTable<&'static str> {
        KeyTable::new([(Sha256::digest(b"sk-acme").into(), "acme")])
    }

    #[test]
    fn finds_a_key_by_either_header_and_any_spelling_of_bearer() {
        let mut keys = table();
        assert_eq!(
            keys.caller(b"authorization", b"Bearer sk-acme"),
            Some(&"acme")
        );
        assert_eq!(
            keys.caller(b"authorization", b"bEaReR  sk-acme \t"),
            Some(&"acme")
        );
        assert_eq!(keys.caller(b"x-api-key", b"sk-acme"), Some(&"acme"));
        assert_eq!(keys.caller(b"x-api-key", b"\x0bsk-acme\x0c"), Some(&"acme"));
    }

    #[test]
    fn refuses_unknown_keys_malformed_headers_and_other_names() {
        let mut keys = table();
        assert_eq!(keys.caller(b"authorization", b"sk-acme"), None);
        assert_eq!(keys.caller(b"authorization", b"Basic sk-acme"), None);
        assert_eq!(keys.caller(b"authorization", b"Bearer"), None);
        assert_eq!(keys.caller(b"x-api-key", b"Bearer sk-acme"), None);
        assert_eq!(keys.caller(b"x-api-key", b"sk-acm"), None);
        assert_eq!(keys.caller(b"cookie", b"sk-acme"), None);
        assert!(
            keys.known.iter().all(FastMap::is_empty),
            "nothing invalid is remembered"
        );
    }

    #[test]
    fn a_remembered_value_is_tied_to_its_header() {
        let mut keys = table();
        assert_eq!(keys.caller(b"x-api-key", b"sk-acme"), Some(&"acme"));
        // The same value under the other header is judged afresh (and has no Bearer).
        assert_eq!(keys.caller(b"authorization", b"sk-acme"), None);
    }

    #[test]
    fn the_memo_is_bounded() {
        let mut keys = table();
        for spaces in 0..KNOWN_LIMIT + 10 {
            let value = format!("Bearer sk-acme{}", " ".repeat(spaces));
            assert_eq!(
                keys.caller(b"authorization", value.as_bytes()),
                Some(&"acme")
            );
            assert!(keys.known.iter().map(FastMap::len).sum::<usize>() <= KNOWN_LIMIT);
        }
    }
}
