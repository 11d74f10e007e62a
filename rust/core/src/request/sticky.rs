//! Sticky assignment to a position: a request is served by a candidate version when its
//! caller's bucket is below the candidate's share. Buckets come from a hash of who is
//! calling, so every replica puts a caller in the same bucket, and raising a share only
//! adds buckets: nobody already on the candidate moves back.

use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::Api;

/// Shares are counted in buckets of this many (0.01 % each).
pub const BUCKETS: u32 = 10_000;

/// The bucket of a caller identity, the same on every replica.
pub fn bucket(identity: &[u8]) -> u32 {
    let digest = Sha256::digest(identity);
    let head = u64::from_le_bytes(digest[..8].try_into().expect("8 bytes of a SHA-256"));
    (head % u64::from(BUCKETS)) as u32
}

/// Who the request says its end user is: OpenAI's `user`, Anthropic's `metadata.user_id`.
/// None when absent, not a non-empty string, or the body is not a JSON object.
pub fn end_user(api: Api, body: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct OpenAi {
        user: Option<serde_json::Value>,
    }
    #[derive(Deserialize)]
    struct Metadata {
        user_id: Option<serde_json::Value>,
    }
    #[derive(Deserialize)]
    struct Anthropic {
        metadata: Option<Metadata>,
    }
    let value = match api {
        Api::Messages => {
            serde_json::from_slice::<Anthropic>(body)
                .ok()?
                .metadata?
                .user_id?
        }
        _ => serde_json::from_slice::<OpenAi>(body).ok()?.user?,
    };
    match value {
        serde_json::Value::String(s) if !s.is_empty() => Some(s),
        _ => None,
    }
}

/// The bucket of a request: its `x-gatewayd-sticky` header, else its end user, else the
/// caller's key.
pub fn request_bucket(api: Api, sticky: Option<&str>, body: &[u8], key: &str) -> u32 {
    if let Some(header) = sticky.filter(|h| !h.is_empty()) {
        return bucket(header.as_bytes());
    }
    match end_user(api, body) {
        Some(user) => bucket(user.as_bytes()),
        None => bucket(key.as_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_stable_and_spread_evenly() {
        assert_eq!(bucket(b"alice"), bucket(b"alice"));
        let mut counts = [0u32; 10];
        for n in 0..20_000 {
            counts[(bucket(format!("user-{n}").as_bytes()) / 1_000) as usize] += 1;
        }
        for count in counts {
            assert!((1_800..=2_200).contains(&count), "{counts:?}");
        }
    }

    #[test]
    fn the_header_beats_the_end_user_which_beats_the_key() {
        let body = br#"{"model":"m","user":"u-1","messages":[]}"#;
        assert_eq!(
            request_bucket(Api::Chat, Some("h"), body, "k"),
            bucket(b"h")
        );
        assert_eq!(request_bucket(Api::Chat, None, body, "k"), bucket(b"u-1"));
        assert_eq!(
            request_bucket(Api::Chat, Some(""), body, "k"),
            bucket(b"u-1")
        );
        let anonymous = br#"{"model":"m","messages":[]}"#;
        assert_eq!(
            request_bucket(Api::Chat, None, anonymous, "k"),
            bucket(b"k")
        );
    }

    #[test]
    fn anthropic_end_users_come_from_metadata() {
        let body = br#"{"model":"m","metadata":{"user_id":"u-2"},"user":"not-this"}"#;
        assert_eq!(end_user(Api::Messages, body).as_deref(), Some("u-2"));
        assert_eq!(end_user(Api::Chat, body).as_deref(), Some("not-this"));
    }

    #[test]
    fn odd_end_users_fall_back_to_the_key() {
        for body in [
            &br#"{"user":""}"#[..],
            br#"{"user":7}"#,
            br#"{"user":null}"#,
            br#"[1,2]"#,
            b"not json",
            br#"{"metadata":"x"}"#,
        ] {
            assert_eq!(end_user(Api::Chat, body), None, "{body:?}");
            assert_eq!(end_user(Api::Messages, body), None, "{body:?}");
        }
    }
}
