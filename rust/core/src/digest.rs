//! SHA-256 digests as the 64 lowercase hex digits records and cache entries carry.
//!
//! `hex::encode` builds its string a `char` at a time: four times the cost of encoding
//! into a buffer, and every request makes one or two of these (and the record's `prev`).

use sha2::{Digest, Sha256};

/// `bytes`' SHA-256 in lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex_string(&Sha256::digest(bytes).into())
}

/// A 32-byte hash in lowercase hex.
pub fn hex_string(hash: &[u8; 32]) -> String {
    std::str::from_utf8(&hex_digits(hash))
        .expect("hex digits are ASCII")
        .to_owned()
}

/// A hash as its 64 lowercase hex digits, two digits per table lookup (no allocation: the
/// chain check compares them, the record writes them).
#[inline]
pub fn hex_digits(hash: &[u8; 32]) -> [u8; 64] {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    const PAIRS: [[u8; 2]; 256] = {
        let mut pairs = [[0; 2]; 256];
        let mut i = 0;
        while i < 256 {
            pairs[i] = [DIGITS[i >> 4], DIGITS[i & 15]];
            i += 1;
        }
        pairs
    };
    let mut out = [0u8; 64];
    for (pair, &byte) in out.chunks_exact_mut(2).zip(hash) {
        pair.copy_from_slice(&PAIRS[usize::from(byte)]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_read_as_hex_encode_writes_them() {
        for body in [&b""[..], b"abc", &[0xff; 1000]] {
            let hash: [u8; 32] = Sha256::digest(body).into();
            assert_eq!(sha256_hex(body), hex::encode(hash));
            assert_eq!(hex_string(&hash), hex::encode(hash));
            assert_eq!(&hex_digits(&hash)[..], hex::encode(hash).as_bytes());
        }
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
