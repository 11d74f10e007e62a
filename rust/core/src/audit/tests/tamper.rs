//! Every kind of tampering is caught, at the record or segment where it happened.

use std::ops::Range;

use super::*;

/// Byte ranges of a segment's record frames (its header frame excluded).
pub(super) fn frames(segment: &[u8]) -> Vec<Range<usize>> {
    let mut frames = Vec::new();
    let mut at = MAGIC.len() + 2;
    // Up to the end, or to the zeros a live writer reserved (a frame is never empty).
    while at + 8 <= segment.len() && segment[at..at + 8] != [0; 8] {
        let len = u32::from_le_bytes(segment[at..at + 4].try_into().unwrap()) as usize;
        frames.push(at..at + 8 + len);
        at += 8 + len;
    }
    frames.remove(0);
    frames
}

pub(super) fn frame(payload: &[u8]) -> Vec<u8> {
    let mut frame = (payload.len() as u32).to_le_bytes().to_vec();
    frame.extend_from_slice(&crc32c::crc32c(payload).to_le_bytes());
    frame.extend_from_slice(payload);
    frame
}

pub(super) fn replace_once(haystack: &[u8], from: &str, to: &str) -> Vec<u8> {
    let text = std::str::from_utf8(haystack).unwrap();
    assert_eq!(text.matches(from).count(), 1, "{from} in {text}");
    text.replace(from, to).into_bytes()
}

/// Writes a one-segment chain of 20 records, applies `edit` to its bytes given the frame
/// ranges, and returns the verification failure.
fn tamper(edit: impl FnOnce(&mut Vec<u8>, &[Range<usize>])) -> VerifyFailure {
    let root = TempDir::new().unwrap();
    write_chain(root.path(), 20, AuditOptions::default());
    let path = segment(root.path(), 1);
    let mut bytes = fs::read(&path).unwrap();
    let frames = frames(&bytes);
    edit(&mut bytes, &frames);
    fs::write(&path, &bytes).unwrap();
    let failure = verify_chain(root.path(), CHAIN).unwrap_err();
    assert!(!failure.to_string().contains('\n'));
    failure
}

#[test]
fn edited_payload_with_a_valid_crc_breaks_the_next_link() {
    let mut next_frame = 0;
    let failure = tamper(|bytes, frames| {
        let edited = replace_once(
            &bytes[frames[4].start + 8..frames[4].end],
            "\"acme\"",
            "\"acmf\"",
        );
        bytes.splice(frames[4].clone(), frame(&edited));
        next_frame = frames[5].start;
    });
    assert!(
        matches!(failure.problem, Problem::PrevMismatch { .. }),
        "{failure}"
    );
    assert_eq!(
        (failure.seq, failure.offset),
        (Some(6), Some(next_frame as u64))
    );
}

#[test]
fn flipped_byte_fails_its_crc() {
    let mut at = 0;
    let failure = tamper(|bytes, frames| {
        at = frames[7].start;
        bytes[frames[7].end - 3] ^= 0x20;
    });
    assert!(matches!(failure.problem, Problem::CrcMismatch), "{failure}");
    assert_eq!((failure.seq, failure.offset), (Some(8), Some(at as u64)));
}

#[test]
fn removed_record_leaves_a_seq_gap() {
    let failure = tamper(|bytes, frames| {
        bytes.drain(frames[4].clone());
    });
    assert!(
        matches!(
            failure.problem,
            Problem::SeqMismatch {
                expected: 5,
                found: 6
            }
        ),
        "{failure}"
    );
}

#[test]
fn inserted_record_is_caught_even_when_well_linked() {
    let failure = tamper(|bytes, frames| {
        // A forged twin of record 6: right seq and prev, different content.
        let forged = replace_once(
            &bytes[frames[5].start + 8..frames[5].end],
            "\"n\":5",
            "\"n\":7",
        );
        bytes.splice(frames[5].start..frames[5].start, frame(&forged));
    });
    assert!(
        matches!(
            failure.problem,
            Problem::SeqMismatch {
                expected: 7,
                found: 6
            }
        ),
        "{failure}"
    );
}

#[test]
fn swapped_records_are_out_of_order() {
    let failure = tamper(|bytes, frames| {
        let (first, second) = (
            bytes[frames[4].clone()].to_vec(),
            bytes[frames[5].clone()].to_vec(),
        );
        bytes.splice(frames[4].start..frames[5].end, [second, first].concat());
    });
    assert!(
        matches!(
            failure.problem,
            Problem::SeqMismatch {
                expected: 5,
                found: 6
            }
        ),
        "{failure}"
    );
    assert_eq!(failure.seq, Some(5));
}

#[test]
fn edits_to_the_last_record_change_the_head_hash() {
    // Nothing follows the last record, so only a checkpoint of the head can catch this.
    let root = TempDir::new().unwrap();
    let (_, head) = write_chain(root.path(), 3, AuditOptions::default());
    let path = segment(root.path(), 1);
    let mut bytes = fs::read(&path).unwrap();
    let last = frames(&bytes)[2].clone();
    let edited = replace_once(&bytes[last.start + 8..last.end], "\"acme\"", "\"acmf\"");
    bytes.splice(last, frame(&edited));
    fs::write(&path, bytes).unwrap();
    let report = verify_chain(root.path(), CHAIN).unwrap();
    assert_eq!(report.head_hash, leaf_hash(&edited));
    assert_ne!(report.head_hash, head);
}

/// A chain spread over several small segments.
pub(super) fn segmented_chain() -> TempDir {
    let root = TempDir::new().unwrap();
    write_chain(root.path(), 100, small_segments());
    assert!(verify_chain(root.path(), CHAIN).unwrap().segments >= 4);
    root
}

#[test]
fn truncated_middle_segment_is_caught() {
    let root = segmented_chain();
    let path = segment(root.path(), 2);
    let len = fs::metadata(&path).unwrap().len();
    OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(len - 5)
        .unwrap();
    let failure = verify_chain(root.path(), CHAIN).unwrap_err();
    assert!(
        matches!(failure.problem, Problem::TruncatedFrame),
        "{failure}"
    );
    assert_eq!(failure.path, path);
}

#[test]
fn middle_segment_cut_at_a_frame_boundary_is_caught() {
    let root = segmented_chain();
    let path = segment(root.path(), 2);
    let bytes = fs::read(&path).unwrap();
    let last = frames(&bytes).pop().unwrap();
    fs::write(&path, &bytes[..last.start]).unwrap();
    let failure = verify_chain(root.path(), CHAIN).unwrap_err();
    assert!(
        matches!(
            failure.problem,
            Problem::HeaderMismatch {
                field: "first_seq",
                ..
            }
        ),
        "{failure}"
    );
    assert_eq!(failure.path, segment(root.path(), 3));
}

#[test]
fn removed_middle_segment_is_named() {
    let root = segmented_chain();
    fs::remove_file(segment(root.path(), 2)).unwrap();
    let failure = verify_chain(root.path(), CHAIN).unwrap_err();
    assert!(
        matches!(failure.problem, Problem::MissingSegment),
        "{failure}"
    );
    assert_eq!(failure.path, segment(root.path(), 2));
    assert_eq!(
        failure.to_string(),
        format!(
            "{} (seq {}): missing segment",
            segment(root.path(), 2).display(),
            failure.seq.unwrap()
        )
    );
}

#[test]
fn segment_from_another_chain_is_caught() {
    let root = segmented_chain();
    let other = TempDir::new().unwrap();
    let (mut writer, _) = AuditWriter::open(other.path(), "replica-2", small_segments()).unwrap();
    writer.append(fields(0)).unwrap();
    drop(writer);
    fs::copy(
        other.path().join("replica-2/00000001.seg"),
        segment(root.path(), 1),
    )
    .unwrap();
    let failure = verify_chain(root.path(), CHAIN).unwrap_err();
    assert!(
        matches!(
            failure.problem,
            Problem::HeaderMismatch { field: "chain", .. }
        ),
        "{failure}"
    );
}
