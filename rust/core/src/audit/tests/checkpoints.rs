//! Checkpoint notes: their text, and how verification and reopening hold the chain to them.

use super::*;

/// A note as the control layer writes it; signatures are not Rust's business, so any
/// well-formed signature line does.
pub(super) fn write_note(root: &Path, checkpoint: &Checkpoint) -> PathBuf {
    let dir = root.join(CHAIN).join(CHECKPOINT_DIR);
    fs::create_dir_all(&dir).unwrap();
    let path = dir.join(note_name(checkpoint.size));
    fs::write(
        &path,
        format!("{}\n\u{2014} test AAAAAA==\n", checkpoint.body()),
    )
    .unwrap();
    path
}

/// A chain of `records` records with a note at each of `sizes`, written as it grows.
pub(super) fn chain_with_notes(root: &Path, records: u64, sizes: &[u64], opts: AuditOptions) {
    let (mut writer, _) = AuditWriter::open(root, CHAIN, opts).unwrap();
    for n in 0..=records {
        if sizes.contains(&n) {
            write_note(root, &writer.checkpoint("gatewayd.test"));
        }
        if n < records {
            writer.append(fields(n)).unwrap();
        }
    }
}

#[test]
fn the_body_is_a_tlog_checkpoint() {
    let checkpoint = Checkpoint {
        origin: "gatewayd.example/replica-1".into(),
        size: 7,
        root: [0xab; 32],
    };
    let body = checkpoint.body();
    assert_eq!(
        body,
        "gatewayd.example/replica-1\n7\nq6urq6urq6urq6urq6urq6urq6urq6urq6urq6urq6s=\n"
    );
    let note = format!("{body}\n\u{2014} gatewayd.example/audit c2lnbmF0dXJl\n");
    assert_eq!(Checkpoint::parse_note(&note).unwrap(), checkpoint);
    assert!(checkpoint.is_for("replica-1"));
    assert!(!checkpoint.is_for("1") && !checkpoint.is_for("replica-2"));
    let empty = Checkpoint {
        origin: "o/c".into(),
        size: 0,
        root: empty_root(),
    };
    assert_eq!(
        Checkpoint::parse_note(&format!("{}\n\u{2014} k AAAA\n", empty.body())).unwrap(),
        empty
    );
}

#[test]
fn malformed_notes_are_refused_with_the_reason() {
    let root = "q6urq6urq6urq6urq6urq6urq6urq6urq6urq6urq6s=";
    let sig = "\u{2014} k AAAA\n";
    let cases = [
        (format!("o/c\n7\n{root}\n"), "no blank line"),
        (format!("o/c\n7\n{root}\n\n"), "no signature lines"),
        (format!("o/c\n7\n{root}\n\n- k AAAA\n"), "em dash"),
        (format!("o/c\n07\n{root}\n\n{sig}"), "not a decimal"),
        (format!("o/c\n-1\n{root}\n\n{sig}"), "not a decimal"),
        (format!("o/c\n7\nq6ur\n\n{sig}"), "not 32 bytes"),
        (format!("o/c\n7\n\n\n{sig}"), "no root hash"),
        (format!("o/c\n7\n{root}\t\n\n{sig}"), "control character"),
    ];
    for (note, reason) in cases {
        let err = Checkpoint::parse_note(&note).unwrap_err();
        assert!(err.contains(reason), "{note:?}: {err}");
    }
}

#[test]
fn verify_holds_every_note_to_the_chain() {
    let root = TempDir::new().unwrap();
    chain_with_notes(root.path(), 40, &[0, 1, 17, 40], small_segments());
    let report = verify_chain(root.path(), CHAIN).unwrap();
    let sizes: Vec<u64> = report.checkpoints.iter().map(|note| note.size).collect();
    assert_eq!(sizes, [0, 1, 17, 40]);
    assert!(report
        .checkpoints
        .iter()
        .all(|note| note.root == RootCheck::Matches));
}

#[test]
fn a_note_that_does_not_match_is_named() {
    let root = TempDir::new().unwrap();
    chain_with_notes(root.path(), 10, &[5], AuditOptions::default());
    let path = root.path().join(CHAIN).join("checkpoints/5.note");
    let text = fs::read_to_string(&path).unwrap();
    let forged = Checkpoint {
        root: [7; 32],
        ..Checkpoint::parse_note(&text).unwrap()
    };
    write_note(root.path(), &forged);
    let failure = verify_chain(root.path(), CHAIN).unwrap_err();
    assert!(
        matches!(failure.problem, Problem::CheckpointMismatch { size: 5, .. }),
        "{failure}"
    );
    assert_eq!((failure.path, failure.seq), (path, Some(5)));
}

#[test]
fn records_cut_from_the_end_are_caught_by_a_later_note() {
    let root = TempDir::new().unwrap();
    chain_with_notes(root.path(), 10, &[10], AuditOptions::default());
    let path = segment(root.path(), 1);
    let bytes = fs::read(&path).unwrap();
    let last = tamper::frames(&bytes).pop().unwrap();
    fs::write(&path, &bytes[..last.start]).unwrap();
    let failure = verify_chain(root.path(), CHAIN).unwrap_err();
    assert!(
        matches!(
            failure.problem,
            Problem::CheckpointBeyondEnd { size: 10, head: 9 }
        ),
        "{failure}"
    );
    let reopened = AuditWriter::open(root.path(), CHAIN, AuditOptions::default());
    assert!(
        matches!(reopened, Err(AuditError::Corrupt(_))),
        "a writer must not extend it"
    );
}

#[test]
fn a_checkpoint_record_needs_its_note() {
    let root = TempDir::new().unwrap();
    let (mut writer, _) = AuditWriter::open(root.path(), CHAIN, AuditOptions::default()).unwrap();
    writer.append(fields(0)).unwrap();
    let checkpoint = writer.checkpoint("gatewayd.test");
    let note = write_note(root.path(), &checkpoint);
    let record = json!({"kind": "checkpoint", "size": 1, "root": base64_hash(&checkpoint.root)});
    writer.append(record.as_object().unwrap().clone()).unwrap();
    drop(writer);
    verify_chain(root.path(), CHAIN).unwrap();

    fs::remove_file(&note).unwrap();
    let failure = verify_chain(root.path(), CHAIN).unwrap_err();
    assert!(
        matches!(failure.problem, Problem::CheckpointMissing(1)),
        "{failure}"
    );
    assert_eq!((failure.path, failure.seq), (note, Some(2)));
}

#[test]
fn a_note_of_another_chain_is_refused() {
    let root = TempDir::new().unwrap();
    chain_with_notes(root.path(), 3, &[], AuditOptions::default());
    let other = Checkpoint {
        origin: "gatewayd.test/replica-2".into(),
        size: 3,
        root: [0; 32],
    };
    write_note(root.path(), &other);
    let failure = verify_chain(root.path(), CHAIN).unwrap_err();
    assert!(
        matches!(&failure.problem, Problem::BadCheckpoint(what) if what.contains("replica-2")),
        "{failure}"
    );
}

#[test]
fn reopening_re_verifies_from_the_last_checkpoint() {
    let root = TempDir::new().unwrap();
    chain_with_notes(root.path(), 60, &[20, 50], small_segments());
    let (_, report) = AuditWriter::open(root.path(), CHAIN, small_segments()).unwrap();
    assert_eq!(report.checkpoint, Some(50));

    // A torn write after the checkpoint is what a crash leaves: cut, and the chain still holds.
    let last = segment(
        root.path(),
        verify_chain(root.path(), CHAIN).unwrap().segments,
    );
    append_bytes(&last, &[9, 0, 0, 0, 1, 2]);
    let (_, report) = AuditWriter::open(root.path(), CHAIN, small_segments()).unwrap();
    assert!(report.torn_tail.is_some());
    assert_eq!(report.checkpoint, Some(50));

    // A last checkpoint the chain no longer agrees with stops the writer.
    let text = fs::read_to_string(root.path().join(CHAIN).join("checkpoints/50.note")).unwrap();
    write_note(
        root.path(),
        &Checkpoint {
            root: [1; 32],
            ..Checkpoint::parse_note(&text).unwrap()
        },
    );
    match AuditWriter::open(root.path(), CHAIN, small_segments()) {
        Err(AuditError::Corrupt(failure)) => {
            assert!(
                matches!(
                    failure.problem,
                    Problem::CheckpointMismatch { size: 50, .. }
                ),
                "{failure}"
            )
        }
        other => panic!(
            "expected a refusal, got {:?}",
            other.map(|(_, report)| report)
        ),
    }
}
