//! Checkpoints: signed tree heads in the C2SP tlog-checkpoint format, stored beside the
//! chain as `checkpoints/<size>.note`.
//!
//! This module writes and reads the note text (origin, tree size, root). Signing and
//! checking signatures is the control layer's job: it holds the key, and the chain code
//! never sees it.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

use super::merkle::Hash;

/// Subdirectory of a chain's directory that holds its checkpoint notes.
pub const CHECKPOINT_DIR: &str = "checkpoints";

/// A tree head: the chain's first `size` records have the Merkle root `root`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    /// `<deployment origin>/<chain>`: which log this head belongs to.
    pub origin: String,
    pub size: u64,
    pub root: Hash,
}

impl Checkpoint {
    /// The note text that gets signed: origin, size and base64 root, one per line.
    pub fn body(&self) -> String {
        format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            base64_hash(&self.root)
        )
    }

    /// The checkpoint in a signed note's text. Signatures are not checked here, only that
    /// the text is laid out as a signed note whose body is a checkpoint.
    pub fn parse_note(note: &str) -> Result<Checkpoint, String> {
        if note.bytes().any(|b| b < 0x20 && b != b'\n') {
            return Err("note holds a control character".into());
        }
        let split = note
            .rfind("\n\n")
            .ok_or("not a signed note: no blank line before the signatures")?;
        let signatures = &note[split + 2..];
        if signatures.is_empty() || !signatures.ends_with('\n') {
            return Err("not a signed note: no signature lines".into());
        }
        if let Some(line) = signatures
            .lines()
            .find(|line| !line.starts_with("\u{2014} "))
        {
            return Err(format!(
                "signature line {line:?} does not start with an em dash"
            ));
        }
        let mut lines = note[..split].split('\n');
        let mut line = |what: &str| {
            lines
                .next()
                .filter(|line| !line.is_empty())
                .ok_or_else(|| format!("checkpoint has no {what} line"))
        };
        let origin = line("origin")?.to_owned();
        let size_text = line("tree size")?;
        let canonical = size_text.bytes().all(|b| b.is_ascii_digit())
            && (size_text == "0" || !size_text.starts_with('0'));
        let size = size_text
            .parse::<u64>()
            .ok()
            .filter(|_| canonical)
            .ok_or_else(|| format!("tree size {size_text:?} is not a decimal number"))?;
        let root_text = line("root hash")?;
        let root = STANDARD
            .decode(root_text)
            .ok()
            .and_then(|root| Hash::try_from(root).ok())
            .ok_or_else(|| format!("root hash {root_text:?} is not 32 bytes in base64"))?;
        Ok(Checkpoint { origin, size, root })
    }

    /// Whether this checkpoint names `chain` as its log.
    pub fn is_for(&self, chain: &str) -> bool {
        self.origin
            .strip_suffix(chain)
            .is_some_and(|rest| rest.ends_with('/'))
    }
}

/// A hash as checkpoints write it: standard base64.
pub fn base64_hash(hash: &Hash) -> String {
    STANDARD.encode(hash)
}

pub fn note_name(size: u64) -> String {
    format!("{size}.note")
}

/// The checkpoint notes of the chain in `chain_dir`, by size; none if there are none.
pub fn list_notes(chain_dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let dir = chain_dir.join(CHECKPOINT_DIR);
    let entries = match fs::read_dir(&dir) {
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        entries => entries?,
    };
    let mut notes = Vec::new();
    for entry in entries {
        let name = entry?.file_name();
        let Some(name) = name.to_str() else { continue };
        let size = name
            .strip_suffix(".note")
            .and_then(|s| s.parse::<u64>().ok());
        // Only canonical names, so one size has one file.
        if let Some(size) = size.filter(|&size| note_name(size) == name) {
            notes.push((size, dir.join(name)));
        }
    }
    notes.sort_unstable();
    Ok(notes)
}

/// Reads and parses one note; the error names what is wrong, not the file.
pub fn read_note(path: &Path) -> Result<Checkpoint, String> {
    let text = fs::read(path).map_err(|e| format!("read error: {e}"))?;
    let text = String::from_utf8(text).map_err(|_| "note is not UTF-8".to_owned())?;
    Checkpoint::parse_note(&text)
}
