//! Record payloads: canonical JSON, framed and hashed.

use std::sync::OnceLock;

use serde::Serialize;
use serde_json::{Map, Value};

use super::merkle::{leaf_hash, Hash};
use super::segment::{frame_header, FRAME_HEADER};
use super::{AuditError, FORMAT_VERSION, MAX_PAYLOAD};
use crate::digest::hex_digits;

/// Fields the writer sets on every record; callers may not supply them.
pub const WRITER_FIELDS: [&str; 5] = ["chain", "prev", "seq", "ts", "v"];

/// The writer's own fields of one record.
struct WriterFields<'a> {
    chain: &'a str,
    prev: &'a Hash,
    seq: u64,
    unix_micros: u64,
}

/// The writer's fields, in key order.
#[derive(Clone, Copy)]
enum Own {
    Chain,
    Prev,
    Seq,
    Ts,
    V,
}

const OWN: [(&str, Own); 5] = [
    ("chain", Own::Chain),
    ("prev", Own::Prev),
    ("seq", Own::Seq),
    ("ts", Own::Ts),
    ("v", Own::V),
];

/// A record's fields, as the writer encodes them: visited in ascending key order (code
/// point), so the canonical JSON is written straight out. A typed record (the request
/// record) visits its fields without building a JSON map: no key or value is allocated.
pub trait RecordFields {
    /// Calls `field` once per field, keys strictly ascending.
    fn each_sorted(&self, field: &mut dyn FnMut(&str, FieldValue<'_>));
}

/// One field's value, borrowed.
#[derive(Clone, Copy)]
pub enum FieldValue<'a> {
    Json(&'a Value),
    Str(&'a str),
    Uint(u64),
    Bool(bool),
    Null,
    Strs(&'a [String]),
    Object(&'a dyn RecordFields),
}

impl<'a> From<Option<&'a str>> for FieldValue<'a> {
    fn from(value: Option<&'a str>) -> FieldValue<'a> {
        value.map_or(FieldValue::Null, FieldValue::Str)
    }
}

impl RecordFields for Map<String, Value> {
    fn each_sorted(&self, field: &mut dyn FnMut(&str, FieldValue<'_>)) {
        for_each_sorted(self, |key, value| field(key, FieldValue::Json(value)));
    }
}

/// Appends the frame of the record that follows `prev` as `seq` in `chain` to `out`: its
/// length, CRC-32C and canonical payload. Returns the record's leaf hash. This is all of an
/// append but the write.
pub fn frame_record(
    out: &mut Vec<u8>,
    chain: &str,
    seq: u64,
    prev: &Hash,
    unix_micros: u64,
    fields: &dyn RecordFields,
) -> Result<Hash, AuditError> {
    let start = out.len();
    out.extend_from_slice(&[0; FRAME_HEADER]);
    let own = WriterFields {
        chain,
        prev,
        seq,
        unix_micros,
    };
    if let Err(reserved) = encode_record(out, &own, fields) {
        out.truncate(start);
        return Err(AuditError::ReservedField(reserved));
    }
    let len = out.len() - start - FRAME_HEADER;
    if len > MAX_PAYLOAD as usize {
        out.truncate(start);
        return Err(AuditError::RecordTooLarge(len));
    }
    let payload = &out[start + FRAME_HEADER..];
    let header = frame_header(payload);
    let hash = leaf_hash(payload);
    out[start..start + FRAME_HEADER].copy_from_slice(&header);
    Ok(hash)
}

/// Appends the record's canonical JSON to `out`: the caller's fields merged with the
/// writer's, in key order. Fails with the name of a writer field the caller supplied.
fn encode_record(
    out: &mut Vec<u8>,
    own: &WriterFields,
    fields: &dyn RecordFields,
) -> Result<(), &'static str> {
    // The writer's fields go in among the caller's by an index into OWN, not a Peekable:
    // its peeked slot, stored and reloaded in pieces, stalled on store forwarding.
    let mut next_own = 0;
    let mut members = Members::default();
    let mut key = |out: &mut Vec<u8>, key: &str| members.key(out, key);
    let mut reserved = None;
    out.push(b'{');
    fields.each_sorted(&mut |name, value| {
        while let Some(&(own_name, field)) = OWN.get(next_own) {
            if !before(own_name, name) {
                break;
            }
            if own_name == name {
                reserved = Some(own_name);
            }
            key(out, own_name);
            write_own(out, own, field);
            next_own += 1;
        }
        key(out, name);
        write_value(out, value);
    });
    if let Some(name) = reserved {
        return Err(name);
    }
    for &(own_name, field) in &OWN[next_own..] {
        key(out, own_name);
        write_own(out, own, field);
    }
    out.push(b'}');
    Ok(())
}

/// `own <= name`, byte by byte up to the first that differs: the writer's names are at
/// most five bytes, and a `memcmp` call per field (the `str` comparison) cost more than
/// the comparison itself.
fn before(own: &str, name: &str) -> bool {
    let name = name.as_bytes();
    for (at, &byte) in own.as_bytes().iter().enumerate() {
        match name.get(at) {
            Some(&other) if other == byte => continue,
            Some(&other) => return byte < other,
            None => return false,
        }
    }
    true
}

fn write_own(out: &mut Vec<u8>, own: &WriterFields, field: Own) {
    match field {
        Own::Chain => write_str(out, own.chain),
        Own::Prev => {
            out.push(b'"');
            out.extend_from_slice(&hex_digits(own.prev));
            out.push(b'"');
        }
        Own::Seq => write_json(out, &own.seq),
        Own::Ts => {
            out.push(b'"');
            write_rfc3339_micros(out, own.unix_micros);
            out.push(b'"');
        }
        Own::V => write_json(out, &FORMAT_VERSION),
    }
}

/// Calls `f` on `map`'s entries in key order. A `Map` is a `BTreeMap`, already in order,
/// unless some crate in the build enables serde_json's `preserve_order`: then they are
/// sorted here, so the encoding never depends on the build.
fn for_each_sorted<'a>(map: &'a Map<String, Value>, mut f: impl FnMut(&'a String, &'a Value)) {
    static ORDERED: OnceLock<bool> = OnceLock::new();
    let ordered = *ORDERED.get_or_init(|| {
        let probe: Map<String, Value> = [("b", Value::Null), ("a", Value::Null)]
            .into_iter()
            .map(|(key, value)| (key.to_owned(), value))
            .collect();
        probe.keys().is_sorted()
    });
    if ordered {
        map.iter().for_each(|(key, value)| f(key, value));
    } else {
        let mut entries: Vec<(&String, &Value)> = map.iter().collect();
        entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
        entries.into_iter().for_each(|(key, value)| f(key, value));
    }
}

fn write_value(out: &mut Vec<u8>, value: FieldValue<'_>) {
    match value {
        FieldValue::Json(value) => write_canonical(out, value),
        FieldValue::Str(text) => write_str(out, text),
        FieldValue::Uint(n) => write_json(out, &n),
        FieldValue::Bool(b) => out.extend_from_slice(if b { b"true" } else { b"false" }),
        FieldValue::Null => out.extend_from_slice(b"null"),
        FieldValue::Strs(items) => write_array(out, items, |out, item| write_str(out, item)),
        FieldValue::Object(fields) => write_object(out, fields),
    }
}

/// Appends `value` as canonical JSON: object keys sorted by code point, no whitespace,
/// scalars as serde_json prints them.
pub(crate) fn write_canonical(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Object(map) => write_object(out, map),
        Value::Array(items) => write_array(out, items, write_canonical),
        Value::String(text) => write_str(out, text),
        scalar => write_json(out, scalar),
    }
}

fn write_object(out: &mut Vec<u8>, fields: &dyn RecordFields) {
    out.push(b'{');
    let mut members = Members::default();
    fields.each_sorted(&mut |key, value| {
        members.key(out, key);
        write_value(out, value);
    });
    out.push(b'}');
}

/// Writes the `"key":` of each member of an object, and the commas between them; debug
/// builds check the keys come in order (a typed record lists its own).
#[derive(Default)]
struct Members {
    written: bool,
    last: String,
}

impl Members {
    fn key(&mut self, out: &mut Vec<u8>, key: &str) {
        if cfg!(debug_assertions) {
            assert!(
                !self.written || self.last.as_str() <= key,
                "fields out of order: {key} after {}",
                self.last
            );
            self.last = key.to_owned();
        }
        if std::mem::replace(&mut self.written, true) {
            out.push(b',');
        }
        write_str(out, key);
        out.push(b':');
    }
}

fn write_array<T>(out: &mut Vec<u8>, items: &[T], mut write: impl FnMut(&mut Vec<u8>, &T)) {
    out.push(b'[');
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write(out, item);
    }
    out.push(b']');
}

fn write_json<T: Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) {
    serde_json::to_writer(out, value).expect("writing to a Vec cannot fail");
}

/// Appends a JSON string exactly as serde_json writes it. Most keys and values need no
/// escape (serde_json escapes only `"`, `\` and control characters), and copying those
/// whole is a large part of an append's cost saved.
fn write_str(out: &mut Vec<u8>, text: &str) {
    if needs_escape(text.as_bytes()) {
        write_json(out, text);
    } else {
        out.reserve(text.len() + 2);
        out.push(b'"');
        out.extend_from_slice(text.as_bytes());
        out.push(b'"');
    }
}

/// Whether `bytes` hold a `"`, a `\` or a control character, looked for eight bytes at a
/// time (a record is mostly strings: keys, digests, names). The tail is read as words that
/// overlap bytes already looked at, never copied to a padded buffer first: the load right
/// after such a copy stalls on store forwarding, and that stall cost more than the rest.
fn needs_escape(bytes: &[u8]) -> bool {
    let len = bytes.len();
    if len >= 8 {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            if word_needs_escape(load_u64(chunk)) {
                return true;
            }
        }
        return !chunks.remainder().is_empty() && word_needs_escape(load_u64(&bytes[len - 8..]));
    }
    // Shorter than a word (most keys): two overlapping halves, or three bytes that cover
    // one to three, placed in a word whose other bytes need no escape.
    let word = if len >= 4 {
        u64::from(load_u32(bytes)) | u64::from(load_u32(&bytes[len - 4..])) << 32
    } else if len > 0 {
        const PAD: u64 = u64::from_ne_bytes([b'a'; 8]) >> 24;
        let spread = [bytes[0], bytes[len / 2], bytes[len - 1]];
        u64::from(spread[0]) | u64::from(spread[1]) << 8 | u64::from(spread[2]) << 16 | PAD << 24
    } else {
        return false;
    };
    word_needs_escape(word)
}

fn load_u64(bytes: &[u8]) -> u64 {
    u64::from_le_bytes(bytes[..8].try_into().expect("eight bytes"))
}

fn load_u32(bytes: &[u8]) -> u32 {
    u32::from_le_bytes(bytes[..4].try_into().expect("four bytes"))
}

/// Whether any byte of `word` is a `"`, a `\` or below 0x20 (bytes of 0x80 and above
/// never need an escape).
#[inline]
fn word_needs_escape(word: u64) -> bool {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    // Sets a byte's high bit where that byte of `word` is below `n` (`word`'s bytes < 0x80).
    let below = |word: u64, n: u8| word.wrapping_sub(ONES * u64::from(n)) & !word & HIGHS;
    let ascii = !word & HIGHS;
    let special = below(word, 0x20)
        | below(word ^ (ONES * u64::from(b'"')), 1)
        | below(word ^ (ONES * u64::from(b'\\')), 1);
    special & ascii != 0
}

/// Appends `YYYY-MM-DDTHH:MM:SS.ffffffZ` for a time in microseconds since the Unix epoch
/// (years up to 9999). Written digit by digit: `write!` would be a sixth of an append's cost.
pub(crate) fn write_rfc3339_micros(out: &mut Vec<u8>, unix_micros: u64) {
    let secs = unix_micros / 1_000_000;
    let (year, month, day) = civil_from_days(secs / 86_400);
    let of_day = secs % 86_400;
    let parts = [
        (year, 4, b'-'),
        (month, 2, b'-'),
        (day, 2, b'T'),
        (of_day / 3600, 2, b':'),
        (of_day / 60 % 60, 2, b':'),
        (of_day % 60, 2, b'.'),
        (unix_micros % 1_000_000, 6, b'Z'),
    ];
    for (mut value, digits, separator) in parts {
        // Right to left, dividing by the constant 10: a multiply, not a division.
        let start = out.len();
        out.resize(start + digits, b'0');
        for digit in out[start..].iter_mut().rev() {
            *digit = b'0' + (value % 10) as u8;
            value /= 10;
        }
        out.push(separator);
    }
}

/// Proleptic Gregorian (year, month, day) of a day count since 1970-01-01, counting in
/// 400-year eras of 146097 days from 0000-03-01 so leap days fall at the end of a year.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let days = days + 719_468; // 0000-03-01 to 1970-01-01
    let era = days / 146_097;
    let day_of_era = days % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = era * 400 + year_of_era + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ts(unix_micros: u64) -> String {
        let mut out = Vec::new();
        write_rfc3339_micros(&mut out, unix_micros);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn timestamps_render_as_rfc3339_utc_micros() {
        assert_eq!(ts(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(ts(951_782_400_000_001), "2000-02-29T00:00:00.000001Z");
        assert_eq!(ts(1_700_000_000_123_456), "2023-11-14T22:13:20.123456Z");
        assert_eq!(ts(4_107_542_399_999_999), "2100-02-28T23:59:59.999999Z");
        assert_eq!(ts(4_107_542_400_000_000), "2100-03-01T00:00:00.000000Z");
    }

    #[test]
    fn records_are_sorted_compact_json() {
        let fields = json!({"zeta": {"b": [1, "x\n"], "a": null}, "kind": "request", "é": 1.5});
        let own = WriterFields {
            chain: "r1",
            prev: &[0xab; 32],
            seq: 7,
            unix_micros: 0,
        };
        let mut out = Vec::new();
        encode_record(&mut out, &own, fields.as_object().unwrap()).unwrap();
        let expected = format!(
            r#"{{"chain":"r1","kind":"request","prev":"{}","seq":7,"ts":"1970-01-01T00:00:00.000000Z","v":2,"zeta":{{"a":null,"b":[1,"x\n"]}},"é":1.5}}"#,
            "ab".repeat(32)
        );
        assert_eq!(String::from_utf8(out).unwrap(), expected);
    }

    #[test]
    fn strings_are_escaped_exactly_when_serde_json_would() {
        let mut samples: Vec<String> = vec![
            String::new(),
            "plain ascii text, longer than eight".into(),
            "caf\u{e9} \u{1f600} \u{7f}\u{80}\u{ff}".into(),
        ];
        // Every position, in strings shorter than a word, of a word, and longer.
        for special in ['"', '\\', '\n', '\u{0}', '\u{1f}', '\t'] {
            for base in [
                "",
                "a",
                "ab",
                "abc",
                "abcd",
                "abcde",
                "abcdef",
                "abcdefg",
                "abcdefgh",
                "abcdefghijklmnopqrst",
            ] {
                for at in 0..=base.len() {
                    let mut text: String = base.into();
                    text.insert(at, special);
                    samples.push(text.clone());
                    samples.push(format!("\u{e9}{text}"));
                }
            }
        }
        for text in samples {
            let mut ours = Vec::new();
            write_str(&mut ours, &text);
            assert_eq!(ours, serde_json::to_vec(&text).unwrap(), "{text:?}");
        }
    }

    #[test]
    fn own_fields_sort_before_a_name_as_strings_do() {
        for own in ["chain", "prev", "seq", "ts", "v"] {
            for name in [
                "", "a", "c", "chain", "chains", "ch", "prompt", "seq", "sequence", "t", "ts", "u",
                "v", "é",
            ] {
                assert_eq!(before(own, name), own <= name, "{own} {name}");
            }
        }
    }

    struct Unordered;

    impl RecordFields for Unordered {
        fn each_sorted(&self, field: &mut dyn FnMut(&str, FieldValue<'_>)) {
            field("zeta", FieldValue::Null);
            field("alpha", FieldValue::Null);
        }
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "fields out of order: alpha after zeta")]
    fn a_typed_record_out_of_key_order_is_caught_in_debug_builds() {
        let own = WriterFields {
            chain: "r1",
            prev: &[0; 32],
            seq: 1,
            unix_micros: 0,
        };
        let _ = encode_record(&mut Vec::new(), &own, &Unordered);
    }
}
