//! SHA-256 digests as the 64 lowercase hex digits records and cache entries carry.
//!
//! `hex::encode` builds its string a `char` at a time: four times the cost of encoding
//! into a buffer, and every request makes one or two of these.

use sha2::{Digest, Sha256};

/// `bytes`' SHA-256 in lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex_string(&Sha256::digest(bytes).into())
}

/// A 32-byte hash in lowercase hex.
pub fn hex_string(hash: &[u8; 32]) -> String {
    let mut digits = [0u8; 64];
    hex::encode_to_slice(hash, &mut digits).expect("64 digits for 32 bytes");
    std::str::from_utf8(&digits)
        .expect("hex digits are ASCII")
        .to_owned()
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
        }
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
