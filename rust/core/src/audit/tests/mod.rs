//! Writer and reader behaviour; tampering is in `tamper.rs`.

mod checkpoints;
mod loss;
mod merkle;
mod reserve;
mod retention;
mod scan;
mod sync;
mod tamper;

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Map, Value};
use tempfile::TempDir;

use super::*;

const CHAIN: &str = "replica-1";

fn fields(n: u64) -> Map<String, Value> {
    let value = json!({"kind": "request", "tenant": "acme", "n": n, "versions": {"policy": 3, "routing": 1}});
    value.as_object().unwrap().clone()
}

fn small_segments() -> AuditOptions {
    AuditOptions {
        segment_bytes: 1024,
        sync: SyncPolicy::Never,
    }
}

/// Writes `records` records to a new chain and returns the writer's head.
fn write_chain(root: &Path, records: u64, opts: AuditOptions) -> (u64, [u8; 32]) {
    let (mut writer, _) = AuditWriter::open(root, CHAIN, opts).unwrap();
    for n in 0..records {
        writer.append(fields(n)).unwrap();
    }
    writer.sync().unwrap();
    writer.head()
}

fn segment(root: &Path, number: u64) -> PathBuf {
    root.join(CHAIN).join(format!("{number:08}.seg"))
}

fn append_bytes(path: &Path, bytes: &[u8]) {
    OpenOptions::new()
        .append(true)
        .open(path)
        .unwrap()
        .write_all(bytes)
        .unwrap();
}

#[test]
fn appended_records_verify_and_read_back() {
    let root = TempDir::new().unwrap();
    let head = write_chain(root.path(), 100, AuditOptions::default());

    let report = verify_chain(root.path(), CHAIN).unwrap();
    assert_eq!(
        (report.records, report.segments, report.tail_bytes),
        (100, 1, 0)
    );
    assert_eq!((report.head_seq, report.head_hash), head);

    let records: Vec<Record> = RecordReader::open(root.path(), CHAIN)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let mut prev = [0u8; 32];
    for (i, record) in records.iter().enumerate() {
        let fields = record.fields().unwrap();
        assert_eq!(record.seq, i as u64 + 1);
        assert_eq!(fields["seq"], record.seq);
        assert_eq!(fields["n"], i as u64);
        assert_eq!(
            (fields["chain"].as_str(), fields["v"].as_u64()),
            (Some(CHAIN), Some(2))
        );
        assert_eq!(fields["prev"], hex::encode(prev));
        assert_eq!(
            fields["ts"].as_str().unwrap().len(),
            "2025-01-01T00:00:00.000000Z".len()
        );
        prev = record.hash;
    }
    assert_eq!(prev, head.1);
}

#[test]
fn reopening_continues_the_chain() {
    let root = TempDir::new().unwrap();
    let (seq, hash) = write_chain(root.path(), 10, AuditOptions::default());

    let (mut writer, report) =
        AuditWriter::open(root.path(), CHAIN, AuditOptions::default()).unwrap();
    assert_eq!(
        report,
        OpenReport {
            created: false,
            torn_tail: None,
            checkpoint: None,
        }
    );
    assert_eq!(writer.head(), (seq, hash));
    assert_eq!(writer.append(fields(10)).unwrap().0, 11);
    drop(writer);

    let records: Vec<Record> = RecordReader::open(root.path(), CHAIN)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(records.len(), 11);
    assert_eq!(records[10].fields().unwrap()["prev"], hex::encode(hash));
}

#[test]
fn rotation_spreads_the_chain_over_segments() {
    let root = TempDir::new().unwrap();
    let head = write_chain(root.path(), 200, small_segments());
    let report = verify_chain(root.path(), CHAIN).unwrap();
    assert!(report.segments > 5, "{report:?}");
    assert_eq!(
        (report.records, report.head_seq, report.head_hash),
        (200, head.0, head.1)
    );

    let (mut writer, _) = AuditWriter::open(root.path(), CHAIN, small_segments()).unwrap();
    for n in 200..300 {
        writer.append(fields(n)).unwrap();
    }
    drop(writer);
    let report = verify_chain(root.path(), CHAIN).unwrap();
    assert_eq!(report.records, 300);
    assert!(
        fs::metadata(segment(root.path(), report.segments - 1))
            .unwrap()
            .len()
            >= 1024
    );
}

#[test]
fn torn_tails_are_cut_on_open() {
    let bad_crc = [&[5u8, 0, 0, 0, 1, 2, 3, 4][..], b"junk!"].concat();
    // What a crash can leave: (what, bytes lost from the end, bytes left after). Zeros are
    // also what a killed writer's reserve looks like: cut, but no torn write to report.
    let tears: [(&str, u64, &[u8]); 5] = [
        ("incomplete frame", 7, b""),
        ("garbage", 0, b"\xde\xad\xbe\xef garbage"),
        ("bad crc on the final frame", 0, &bad_crc),
        (
            "a frame copied but never announced",
            0,
            &[&[0u8; 8][..], b"{\"kind\":"].concat(),
        ),
        ("unwritten zeros", 0, &[0; 300]),
    ];
    for (what, lost, left) in tears {
        let root = TempDir::new().unwrap();
        let (seq, _) = write_chain(root.path(), 20, AuditOptions::default());
        let path = segment(root.path(), 1);
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        file.set_len(file.metadata().unwrap().len() - lost).unwrap();
        append_bytes(&path, left);
        let torn_len = fs::metadata(&path).unwrap().len();

        let (mut writer, report) =
            AuditWriter::open(root.path(), CHAIN, AuditOptions::default()).unwrap();
        if !left.is_empty() && left.iter().all(|&b| b == 0) {
            assert_eq!(report.torn_tail, None, "{what}");
        } else {
            let torn = report
                .torn_tail
                .unwrap_or_else(|| panic!("{what}: nothing cut"));
            assert_eq!(
                (torn.segment.as_path(), torn.offset + torn.bytes_cut),
                (path.as_path(), torn_len),
                "{what}"
            );
        }
        let expected_seq = if lost > 0 { seq - 1 } else { seq };
        assert_eq!(writer.head().0, expected_seq, "{what}");
        writer.append(fields(99)).unwrap();
        drop(writer);
        assert_eq!(
            verify_chain(root.path(), CHAIN).unwrap().records,
            expected_seq + 1,
            "{what}"
        );
    }
}

#[test]
fn damage_before_the_end_is_not_cut() {
    // A payload byte, then the top byte of a length field, which then overruns the file.
    for (what, at) in [("payload", 20), ("length", 3)] {
        let root = TempDir::new().unwrap();
        write_chain(root.path(), 20, AuditOptions::default());
        let path = segment(root.path(), 1);
        let mut bytes = fs::read(&path).unwrap();
        let frame = tamper::frames(&bytes)[10].start;
        bytes[frame + at] ^= 0x7f;
        fs::write(&path, &bytes).unwrap();

        match AuditWriter::open(root.path(), CHAIN, AuditOptions::default()) {
            Err(AuditError::Corrupt(failure)) => {
                assert_eq!(
                    (failure.offset, failure.seq),
                    (Some(frame as u64), Some(11)),
                    "{what}"
                )
            }
            other => panic!(
                "{what}: expected corruption, got {:?}",
                other.map(|(_, report)| report)
            ),
        }
        assert_eq!(
            fs::read(&path).unwrap(),
            bytes,
            "{what}: nothing may be cut"
        );
    }
}

#[test]
fn writer_fields_cannot_be_supplied() {
    let root = TempDir::new().unwrap();
    let (mut writer, _) = AuditWriter::open(root.path(), CHAIN, AuditOptions::default()).unwrap();
    for name in WRITER_FIELDS {
        let mut colliding = fields(0);
        colliding.insert(name.to_owned(), json!(1));
        assert!(matches!(writer.append(colliding), Err(AuditError::ReservedField(n)) if n == name));
    }
    assert_eq!(writer.head().0, 0);
    assert_eq!(writer.append(fields(0)).unwrap().0, 1);
}

#[test]
fn oversized_records_are_refused_without_harm() {
    let root = TempDir::new().unwrap();
    let (mut writer, _) = AuditWriter::open(root.path(), CHAIN, AuditOptions::default()).unwrap();
    let mut huge = fields(0);
    huge.insert("body".into(), json!("x".repeat(MAX_PAYLOAD as usize)));
    assert!(matches!(
        writer.append(huge),
        Err(AuditError::RecordTooLarge(_))
    ));
    assert_eq!(writer.append(fields(1)).unwrap().0, 1);
}

#[test]
fn chain_names_are_checked_and_listed() {
    let root = TempDir::new().unwrap();
    for bad in ["", ".hidden", "a/b", "..", "ü", &"x".repeat(65)] {
        let result = AuditWriter::open(root.path(), bad, AuditOptions::default());
        assert!(
            matches!(result, Err(AuditError::InvalidChainName(_))),
            "{bad:?}"
        );
    }
    assert_eq!(
        list_chains(&root.path().join("absent")).unwrap(),
        Vec::<String>::new()
    );
    for chain in ["replica-2", "replica-1"] {
        let (_, report) = AuditWriter::open(root.path(), chain, AuditOptions::default()).unwrap();
        assert!(report.created);
    }
    fs::write(root.path().join("stray-file"), b"").unwrap();
    assert_eq!(
        list_chains(root.path()).unwrap(),
        ["replica-1", "replica-2"]
    );
}

#[test]
fn a_chain_has_one_writer_at_a_time() {
    let root = TempDir::new().unwrap();
    let (first, _) = AuditWriter::open(root.path(), CHAIN, AuditOptions::default()).unwrap();
    let second = AuditWriter::open(root.path(), CHAIN, AuditOptions::default());
    assert!(matches!(second, Err(AuditError::Locked(_))));
    drop(first);
    assert!(AuditWriter::open(root.path(), CHAIN, AuditOptions::default()).is_ok());
}

#[test]
fn sync_policies_all_produce_a_valid_chain() {
    for sync in [
        SyncPolicy::Always,
        SyncPolicy::Group,
        SyncPolicy::Interval(Duration::from_secs(60)),
        SyncPolicy::Never,
    ] {
        let root = TempDir::new().unwrap();
        let (mut writer, _) = AuditWriter::open(
            root.path(),
            CHAIN,
            AuditOptions {
                sync,
                ..small_segments()
            },
        )
        .unwrap();
        for n in 0..50 {
            writer.append(fields(n)).unwrap();
        }
        writer.sync().unwrap();
        assert_eq!(
            verify_chain(root.path(), CHAIN).unwrap().records,
            50,
            "{sync:?}"
        );
    }
}

#[test]
fn an_empty_chain_verifies_and_a_missing_one_does_not() {
    let root = TempDir::new().unwrap();
    AuditWriter::open(root.path(), CHAIN, AuditOptions::default()).unwrap();
    let report = verify_chain(root.path(), CHAIN).unwrap();
    assert_eq!(
        (report.records, report.segments, report.head_seq),
        (0, 1, 0)
    );
    let failure = verify_chain(root.path(), "absent").unwrap_err();
    assert!(matches!(failure.problem, Problem::Io(_)), "{failure}");
}
