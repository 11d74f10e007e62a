//! The record scanner against malformed and unusual JSON.

use super::super::scan::{scan_head, RecordHead};

#[test]
fn the_chain_fields_are_found_at_the_top_level_only() {
    let record = br#"{"a":{"seq":9,"kind":"x"},"chain":"r1","kind":"checkpoint","prev":"00ff","s":"q\"\\\u00e9\n","seq":7,"v":2,"z":[1,-2.5e+3,true,false,null,[],{}]}"#;
    let head = scan_head(record).unwrap();
    assert_eq!(
        head,
        RecordHead {
            v: 2,
            seq: 7,
            prev: b"00ff",
            chain: b"r1",
            kind: Some(b"checkpoint")
        }
    );
    let spaced = b" { \"v\" : 2 , \"seq\":1,\"prev\":\"\",\"chain\":\"c\" } ";
    assert_eq!(scan_head(spaced).unwrap().kind, None);
}

#[test]
fn malformed_records_are_refused_like_a_json_parser_would() {
    let cases: [(&[u8], &str); 13] = [
        (
            b"{\"v\":2,\"seq\":1,\"prev\":\"\",\"chain\":\"\xff\"}",
            "invalid UTF-8",
        ),
        (
            br#"{"v":2,"seq":1,"prev":"","chain":"c","seq":2}"#,
            "duplicate field `seq`",
        ),
        (br#"{"v":2,"seq":1,"prev":""}"#, "missing field `chain`"),
        (
            br#"{"v":2,"seq":01,"prev":"","chain":"c"}"#,
            "expected an unsigned integer",
        ),
        (
            br#"{"v":2,"seq":-1,"prev":"","chain":"c"}"#,
            "expected an unsigned integer",
        ),
        (
            br#"{"v":2,"seq":99999999999999999999,"prev":"","chain":"c"}"#,
            "too large",
        ),
        (
            br#"{"v":2,"seq":1,"prev":"","chain":"c","x":01}"#,
            "leading zero",
        ),
        (
            br#"{"v":2,"seq":1,"prev":"","chain":"c","x":"\q"}"#,
            "bad escape",
        ),
        (
            b"{\"v\":2,\"seq\":1,\"prev\":\"\",\"chain\":\"c\x01\"}",
            "control character",
        ),
        (
            br#"{"v":2,"seq":1,"prev":"","chain":"c","x":tru}"#,
            "expected a value",
        ),
        (
            br#"{"v":2,"seq":1,"prev":"","chain":"c"}x"#,
            "trailing characters",
        ),
        (br#"{"v":2,"seq":1,"prev":"","chain":"c""#, "expected `}`"),
        (&[b'['; 100], "expected `{`"),
    ];
    for (record, reason) in cases {
        let err = scan_head(record).unwrap_err();
        assert!(
            err.contains(reason),
            "{}: {err}",
            String::from_utf8_lossy(record)
        );
    }
    let deep = format!("{{\"x\":{}{}}}", "[".repeat(100), "]".repeat(100));
    assert!(scan_head(deep.as_bytes())
        .unwrap_err()
        .contains("nested too deeply"));
}
