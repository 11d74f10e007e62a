//! What the pipeline reads from a request's headers, found in one pass over them (names in
//! lowercase, as HTTP/2 and the ASGI spec give them).

/// A request id longer than this, or with a byte outside `!`..=`~`, is replaced by a fresh one.
pub const MAX_REQUEST_ID: usize = 128;

/// What the pipeline looks for in the request headers.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Seen<'h> {
    /// The first `authorization` or `x-api-key` header, (name, value).
    pub credential: Option<(&'h [u8], &'h [u8])>,
    /// The caller's `x-request-id` when it is sane (so traces join up): the first such.
    pub request_id: Option<&'h str>,
    /// The last `content-length`, when it is all digits (saturating: huge is too large).
    pub content_length: Option<u64>,
    /// The last `x-gatewayd-cache`, lowercased: `use` or `bypass` ask for something.
    pub cache: Option<Vec<u8>>,
    /// The forwarded headers that change the answer, `name:value\n` each (values as
    /// Latin-1): part of the cache key.
    pub vary: String,
    /// Every `transfer-encoding` value, when any was sent.
    pub transfer_encoding: Option<Vec<&'h [u8]>>,
    /// The last `x-gatewayd-sticky`: who the caller says it is, for canary assignment.
    pub sticky: Option<&'h [u8]>,
}

/// One pass over `headers`; `answer_changing` names the forwarded headers that change what
/// a provider answers (API version, betas).
pub fn scan<'h>(
    headers: impl IntoIterator<Item = (&'h [u8], &'h [u8])>,
    answer_changing: &[Vec<u8>],
) -> Seen<'h> {
    let mut seen = Seen::default();
    for (name, value) in headers {
        match name {
            b"authorization" | b"x-api-key" => {
                seen.credential.get_or_insert((name, value));
            }
            b"content-length" => seen.content_length = digits(value),
            b"x-request-id" if seen.request_id.is_none() && sane_id(value) => {
                seen.request_id = std::str::from_utf8(value).ok();
            }
            b"x-gatewayd-cache" => seen.cache = Some(value.to_ascii_lowercase()),
            b"x-gatewayd-sticky" => seen.sticky = Some(value),
            b"transfer-encoding" => seen
                .transfer_encoding
                .get_or_insert_with(Vec::new)
                .push(value),
            _ if answer_changing.iter().any(|n| n == name) => {
                latin1_into(&mut seen.vary, name);
                seen.vary.push(':');
                latin1_into(&mut seen.vary, value);
                seen.vary.push('\n');
            }
            _ => {}
        }
    }
    seen
}

impl Seen<'_> {
    /// The caller's key as sent in either header (`Bearer` and surrounding whitespace
    /// stripped), as Latin-1 text.
    pub fn key(&self) -> Option<String> {
        let (name, mut value) = self.credential?;
        if name == b"authorization"
            && value.len() >= 7
            && value[..7].eq_ignore_ascii_case(b"bearer ")
        {
            value = &value[7..];
        }
        let mut key = String::new();
        latin1_into(&mut key, value);
        Some(key.trim().to_owned())
    }
}

fn digits(value: &[u8]) -> Option<u64> {
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(value.iter().fold(0u64, |n, d| {
        n.saturating_mul(10).saturating_add(u64::from(d - b'0'))
    }))
}

fn sane_id(value: &[u8]) -> bool {
    (1..=MAX_REQUEST_ID).contains(&value.len()) && value.iter().all(|&c| (33..127).contains(&c))
}

/// HTTP header bytes as text: each byte is the code point of the same value.
pub fn latin1_into(out: &mut String, bytes: &[u8]) {
    out.extend(bytes.iter().map(|&b| char::from(b)));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer_changing() -> Vec<Vec<u8>> {
        vec![b"openai-beta".to_vec(), b"anthropic-version".to_vec()]
    }

    #[test]
    fn finds_each_header_the_pipeline_acts_on_in_one_pass() {
        let headers: [(&[u8], &[u8]); 11] = [
            (b"host", b"gw"),
            (b"x-api-key", b"sk-first"),
            (b"authorization", b"Bearer second"),
            (b"content-length", b"12"),
            (b"x-request-id", b"trace-1"),
            (b"x-request-id", b"trace-2"),
            (b"x-gatewayd-cache", b"BYPASS"),
            (b"anthropic-version", b"2023-06-01"),
            (b"openai-beta", b"caf\xe9"),
            (b"transfer-encoding", b"gzip"),
            (b"transfer-encoding", b"chunked"),
        ];
        let seen = scan(headers, &answer_changing());
        assert_eq!(seen.credential, Some((&b"x-api-key"[..], &b"sk-first"[..])));
        assert_eq!(seen.request_id, Some("trace-1"));
        assert_eq!(seen.content_length, Some(12));
        assert_eq!(seen.cache.as_deref(), Some(&b"bypass"[..]));
        assert_eq!(
            seen.vary,
            "anthropic-version:2023-06-01\nopenai-beta:caf\u{e9}\n"
        );
        assert_eq!(
            seen.transfer_encoding,
            Some(vec![&b"gzip"[..], &b"chunked"[..]])
        );
        assert_eq!(seen.key().as_deref(), Some("sk-first"));
    }

    #[test]
    fn insane_ids_and_lengths_are_not_taken() {
        let long = [b'a'; MAX_REQUEST_ID + 1];
        for (id, taken) in [
            (&b""[..], false),
            (b"has space", false),
            (&long[..], false),
            (&long[1..], true),
        ] {
            let seen = scan([(&b"x-request-id"[..], id)], &[]);
            assert_eq!(seen.request_id.is_some(), taken, "{id:?}");
        }
        for (length, read) in [
            (&b"-1"[..], None),
            (b"", None),
            (b"1e3", None),
            (b"99999999999999999999999", Some(u64::MAX)),
        ] {
            assert_eq!(
                scan([(&b"content-length"[..], length)], &[]).content_length,
                read
            );
        }
        assert_eq!(scan([], &[]), Seen::default());
    }

    #[test]
    fn the_key_is_the_credential_without_its_scheme() {
        let key = |name: &'static [u8], value: &'static [u8]| scan([(name, value)], &[]).key();
        assert_eq!(
            key(b"authorization", b"bEaReR  sk-1 ").as_deref(),
            Some("sk-1")
        );
        assert_eq!(
            key(b"authorization", b"Basic abc").as_deref(),
            Some("Basic abc")
        );
        assert_eq!(
            key(b"x-api-key", b"Bearer sk-2").as_deref(),
            Some("Bearer sk-2")
        );
        assert_eq!(key(b"host", b"gw"), None);
    }
}
