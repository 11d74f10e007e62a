//! Whole-chain verification: every segment, record and link, the Merkle tree against every
//! checkpoint note, and the rules that make retention safe.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::chain::{Problem, RecordKind, VerifyFailure};
use super::checkpoint::{
    base64_hash, list_notes, note_name, read_note, Checkpoint, CHECKPOINT_DIR,
};
use super::merkle::Hash;
use super::reader::RecordReader;
use super::segment::segment_name;

/// What a successful verification covered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// Records read: those from `first_seq` to `head_seq`.
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
    /// Bytes of an incomplete frame ending the last segment: a write in progress, or a torn
    /// write the writer will cut when it next opens the chain. Not part of the chain.
    pub tail_bytes: u64,
    /// Every checkpoint note, in size order: its body names this chain and its root is the
    /// chain's at its size. Their signatures are for the caller to check.
    pub checkpoints: Vec<CheckedNote>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedNote {
    pub path: PathBuf,
    pub size: u64,
    /// The records it covers were removed by retention, so only its signature can be checked.
    pub retired: bool,
}

/// Verifies a whole chain: every frame, every link, every segment header, every checkpoint
/// note's root, and that any segments missing from the start were removed by a recorded
/// retention and are pinned by a checkpoint.
pub fn verify_chain(root: &Path, chain: &str) -> Result<VerifyReport, VerifyFailure> {
    // Notes first: any a live writer adds later cover records this read may not reach.
    let dir = root.join(chain);
    let notes = load_notes(&dir, chain)?;
    let mut reader = RecordReader::open(root, chain)?;
    let base = reader.tree().clone();
    let mut pending = notes.iter().peekable();
    let mut checked = Vec::with_capacity(notes.len());
    while let Some(note) = pending.next_if(|note| note.size <= base.size()) {
        let retired = note.size < base.size();
        if !retired {
            note.check(&base.root())?;
        }
        checked.push(note.checked(retired));
    }

    let mut records = 0;
    let mut retention_from = 0;
    let mut checkpoint_records = Vec::new();
    while let Some((payload, kind)) = reader.next_payload()? {
        records += 1;
        let marker = match kind {
            RecordKind::Other => Ok(None),
            RecordKind::Checkpoint => parse_record(payload).map(|r| Some(Marker::Checkpoint(r))),
            RecordKind::Retention => parse_record(payload).map(|r| Some(Marker::Retention(r))),
        };
        let marker = marker.map_err(|problem| VerifyFailure {
            path: reader.path().to_owned(),
            offset: None,
            seq: Some(reader.seq()),
            problem,
        })?;
        match marker {
            None => {}
            Some(Marker::Checkpoint(record)) => checkpoint_records.push((reader.seq(), record)),
            Some(Marker::Retention(record)) => {
                retention_from = retention_from.max(record.first_segment)
            }
        }
        while let Some(note) = pending.next_if(|note| note.size == reader.seq()) {
            note.check(&reader.tree().root())?;
            checked.push(note.checked(false));
        }
    }
    if let Some(note) = pending.next() {
        return Err(note.fail(Problem::CheckpointBeyondEnd {
            size: note.size,
            head: reader.seq(),
        }));
    }
    for (seq, record) in checkpoint_records {
        let path = dir.join(CHECKPOINT_DIR).join(note_name(record.size));
        // A note written after the listing above is read now (a live writer made it).
        let root = match notes.iter().find(|note| note.size == record.size) {
            Some(note) => Some(note.checkpoint.root),
            None => read_note(&path).ok().map(|checkpoint| checkpoint.root),
        };
        if record.size >= base.size() && root.map(|root| base64_hash(&root)) != Some(record.root) {
            return Err(VerifyFailure {
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
            return Err(fail(Problem::UnrecordedRemoval));
        }
        if !checked.iter().any(|note| note.size >= reader.first_seq()) {
            return Err(fail(Problem::RetentionUnpinned(reader.first_seq())));
        }
    }
    Ok(VerifyReport {
        records,
        segments: reader.segments_read(),
        first_segment,
        first_seq: reader.first_seq(),
        head_seq: reader.seq(),
        head_hash: reader.head(),
        root: reader.tree().root(),
        tail_bytes: reader.tail_bytes(),
        checkpoints: checked,
    })
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

    fn check(&self, chain_root: &Hash) -> Result<(), VerifyFailure> {
        if self.checkpoint.root == *chain_root {
            return Ok(());
        }
        Err(self.fail(Problem::CheckpointMismatch {
            size: self.size,
            expected: base64_hash(chain_root),
            found: base64_hash(&self.checkpoint.root),
        }))
    }

    fn checked(&self, retired: bool) -> CheckedNote {
        CheckedNote {
            path: self.path.clone(),
            size: self.size,
            retired,
        }
    }
}

fn load_notes(dir: &Path, chain: &str) -> Result<Vec<Note>, VerifyFailure> {
    let listed = list_notes(dir).map_err(|err| VerifyFailure {
        path: dir.join(CHECKPOINT_DIR),
        offset: None,
        seq: None,
        problem: Problem::Io(err),
    })?;
    listed
        .into_iter()
        .map(|(size, path)| {
            let bad = |what: String| VerifyFailure {
                path: path.clone(),
                offset: None,
                seq: None,
                problem: Problem::BadCheckpoint(what),
            };
            let checkpoint = read_note(&path).map_err(bad)?;
            if checkpoint.size != size {
                return Err(bad(format!(
                    "the file name says size {size}, the note {}",
                    checkpoint.size
                )));
            }
            if !checkpoint.is_for(chain) {
                return Err(bad(format!(
                    "origin {:?} is not chain {chain}'s",
                    checkpoint.origin
                )));
            }
            Ok(Note {
                path,
                size,
                checkpoint,
            })
        })
        .collect()
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
