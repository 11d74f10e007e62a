//! Tamper-evident audit log: one append-only, hash-chained chain per replica (docs/ROLLBACK.md R8).
//!
//! Each record carries the hash of the previous record, so editing, removing, inserting or
//! reordering any record breaks the chain at a point that [`verify_chain`] names. The same
//! hashes are the leaves of an RFC 6962 Merkle tree whose signed heads (checkpoints) pin the
//! end of the chain and allow inclusion and consistency proofs. The on-disk layout is
//! specified in `FORMAT.md` beside this file, precisely enough for a third party to verify a
//! chain without this code.

mod chain;
mod checkpoint;
mod mapped;
mod merkle;
mod pair;
mod payload;
mod proof;
mod reader;
mod recover;
mod retention;
mod scan;
mod segment;
mod shared;
mod verify;
mod writer;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

pub use chain::{Problem, Record, RecordKind, VerifyFailure};
pub use checkpoint::{base64_hash, list_notes, note_name, read_note, Checkpoint, CHECKPOINT_DIR};
pub use merkle::{
    empty_root, leaf_hash, node_hash, verify_consistency, verify_inclusion, Frontier, Hash,
};
pub use payload::{frame_record, FieldValue, RecordFields, WRITER_FIELDS};
pub use proof::{prove_consistency, prove_inclusion, ConsistencyProof, InclusionProof, ProofError};
pub use reader::RecordReader;
pub use retention::{RetentionPlan, RetentionPolicy};
pub use shared::{SharedWriter, SyncState};
pub use verify::{check_chain, verify_chain, CheckedNote, RootCheck, VerifyReport};
pub use writer::{AuditOptions, AuditWriter, OpenReport, PendingSync, SyncPolicy, TornTail};

/// First bytes of every segment file.
pub const MAGIC: &[u8; 8] = b"GWDAUDIT";

/// Version of the segment layout and of the records' `v` field. Version 2 hashes records
/// as RFC 6962 leaves and puts the Merkle frontier in segment headers.
pub const FORMAT_VERSION: u16 = 2;

/// Largest record payload accepted, so a corrupt length field cannot trigger a huge read.
pub const MAX_PAYLOAD: u32 = 16 << 20;

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit I/O on {}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error(
        "invalid audit chain name {0:?}: use 1 to 64 of [A-Za-z0-9._-], not starting with '.'"
    )]
    InvalidChainName(String),
    #[error("audit chain {} is open in another writer", .0.display())]
    Locked(PathBuf),
    #[error("field {0:?} is set by the audit writer and cannot be supplied")]
    ReservedField(&'static str),
    #[error("audit record of {0} bytes exceeds the limit of {MAX_PAYLOAD} bytes")]
    RecordTooLarge(usize),
    /// The last segment is damaged in a way a crash cannot explain; nothing was cut.
    #[error("audit chain is corrupt, refusing to append: {0}")]
    Corrupt(#[from] VerifyFailure),
    /// An earlier write or fsync failed, so what is on disk is unknown: appends stop.
    #[error("audit writer stopped after an earlier failure: {0}")]
    Poisoned(String),
    #[error("retention refused: no checkpoint covers seq {0} yet, so the kept segments would not be pinned")]
    RetentionUnpinned(u64),
}

impl AuditError {
    fn io(path: &Path) -> impl FnOnce(io::Error) -> AuditError + '_ {
        move |source| AuditError::Io {
            path: path.to_owned(),
            source,
        }
    }
}

/// Chain names become directory names and appear in every record, so they are kept plain.
pub fn is_valid_chain_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Names of the chains under `root`, sorted; none if `root` does not exist.
pub fn list_chains(root: &Path) -> io::Result<Vec<String>> {
    let entries = match fs::read_dir(root) {
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        entries => entries?,
    };
    let mut chains = Vec::new();
    for entry in entries {
        let entry = entry?;
        if let Ok(name) = entry.file_name().into_string() {
            if is_valid_chain_name(&name) && entry.file_type()?.is_dir() {
                chains.push(name);
            }
        }
    }
    chains.sort_unstable();
    Ok(chains)
}

#[cfg(test)]
mod tests;
