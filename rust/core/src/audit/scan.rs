//! Reading the chain fields of a record without building anything: one pass over the top
//! level of its JSON that picks out `v`, `seq`, `prev`, `chain` and `kind` and checks that
//! the rest is well-formed. Verification spends its time here and in SHA-256, so this
//! replaces a serde parse that cost as much as the hash.

/// The fields of a record that link it into its chain. Strings are their raw bytes between
/// the quotes; the writer never escapes anything in them.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct RecordHead<'a> {
    pub v: u64,
    pub seq: u64,
    pub prev: &'a [u8],
    pub chain: &'a [u8],
    pub kind: Option<&'a [u8]>,
}

/// Deep enough for any record the gateway writes; bounds the recursion on hostile input.
const MAX_DEPTH: usize = 64;

pub(crate) fn scan_head(payload: &[u8]) -> Result<RecordHead<'_>, String> {
    // Canonical JSON has no raw control characters, in strings or between them; checking
    // the whole payload at once (vectorised) spares the per-string check. The same pass
    // finds whether there is any non-ASCII byte, without which it is valid UTF-8.
    let (control, non_ascii) = payload.iter().fold((false, false), |(c, n), &b| {
        (c | (b < 0x20), n | (b >= 0x80))
    });
    if non_ascii {
        if let Err(err) = std::str::from_utf8(payload) {
            return Err(format!("invalid UTF-8 at byte {}", err.valid_up_to()));
        }
    }
    if control {
        let at = payload.iter().position(|&b| b < 0x20).unwrap_or_default();
        return Err(format!("control character at byte {at}"));
    }
    let mut scanner = Scanner {
        bytes: payload,
        at: 0,
        block: usize::MAX,
        specials: 0,
    };
    let (mut v, mut seq, mut prev, mut chain, mut kind) = (None, None, None, None, None);
    scanner.expect(b'{')?;
    if !scanner.eat(b'}') {
        loop {
            let key = scanner.string()?;
            scanner.expect(b':')?;
            let slot = match key {
                b"v" => Some(&mut v),
                b"seq" => Some(&mut seq),
                _ => None,
            };
            if let Some(slot) = slot {
                set(slot, scanner.integer()?, key)?;
            } else {
                let slot = match key {
                    b"prev" => Some(&mut prev),
                    b"chain" => Some(&mut chain),
                    b"kind" => Some(&mut kind),
                    _ => None,
                };
                match slot {
                    Some(slot) if scanner.peek() == Some(b'"') => {
                        set(slot, scanner.string()?, key)?
                    }
                    _ => scanner.skip_value()?,
                }
            }
            if !scanner.eat(b',') {
                scanner.expect(b'}')?;
                break;
            }
        }
    }
    scanner.skip_space();
    if scanner.at != payload.len() {
        return Err(format!("trailing characters at byte {}", scanner.at));
    }
    let missing = |name| format!("missing field `{name}`");
    Ok(RecordHead {
        v: v.ok_or_else(|| missing("v"))?,
        seq: seq.ok_or_else(|| missing("seq"))?,
        prev: prev.ok_or_else(|| missing("prev"))?,
        chain: chain.ok_or_else(|| missing("chain"))?,
        kind,
    })
}

/// Two values for one chain field would let two readers see two different records.
fn set<T>(slot: &mut Option<T>, value: T, key: &[u8]) -> Result<(), String> {
    if slot.replace(value).is_some() {
        return Err(format!(
            "duplicate field `{}`",
            String::from_utf8_lossy(key)
        ));
    }
    Ok(())
}

// The error paths take the offset rather than the scanner, so that the scanner of the
// record's top level never has its address taken and can live in registers.
#[cold]
#[inline(never)]
fn expected(byte: u8, at: usize) -> String {
    format!("expected `{}` at byte {at}", byte as char)
}

#[cold]
#[inline(never)]
fn error_at<T>(at: usize, what: &str) -> Result<T, String> {
    Err(format!("{what} at byte {at}"))
}

struct Scanner<'a> {
    bytes: &'a [u8],
    at: usize,
    /// Offset of the 64-byte block `specials` describes (`usize::MAX`: none yet).
    block: usize,
    /// One bit per byte of that block: set for `"` and `\\`. Strings are short, so one
    /// block's mask serves several of them in turn.
    specials: u64,
}

impl<'a> Scanner<'a> {
    #[inline(always)]
    fn peek(&mut self) -> Option<u8> {
        self.skip_space();
        self.bytes.get(self.at).copied()
    }

    /// Spaces only: the other whitespace characters are control characters, refused above.
    #[inline(always)]
    fn skip_space(&mut self) {
        while self.bytes.get(self.at) == Some(&b' ') {
            self.at += 1;
        }
    }

    /// Branches rather than adding the comparison to `at`: a predicted branch lets the
    /// next token's loads start before this byte is loaded, where an addition would wait.
    #[inline(always)]
    fn eat(&mut self, byte: u8) -> bool {
        if self.peek() == Some(byte) {
            self.at += 1;
            return true;
        }
        false
    }

    #[inline(always)]
    fn expect(&mut self, byte: u8) -> Result<(), String> {
        if self.peek() != Some(byte) {
            return Err(expected(byte, self.at));
        }
        self.at += 1;
        Ok(())
    }

    /// A string's raw contents; escapes are checked, not decoded.
    #[inline(always)]
    fn string(&mut self) -> Result<&'a [u8], String> {
        self.expect(b'"')?;
        let start = self.at;
        loop {
            let Some(found) = self.next_special() else {
                return error_at(self.at, "unterminated string");
            };
            self.at = found;
            if self.bytes[self.at] == b'"' {
                self.at += 1;
                return Ok(&self.bytes[start..self.at - 1]);
            }
            self.escape()?;
        }
    }

    /// Offset of the first `"` or `\\` at or after `at`.
    #[inline(always)]
    fn next_special(&mut self) -> Option<usize> {
        let mut block = self.at & !63;
        let mut from = self.at - block;
        while block < self.bytes.len() {
            if block != self.block {
                self.specials = special_mask(&self.bytes[block..]);
                self.block = block;
            }
            let found = self.specials & (u64::MAX << from);
            if found != 0 {
                return Some(block + found.trailing_zeros() as usize);
            }
            block += 64;
            from = 0;
        }
        None
    }

    fn escape(&mut self) -> Result<(), String> {
        match self.bytes.get(self.at + 1) {
            Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => self.at += 2,
            Some(b'u') => {
                let hex = self.bytes.get(self.at + 2..self.at + 6);
                if !hex.is_some_and(|hex| hex.iter().all(u8::is_ascii_hexdigit)) {
                    return error_at(self.at, "bad \\u escape");
                }
                self.at += 6;
            }
            _ => return error_at(self.at, "bad escape"),
        }
        Ok(())
    }

    /// A non-negative integer without leading zeros, as the writer writes `v` and `seq`.
    #[inline(always)]
    fn integer(&mut self) -> Result<u64, String> {
        self.skip_space();
        let start = self.at;
        let mut value: u64 = 0;
        while let Some(&digit @ b'0'..=b'9') = self.bytes.get(self.at) {
            value = value
                .checked_mul(10)
                .and_then(|value| value.checked_add(u64::from(digit - b'0')))
                .ok_or_else(|| format!("integer too large at byte {start}"))?;
            self.at += 1;
        }
        let digits = &self.bytes[start..self.at];
        if digits.is_empty() || (digits.len() > 1 && digits[0] == b'0') {
            return error_at(self.at, "expected an unsigned integer");
        }
        Ok(value)
    }

    /// A value of the record's top level, checked and skipped: scalars in line, containers
    /// out of line on a copy of the scanner, so this one can stay in registers.
    #[inline(always)]
    fn skip_value(&mut self) -> Result<(), String> {
        match self.peek() {
            Some(b'"') => self.string().map(drop),
            Some(b't') => self.literal(b"true"),
            Some(b'f') => self.literal(b"false"),
            Some(b'n') => self.literal(b"null"),
            Some(b'-' | b'0'..=b'9') => self.number(),
            _ => {
                let mut nested = Scanner {
                    bytes: self.bytes,
                    at: self.at,
                    block: self.block,
                    specials: self.specials,
                };
                let result = nested.value(0);
                (self.at, self.block, self.specials) = (nested.at, nested.block, nested.specials);
                result
            }
        }
    }

    /// Any JSON value, checked and skipped.
    fn value(&mut self, depth: usize) -> Result<(), String> {
        if depth > MAX_DEPTH {
            return error_at(self.at, "nested too deeply");
        }
        match self.peek() {
            Some(b'"') => self.string().map(drop),
            Some(b'{') => self.container(b'}', depth, true),
            Some(b'[') => self.container(b']', depth, false),
            Some(b't') => self.literal(b"true"),
            Some(b'f') => self.literal(b"false"),
            Some(b'n') => self.literal(b"null"),
            Some(b'-' | b'0'..=b'9') => self.number(),
            _ => error_at(self.at, "expected a value"),
        }
    }

    fn container(&mut self, close: u8, depth: usize, object: bool) -> Result<(), String> {
        self.at += 1;
        if self.eat(close) {
            return Ok(());
        }
        loop {
            if object {
                self.string()?;
                self.expect(b':')?;
            }
            self.value(depth + 1)?;
            if !self.eat(b',') {
                return self.expect(close);
            }
        }
    }

    #[inline(always)]
    fn literal(&mut self, word: &[u8]) -> Result<(), String> {
        if self.bytes.get(self.at..self.at + word.len()) != Some(word) {
            return error_at(self.at, "expected a value");
        }
        self.at += word.len();
        Ok(())
    }

    /// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`
    #[inline(always)]
    fn number(&mut self) -> Result<(), String> {
        self.at += usize::from(self.bytes[self.at] == b'-');
        match self.digits() {
            0 => return error_at(self.at, "expected a digit"),
            n if n > 1 && self.bytes[self.at - n] == b'0' => {
                return error_at(self.at, "leading zero")
            }
            _ => {}
        }
        if self.bytes.get(self.at) == Some(&b'.') {
            self.at += 1;
            if self.digits() == 0 {
                return error_at(self.at, "expected a digit");
            }
        }
        if matches!(self.bytes.get(self.at), Some(b'e' | b'E')) {
            self.at += 1;
            self.at += usize::from(matches!(self.bytes.get(self.at), Some(b'+' | b'-')));
            if self.digits() == 0 {
                return error_at(self.at, "expected a digit");
            }
        }
        Ok(())
    }

    #[inline(always)]
    fn digits(&mut self) -> usize {
        let start = self.at;
        while self.bytes.get(self.at).is_some_and(u8::is_ascii_digit) {
            self.at += 1;
        }
        self.at - start
    }
}

/// Bit i is set if `bytes[i]` (of the first 64) is `"` or `\\`.
#[inline(never)]
fn special_mask(bytes: &[u8]) -> u64 {
    let bytes = &bytes[..bytes.len().min(64)];
    let mut mask = 0u64;
    let mut at = 0;
    #[cfg(target_arch = "x86_64")]
    // SAFETY: SSE2 is part of the x86-64 baseline; every load reads 16 bytes inside `bytes`.
    unsafe {
        use std::arch::x86_64::{
            __m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_or_si128,
            _mm_set1_epi8,
        };
        let quotes = _mm_set1_epi8(b'"' as i8);
        let backslashes = _mm_set1_epi8(b'\\' as i8);
        while at + 16 <= bytes.len() {
            let chunk = _mm_loadu_si128(bytes.as_ptr().add(at).cast::<__m128i>());
            let hits = _mm_or_si128(
                _mm_cmpeq_epi8(chunk, quotes),
                _mm_cmpeq_epi8(chunk, backslashes),
            );
            mask |= u64::from(_mm_movemask_epi8(hits) as u16) << at;
            at += 16;
        }
    }
    for (i, &b) in bytes.iter().enumerate().skip(at) {
        mask |= u64::from(b == b'"' || b == b'\\') << i;
    }
    mask
}
