//! Retention drops whole segments from the start, and what is kept still verifies; a
//! segment removed any other way is still caught.

use super::checkpoints::write_note;
use super::*;

/// 120 records over small segments, then retention down to about `max_bytes`.
fn retained_chain(max_bytes: u64) -> (TempDir, RetentionPlan, Checkpoint) {
    let root = TempDir::new().unwrap();
    let (mut writer, _) = AuditWriter::open(root.path(), CHAIN, small_segments()).unwrap();
    for n in 0..120 {
        writer.append(fields(n)).unwrap();
    }
    let policy = RetentionPolicy {
        max_bytes: Some(max_bytes),
        ..RetentionPolicy::default()
    };
    let plan = writer
        .plan_retention(&policy)
        .unwrap()
        .expect("something to drop");
    assert_eq!(plan.record_seq, 121, "the decision is recorded first");
    assert!(matches!(
        writer.apply_retention(&plan),
        Err(AuditError::RetentionUnpinned(121))
    ));
    let checkpoint = writer.checkpoint("gatewayd.test");
    write_note(root.path(), &checkpoint);
    assert_eq!(writer.apply_retention(&plan).unwrap(), plan.segments);
    (root, plan, checkpoint)
}

#[test]
fn what_retention_keeps_still_verifies_and_proves() {
    let (root, plan, checkpoint) = retained_chain(3000);
    assert!(!segment(root.path(), plan.first_segment - 1).exists());
    let report = verify_chain(root.path(), CHAIN).unwrap();
    assert_eq!(
        (report.first_segment, report.first_seq),
        (plan.first_segment, plan.first_seq)
    );
    assert_eq!(
        (report.head_seq, report.records),
        (121, 122 - plan.first_seq)
    );
    assert_eq!(
        report.root, checkpoint.root,
        "the tree still spans the removed records"
    );
    let record: Value = serde_json::from_slice(&read_record(root.path(), 121)).unwrap();
    assert_eq!(record["kind"], "retention");
    assert_eq!(record["first_segment"], plan.first_segment);

    let kept = plan.first_seq + 2;
    let proof = prove_inclusion(root.path(), CHAIN, kept, 121).unwrap();
    assert!(verify_inclusion(
        &proof.leaf,
        kept - 1,
        121,
        &proof.hashes,
        &checkpoint.root
    ));
    assert!(matches!(
        prove_inclusion(root.path(), CHAIN, 3, 121),
        Err(ProofError::Pruned(_))
    ));
    assert!(matches!(
        prove_consistency(root.path(), CHAIN, 3, 121),
        Err(ProofError::Pruned(_))
    ));

    // The writer goes on, and later checkpoints extend the retained one.
    let (mut writer, report) = AuditWriter::open(root.path(), CHAIN, small_segments()).unwrap();
    assert_eq!(report.checkpoint, Some(121));
    for n in 0..30 {
        writer.append(fields(n)).unwrap();
    }
    write_note(root.path(), &writer.checkpoint("gatewayd.test"));
    drop(writer);
    let report = verify_chain(root.path(), CHAIN).unwrap();
    let proof = prove_consistency(root.path(), CHAIN, 121, report.head_seq).unwrap();
    assert!(verify_consistency(
        121,
        report.head_seq,
        &checkpoint.root,
        &report.root,
        &proof.hashes
    ));
}

fn read_record(root: &Path, seq: u64) -> Vec<u8> {
    RecordReader::open_at(root, CHAIN, seq)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .payload
}

#[test]
fn age_limits_drop_every_sealed_segment() {
    let root = TempDir::new().unwrap();
    let (mut writer, _) = AuditWriter::open(root.path(), CHAIN, small_segments()).unwrap();
    for n in 0..50 {
        writer.append(fields(n)).unwrap();
    }
    let sealed = verify_chain(root.path(), CHAIN).unwrap().segments - 1;
    let none = RetentionPolicy {
        max_age: Some(Duration::from_secs(3600)),
        max_bytes: Some(1 << 30),
    };
    assert_eq!(writer.plan_retention(&none).unwrap(), None);
    let policy = RetentionPolicy {
        max_age: Some(Duration::ZERO),
        ..RetentionPolicy::default()
    };
    let plan = writer.plan_retention(&policy).unwrap().unwrap();
    assert_eq!((plan.segments, plan.first_segment), (sealed, sealed + 1));
}

#[test]
fn the_first_kept_segment_removed_by_hand_is_caught() {
    let (root, plan, _) = retained_chain(3000);
    fs::remove_file(segment(root.path(), plan.first_segment)).unwrap();
    let failure = verify_chain(root.path(), CHAIN).unwrap_err();
    assert!(
        matches!(failure.problem, Problem::UnrecordedRemoval),
        "{failure}"
    );
    assert_eq!(failure.path, segment(root.path(), plan.first_segment));
}

#[test]
fn a_middle_segment_removed_after_retention_is_caught() {
    let (root, plan, _) = retained_chain(8000);
    assert!(verify_chain(root.path(), CHAIN).unwrap().segments > 3);
    fs::remove_file(segment(root.path(), plan.first_segment + 1)).unwrap();
    let failure = verify_chain(root.path(), CHAIN).unwrap_err();
    assert!(
        matches!(failure.problem, Problem::MissingSegment),
        "{failure}"
    );
    assert_eq!(failure.path, segment(root.path(), plan.first_segment + 1));
}

#[test]
fn retention_without_a_pinning_checkpoint_fails() {
    let (root, plan, _) = retained_chain(3000);
    fs::remove_dir_all(root.path().join(CHAIN).join(CHECKPOINT_DIR)).unwrap();
    let failure = verify_chain(root.path(), CHAIN).unwrap_err();
    assert!(
        matches!(failure.problem, Problem::RetentionUnpinned(seq) if seq == plan.first_seq),
        "{failure}"
    );
}

#[test]
fn early_segments_removed_without_retention_are_caught() {
    let root = TempDir::new().unwrap();
    super::checkpoints::chain_with_notes(root.path(), 100, &[100], small_segments());
    fs::remove_file(segment(root.path(), 1)).unwrap();
    fs::remove_file(segment(root.path(), 2)).unwrap();
    let failure = verify_chain(root.path(), CHAIN).unwrap_err();
    assert!(
        matches!(failure.problem, Problem::UnrecordedRemoval),
        "{failure}"
    );
    assert_eq!(failure.path, segment(root.path(), 2));
}
