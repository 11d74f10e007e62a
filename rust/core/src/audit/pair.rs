//! CRC-32C and leaf hash of two frames at once, for verification.
//!
//! Both are chains of dependent instructions that issue faster than they complete: a
//! `crc32` has 3 cycles of latency but issues every cycle, a SHA-NI round pair about 4 but
//! issues every 2. One frame at a time leaves the units idle most of the time; two
//! independent frames interleaved cost little more than one. Records are hashed on their
//! own (the link to the previous record is a comparison of `prev` with its hash), so any
//! two frames can be paired.

use super::merkle::{leaf_hash, Hash};

/// CRC-32C of each of two payloads.
pub(crate) fn crc32c_pair(a: &[u8], b: &[u8]) -> (u32, u32) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("sse4.2") {
        // SAFETY: the CPU has the feature `x86::crc32c_pair` is compiled for.
        return unsafe { x86::crc32c_pair(a, b) };
    }
    (crc32c::crc32c(a), crc32c::crc32c(b))
}

/// RFC 6962 leaf hash of each of two payloads.
pub(crate) fn leaf_hash_pair(a: &[u8], b: &[u8]) -> (Hash, Hash) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("sha")
        && std::is_x86_feature_detected!("ssse3")
        && std::is_x86_feature_detected!("sse4.1")
    {
        // SAFETY: the CPU has the features `x86::leaf_hash_pair` is compiled for.
        return unsafe { x86::leaf_hash_pair(a, b) };
    }
    (leaf_hash(a), leaf_hash(b))
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::{
        __m128i, _mm_add_epi32, _mm_alignr_epi8, _mm_blend_epi16, _mm_crc32_u64, _mm_crc32_u8,
        _mm_loadu_si128, _mm_set_epi64x, _mm_sha256msg1_epu32, _mm_sha256msg2_epu32,
        _mm_sha256rnds2_epu32, _mm_shuffle_epi32, _mm_shuffle_epi8, _mm_storeu_si128,
    };

    use super::Hash;

    #[target_feature(enable = "sse4.2")]
    pub(super) unsafe fn crc32c_pair(a: &[u8], b: &[u8]) -> (u32, u32) {
        let (mut crc_a, mut crc_b) = (u64::from(u32::MAX), u64::from(u32::MAX));
        let common = a.len().min(b.len()) / 8 * 8;
        let (head_a, head_b) = (&a[..common], &b[..common]);
        for (word_a, word_b) in head_a.chunks_exact(8).zip(head_b.chunks_exact(8)) {
            crc_a = _mm_crc32_u64(crc_a, u64::from_le_bytes(word_a.try_into().expect("8")));
            crc_b = _mm_crc32_u64(crc_b, u64::from_le_bytes(word_b.try_into().expect("8")));
        }
        (finish(crc_a, &a[common..]), finish(crc_b, &b[common..]))
    }

    /// The words one payload has beyond the other's, then its last bytes.
    #[target_feature(enable = "sse4.2")]
    unsafe fn finish(mut crc: u64, rest: &[u8]) -> u32 {
        let mut words = rest.chunks_exact(8);
        for word in words.by_ref() {
            crc = _mm_crc32_u64(crc, u64::from_le_bytes(word.try_into().expect("8")));
        }
        let mut crc = crc as u32;
        for &byte in words.remainder() {
            crc = _mm_crc32_u8(crc, byte);
        }
        !crc
    }

    /// The 64-byte blocks SHA-256 compresses for the message `0x00 || payload`, padding
    /// included. Blocks wholly inside the payload are read in place, not copied.
    struct LeafBlocks<'a> {
        payload: &'a [u8],
        /// Block 0 (the prefix byte and the payload's first 63), if it is whole.
        first: [u8; 64],
        /// The blocks from `whole` on: the message's last bytes and the padding.
        tail: [u8; 128],
        /// Blocks made only of message bytes.
        whole: usize,
        count: usize,
    }

    impl<'a> LeafBlocks<'a> {
        #[inline]
        fn new(payload: &'a [u8]) -> LeafBlocks<'a> {
            let len = payload.len() + 1;
            let whole = len / 64;
            // The message, a 0x80 byte, then its length in bits in the last 8 bytes.
            let count = (len + 9).div_ceil(64);
            let mut first = [0; 64];
            let mut tail = [0; 128];
            if whole > 0 {
                first[1..].copy_from_slice(&payload[..63]);
                let rest = &payload[whole * 64 - 1..];
                tail[..rest.len()].copy_from_slice(rest);
            } else {
                tail[1..len].copy_from_slice(payload);
            }
            tail[len - whole * 64] = 0x80;
            let end = (count - whole) * 64;
            tail[end - 8..end].copy_from_slice(&(len as u64 * 8).to_be_bytes());
            LeafBlocks {
                payload,
                first,
                tail,
                whole,
                count,
            }
        }

        #[inline]
        fn block(&self, k: usize) -> &[u8; 64] {
            let block = if k >= self.whole {
                &self.tail[(k - self.whole) * 64..][..64]
            } else if k == 0 {
                &self.first
            } else {
                &self.payload[k * 64 - 1..][..64]
            };
            block.try_into().expect("64 bytes")
        }
    }

    /// SHA-256's round constants, in the order `sha256rnds2` takes them four at a time.
    const K: [u32; 64] = [
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
        0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
        0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
        0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
        0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
        0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
        0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
        0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
        0xc67178f2,
    ];

    /// SHA-256's initial state, as words a..h.
    const H: [u32; 8] = [
        0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab,
        0x5be0cd19,
    ];

    /// A state as `sha256rnds2` wants it: words (a, b, e, f) and (c, d, g, h).
    #[derive(Clone, Copy)]
    struct State {
        abef: __m128i,
        cdgh: __m128i,
    }

    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    pub(super) unsafe fn leaf_hash_pair(a: &[u8], b: &[u8]) -> (Hash, Hash) {
        let (a, b) = (LeafBlocks::new(a), LeafBlocks::new(b));
        let (mut state_a, mut state_b) = (initial(), initial());
        let common = a.count.min(b.count);
        for k in 0..common {
            compress_pair(&mut state_a, &mut state_b, a.block(k), b.block(k));
        }
        // The longer message's last blocks, beside a scratch state.
        let (longer, state) = match a.count > b.count {
            true => (&a, &mut state_a),
            false => (&b, &mut state_b),
        };
        let mut spare = initial();
        for k in common..longer.count {
            compress_pair(state, &mut spare, longer.block(k), longer.block(k));
        }
        (digest(state_a), digest(state_b))
    }

    #[inline]
    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    unsafe fn initial() -> State {
        let dcba = _mm_loadu_si128(H.as_ptr().cast());
        let hgfe = _mm_loadu_si128(H.as_ptr().add(4).cast());
        let cdab = _mm_shuffle_epi32(dcba, 0xB1);
        let efgh = _mm_shuffle_epi32(hgfe, 0x1B);
        State {
            abef: _mm_alignr_epi8(cdab, efgh, 8),
            cdgh: _mm_blend_epi16(efgh, cdab, 0xF0),
        }
    }

    #[inline]
    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    unsafe fn digest(state: State) -> Hash {
        let feba = _mm_shuffle_epi32(state.abef, 0x1B);
        let dchg = _mm_shuffle_epi32(state.cdgh, 0xB1);
        let mut words = [0u32; 8];
        _mm_storeu_si128(words.as_mut_ptr().cast(), _mm_blend_epi16(feba, dchg, 0xF0));
        _mm_storeu_si128(
            words.as_mut_ptr().add(4).cast(),
            _mm_alignr_epi8(dchg, feba, 8),
        );
        let mut hash = [0; 32];
        for (out, word) in hash.chunks_exact_mut(4).zip(words) {
            out.copy_from_slice(&word.to_be_bytes());
        }
        hash
    }

    /// One block into each of two states, their rounds interleaved.
    #[inline]
    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    unsafe fn compress_pair(a: &mut State, b: &mut State, block_a: &[u8; 64], block_b: &[u8; 64]) {
        let (start_a, start_b) = (*a, *b);
        let (mut w_a, mut w_b) = (words(block_a), words(block_b));
        for (i, (&w_a, &w_b)) in w_a.iter().zip(&w_b).enumerate() {
            let k = _mm_loadu_si128(K.as_ptr().add(4 * i).cast());
            rounds4(a, _mm_add_epi32(w_a, k));
            rounds4(b, _mm_add_epi32(w_b, k));
        }
        // Constant indices into the four words keep them in registers.
        macro_rules! step {
            ($i:expr, $w0:literal, $w1:literal, $w2:literal, $w3:literal) => {
                w_a[$w0] = schedule(w_a[$w0], w_a[$w1], w_a[$w2], w_a[$w3]);
                w_b[$w0] = schedule(w_b[$w0], w_b[$w1], w_b[$w2], w_b[$w3]);
                let k = _mm_loadu_si128(K.as_ptr().add(4 * $i).cast());
                rounds4(a, _mm_add_epi32(w_a[$w0], k));
                rounds4(b, _mm_add_epi32(w_b[$w0], k));
            };
        }
        for i in [4, 8, 12] {
            step!(i, 0, 1, 2, 3);
            step!(i + 1, 1, 2, 3, 0);
            step!(i + 2, 2, 3, 0, 1);
            step!(i + 3, 3, 0, 1, 2);
        }
        a.abef = _mm_add_epi32(a.abef, start_a.abef);
        a.cdgh = _mm_add_epi32(a.cdgh, start_a.cdgh);
        b.abef = _mm_add_epi32(b.abef, start_b.abef);
        b.cdgh = _mm_add_epi32(b.cdgh, start_b.cdgh);
    }

    /// A block's 16 big-endian words, four to a vector.
    #[inline]
    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    unsafe fn words(block: &[u8; 64]) -> [__m128i; 4] {
        let swap = _mm_set_epi64x(0x0C0D_0E0F_0809_0A0B, 0x0405_0607_0001_0203);
        let ptr = block.as_ptr().cast::<__m128i>();
        [
            _mm_shuffle_epi8(_mm_loadu_si128(ptr), swap),
            _mm_shuffle_epi8(_mm_loadu_si128(ptr.add(1)), swap),
            _mm_shuffle_epi8(_mm_loadu_si128(ptr.add(2)), swap),
            _mm_shuffle_epi8(_mm_loadu_si128(ptr.add(3)), swap),
        ]
    }

    /// The next four message words, from the 16 before them, oldest first.
    #[inline]
    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    unsafe fn schedule(w0: __m128i, w1: __m128i, w2: __m128i, w3: __m128i) -> __m128i {
        let t = _mm_add_epi32(_mm_sha256msg1_epu32(w0, w1), _mm_alignr_epi8(w3, w2, 4));
        _mm_sha256msg2_epu32(t, w3)
    }

    /// Four rounds, given their message words plus round constants.
    #[inline]
    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    unsafe fn rounds4(state: &mut State, wk: __m128i) {
        state.cdgh = _mm_sha256rnds2_epu32(state.cdgh, state.abef, wk);
        state.abef = _mm_sha256rnds2_epu32(state.abef, state.cdgh, _mm_shuffle_epi32(wk, 0x0E));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_match_one_at_a_time_for_every_padding_case() {
        let data: Vec<u8> = (0..300u32).map(|i| (i * 7 + i / 13) as u8).collect();
        for len_a in (0..200).chain([255, 256, 300]) {
            for len_b in [0, 1, 54, 55, 56, 62, 63, 64, 119, 120, 127, 128, 191, 300] {
                let (a, b) = (&data[..len_a], &data[300 - len_b..]);
                let expect = (leaf_hash(a), leaf_hash(b));
                assert_eq!(leaf_hash_pair(a, b), expect, "{len_a} {len_b}");
                assert_eq!(
                    leaf_hash_pair(b, a),
                    (expect.1, expect.0),
                    "{len_b} {len_a}"
                );
                let crcs = (crc32c::crc32c(a), crc32c::crc32c(b));
                assert_eq!(crc32c_pair(a, b), crcs, "{len_a} {len_b}");
            }
        }
    }
}
