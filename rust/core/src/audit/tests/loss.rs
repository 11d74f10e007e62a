//! Records lost from the end, and verification that reports every problem, not the first.

use super::checkpoints::{chain_with_notes, write_note};
use super::tamper::{frame, frames, replace_once, segmented_chain};
use super::*;

fn cut_end(path: &Path, bytes: u64) {
    let file = OpenOptions::new().write(true).open(path).unwrap();
    let len = file.metadata().unwrap().len();
    file.set_len(len - bytes).unwrap();
}

fn problems(root: &Path) -> Vec<String> {
    check_chain(root, CHAIN)
        .problems
        .iter()
        .map(ToString::to_string)
        .collect()
}

#[test]
fn a_partial_record_ending_the_chain_is_reported_as_loss() {
    let root = TempDir::new().unwrap();
    write_chain(root.path(), 5, AuditOptions::default());
    cut_end(&segment(root.path(), 1), 5);
    let report = check_chain(root.path(), CHAIN);
    assert_eq!((report.records, report.head_seq), (4, 4));
    let [failure] = report.problems.as_slice() else {
        panic!("{:?}", report.problems)
    };
    assert!(
        matches!(failure.problem, Problem::TornTail { after: 4, .. }),
        "{failure}"
    );
    let text = failure.to_string();
    assert!(
        text.contains("possible crash") && text.contains("records after seq 4 are lost"),
        "{text}"
    );
    assert!(verify_chain(root.path(), CHAIN).is_err());
}

#[test]
fn a_cut_into_signed_records_is_loss_beside_the_torn_tail() {
    let root = TempDir::new().unwrap();
    chain_with_notes(root.path(), 10, &[10], AuditOptions::default());
    cut_end(&segment(root.path(), 1), 5);
    let report = check_chain(root.path(), CHAIN);
    let kinds: Vec<&Problem> = report.problems.iter().map(|p| &p.problem).collect();
    assert!(
        matches!(
            kinds.as_slice(),
            [
                Problem::TornTail { after: 9, .. },
                Problem::CheckpointBeyondEnd { size: 10, head: 9 }
            ]
        ),
        "{kinds:?}"
    );
    assert_eq!(report.checkpoints[0].root, RootCheck::NotChecked);
}

#[test]
fn every_problem_of_a_chain_is_reported() {
    let root = segmented_chain();
    let dir = root.path().join(CHAIN);
    let count = fs::read_dir(&dir)
        .unwrap()
        .filter(|entry| entry.as_ref().unwrap().path().extension() == Some("seg".as_ref()))
        .count() as u64;
    assert!(count >= 6, "{count} segments");
    // An edited record in segment 2, a flipped byte in segment 4, segment 5 removed.
    let path = segment(root.path(), 2);
    let mut bytes = fs::read(&path).unwrap();
    let first = frames(&bytes)[0].clone();
    let edited = replace_once(&bytes[first.start + 8..first.end], "\"acme\"", "\"evil\"");
    bytes.splice(first, frame(&edited));
    fs::write(&path, bytes).unwrap();
    let path = segment(root.path(), 4);
    let mut bytes = fs::read(&path).unwrap();
    let end = frames(&bytes)[1].end;
    bytes[end - 3] ^= 1;
    fs::write(&path, bytes).unwrap();
    fs::remove_file(segment(root.path(), 5)).unwrap();

    let report = check_chain(root.path(), CHAIN);
    let found: Vec<(PathBuf, &Problem)> = report
        .problems
        .iter()
        .map(|p| (p.path.clone(), &p.problem))
        .collect();
    assert!(
        matches!(
            found.as_slice(),
            [
                (_, Problem::PrevMismatch { .. }),
                (_, Problem::CrcMismatch),
                (_, Problem::MissingSegment)
            ]
        ),
        "{found:?}"
    );
    let paths: Vec<PathBuf> = found.into_iter().map(|(path, _)| path).collect();
    assert_eq!(paths, [2, 4, 5].map(|n| segment(root.path(), n)).to_vec());
    // Reading went on after each: the last segment's records were verified too.
    assert_eq!(report.head_seq, 100);
    assert_eq!(report.segments, count - 1);
}

#[test]
fn a_bad_note_does_not_hide_the_records_problems() {
    let root = TempDir::new().unwrap();
    chain_with_notes(root.path(), 20, &[5, 10], AuditOptions::default());
    let note = root
        .path()
        .join(CHAIN)
        .join(CHECKPOINT_DIR)
        .join(note_name(5));
    fs::write(&note, "not a note").unwrap();
    let mut other = read_note(
        &root
            .path()
            .join(CHAIN)
            .join(CHECKPOINT_DIR)
            .join(note_name(10)),
    )
    .unwrap();
    other.size = 30;
    write_note(root.path(), &other);
    cut_end(&segment(root.path(), 1), 3);
    let found = problems(root.path());
    assert_eq!(found.len(), 3, "{found:#?}");
    assert!(found[0].contains("5.note") && found[0].contains("invalid checkpoint"));
    assert!(found[1].contains("possible crash"), "{}", found[1]);
    assert!(found[2].contains("30.note") && found[2].contains("seq 20 to 30, signed, are lost"));
}
