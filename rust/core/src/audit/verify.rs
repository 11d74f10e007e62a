//! Whole-chain verification: every segment, record and link, the Merkle tree against every
//! checkpoint note, and the rules that make retention safe.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::chain::{Problem, RecordKind, VerifyFailure};
use super::checkpoint::{
    base64_hash, list_notes, note_name, read_note, Checkpoint, CHECKPOINT_DIR,
};
use super::merkle::{empty_root, Hash};
use super::reader::RecordReader;
use super::segment::segment_name;

/// What a verification covered, and every problem it found.
#[derive(Debug)]
pub struct VerifyReport {
    /// Records read and verified; records in damaged stretches are not counted.
    pub records: u64,
    pub segments: u64,
    /// 1, unless retention removed the segments before this one.
    pub first_segment: u64,
    pub first_seq: u64,
    /// Seq and hash of the last record; 0 and zeros for a chain with no records.
    pub head_seq: u64,
    pub head_hash: Hash,
    /// Merkle root of records 1 to `head_seq`.
    pub root: Hash,
    /// Bytes of an incomplete frame ending the last segment that a live writer is
    /// completing. One that nobody completes is a problem ([`Problem::TornTail`]).
    pub tail_bytes: u64,
    /// Every readable checkpoint note, in size order, with what was checked of its root.
    /// Their signatures are for the caller to check.
    pub checkpoints: Vec<CheckedNote>,
    /// Every problem found, in the order found; none for an intact chain.
    pub problems: Vec<VerifyFailure>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedNote {
    pub path: PathBuf,
    pub size: u64,
    pub root: RootCheck,
}

/// What verification could check of a checkpoint note's root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RootCheck {
    /// It is the chain's root at the note's size.
    Matches,
    /// The records it covers were removed by retention: only its signature can be checked.
    Retired,
    /// It is not: reported as a problem.
    Differs,
    /// Its size falls in damaged records or past the end (reported as problems).
    NotChecked,
}

/// Verifies a whole chain and fails with the first problem; see [`check_chain`].
pub fn verify_chain(root: &Path, chain: &str) -> Result<VerifyReport, VerifyFailure> {
    let mut report = check_chain(root, chain);
    if report.problems.is_empty() {
        return Ok(report);
    }
    Err(report.problems.remove(0))
}

/// Verifies a whole chain: every frame, every link, every segment header, every checkpoint
/// note's root, that any segments missing from the start were removed by a recorded
/// retention and are pinned by a checkpoint, and that no partial record ends it. Reports
/// every problem: after damage, reading goes on from the next segment's header.
pub fn check_chain(root: &Path, chain: &str) -> VerifyReport {
    // Notes first: any a live writer adds later cover records this read may not reach.
    let dir = root.join(chain);
    let mut problems = Vec::new();
    let notes = load_notes(&dir, chain, &mut problems);
    let mut reader = match RecordReader::open_tolerant(root, chain) {
        Ok((reader, skipped)) => {
            problems.extend(skipped);
            reader
        }
        Err(failure) => {
            problems.push(failure);
            return VerifyReport::unreadable(problems);
        }
    };
    let base = reader.tree().clone();
    let mut pending = notes.iter().peekable();
    let mut checked = Vec::with_capacity(notes.len());
    while let Some(note) = pending.next_if(|note| note.size <= base.size()) {
        let root = if note.size < base.size() {
            RootCheck::Retired
        } else {
            note.check(&base.root(), &mut problems)
        };
        checked.push(note.checked(root));
    }

    let mut records = 0;
    let mut retention_from = 0;
    let mut checkpoint_records = Vec::new();
    loop {
        let (payload, kind) = match reader.next_payload() {
            Ok(Some(next)) => next,
            Ok(None) => break,
            Err(failure) => {
                problems.push(failure);
                reader.skip_to_next_segment();
                continue;
            }
        };
        records += 1;
        let marker = match kind {
            RecordKind::Other => Ok(None),
            RecordKind::Checkpoint => parse_record(payload).map(|r| Some(Marker::Checkpoint(r))),
            RecordKind::Retention => parse_record(payload).map(|r| Some(Marker::Retention(r))),
        };
        match marker {
            Ok(None) => {}
            Ok(Some(Marker::Checkpoint(record))) => checkpoint_records.push((reader.seq(), record)),
            Ok(Some(Marker::Retention(record))) => {
                retention_from = retention_from.max(record.first_segment)
            }
            Err(problem) => problems.push(VerifyFailure {
                path: reader.path().to_owned(),
                offset: None,
                seq: Some(reader.seq()),
                problem,
            }),
        }
        // Notes of sizes skipped over with damaged records cannot be checked.
        while let Some(note) = pending.next_if(|note| note.size <= reader.seq()) {
            let root = if note.size == reader.seq() {
                note.check(&reader.tree().root(), &mut problems)
            } else {
                RootCheck::NotChecked
            };
            checked.push(note.checked(root));
        }
    }
    if let Some(tail) = reader.tail() {
        if !tail.completed() {
            problems.push(VerifyFailure {
                path: tail.path.clone(),
                offset: Some(tail.offset),
                seq: Some(reader.seq() + 1),
                problem: Problem::TornTail {
                    bytes: tail.file_len - tail.offset,
                    after: reader.seq(),
                },
            });
        }
    }
    let beyond_end: Vec<&Note> = pending.collect();
    if let Some(furthest) = beyond_end.last() {
        problems.push(furthest.fail(Problem::CheckpointBeyondEnd {
            size: furthest.size,
            head: reader.seq(),
        }));
    }
    checked.extend(
        beyond_end
            .iter()
            .map(|note| note.checked(RootCheck::NotChecked)),
    );
    for (seq, record) in checkpoint_records {
        let path = dir.join(CHECKPOINT_DIR).join(note_name(record.size));
        // A note written after the listing above is read now (a live writer made it).
        let root = match notes.iter().find(|note| note.size == record.size) {
            Some(note) => Some(note.checkpoint.root),
            None => read_note(&path).ok().map(|checkpoint| checkpoint.root),
        };
        if record.size >= base.size() && root.map(|root| base64_hash(&root)) != Some(record.root) {
            problems.push(VerifyFailure {
                path,
                offset: None,
                seq: Some(seq),
                problem: Problem::CheckpointMissing(record.size),
            });
        }
    }
    let first_segment = reader.first_segment();
    if first_segment > 1 {
        let fail = |problem| VerifyFailure {
            path: dir.join(segment_name(first_segment - 1)),
            offset: None,
            seq: Some(reader.first_seq() - 1),
            problem,
        };
        if retention_from < first_segment {
            problems.push(fail(Problem::UnrecordedRemoval));
        }
        let pinned = checked
            .iter()
            .any(|note| note.root == RootCheck::Matches && note.size >= reader.first_seq());
        if !pinned {
            problems.push(fail(Problem::RetentionUnpinned(reader.first_seq())));
        }
    }
    let tail_bytes = if problems
        .iter()
        .any(|p| matches!(p.problem, Problem::TornTail { .. }))
    {
        0
    } else {
        reader.tail_bytes()
    };
    VerifyReport {
        records,
        segments: reader.segments_read(),
        first_segment,
        first_seq: reader.first_seq(),
        head_seq: reader.seq(),
        head_hash: reader.head(),
        root: reader.tree().root(),
        tail_bytes,
        checkpoints: checked,
        problems,
    }
}

impl VerifyReport {
    /// A chain none of whose segments could be read.
    fn unreadable(problems: Vec<VerifyFailure>) -> VerifyReport {
        VerifyReport {
            records: 0,
            segments: 0,
            first_segment: 0,
            first_seq: 0,
            head_seq: 0,
            head_hash: [0; 32],
            root: empty_root(),
            tail_bytes: 0,
            checkpoints: Vec::new(),
            problems,
        }
    }
}

/// A parsed checkpoint note of the chain being verified.
struct Note {
    path: PathBuf,
    size: u64,
    checkpoint: Checkpoint,
}

impl Note {
    fn fail(&self, problem: Problem) -> VerifyFailure {
        VerifyFailure {
            path: self.path.clone(),
            offset: None,
            seq: Some(self.size),
            problem,
        }
    }

    /// Whether the note's root is the chain's; a mismatch is added to `problems`.
    fn check(&self, chain_root: &Hash, problems: &mut Vec<VerifyFailure>) -> RootCheck {
        if self.checkpoint.root == *chain_root {
            return RootCheck::Matches;
        }
        problems.push(self.fail(Problem::CheckpointMismatch {
            size: self.size,
            expected: base64_hash(chain_root),
            found: base64_hash(&self.checkpoint.root),
        }));
        RootCheck::Differs
    }

    fn checked(&self, root: RootCheck) -> CheckedNote {
        CheckedNote {
            path: self.path.clone(),
            size: self.size,
            root,
        }
    }
}

/// The chain's readable notes; each unreadable one is added to `problems`.
fn load_notes(dir: &Path, chain: &str, problems: &mut Vec<VerifyFailure>) -> Vec<Note> {
    let listed = match list_notes(dir) {
        Ok(listed) => listed,
        Err(err) => {
            problems.push(VerifyFailure {
                path: dir.join(CHECKPOINT_DIR),
                offset: None,
                seq: None,
                problem: Problem::Io(err),
            });
            return Vec::new();
        }
    };
    let mut notes = Vec::with_capacity(listed.len());
    for (size, path) in listed {
        let checkpoint = read_note(&path).and_then(|checkpoint| {
            if checkpoint.size != size {
                return Err(format!(
                    "the file name says size {size}, the note {}",
                    checkpoint.size
                ));
            }
            if !checkpoint.is_for(chain) {
                return Err(format!(
                    "origin {:?} is not chain {chain}'s",
                    checkpoint.origin
                ));
            }
            Ok(checkpoint)
        });
        match checkpoint {
            Ok(checkpoint) => notes.push(Note {
                path,
                size,
                checkpoint,
            }),
            Err(what) => problems.push(VerifyFailure {
                path,
                offset: None,
                seq: None,
                problem: Problem::BadCheckpoint(what),
            }),
        }
    }
    notes
}

/// A record the chain format gives meaning to.
enum Marker {
    Checkpoint(CheckpointRecord),
    Retention(RetentionRecord),
}

/// The fields of a `checkpoint` record that verification checks.
#[derive(Deserialize)]
struct CheckpointRecord {
    size: u64,
    /// Base64, as in the note.
    root: String,
}

#[derive(Deserialize)]
struct RetentionRecord {
    first_segment: u64,
}

fn parse_record<T: serde::de::DeserializeOwned>(payload: &[u8]) -> Result<T, Problem> {
    serde_json::from_slice(payload).map_err(|e| Problem::BadPayload(e.to_string()))
}
