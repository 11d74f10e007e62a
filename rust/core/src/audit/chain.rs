//! The rules that link one record to the next, and how a break in them is reported.

use std::fmt;
use std::io;
use std::path::PathBuf;

use serde_json::{Map, Value};

use super::merkle::{Frontier, Hash};
use super::scan::scan_head;
use super::segment::{FrameError, HeaderError, SegmentHeader};
use super::FORMAT_VERSION;
use crate::digest::hex_digits;

/// Where verification stopped and why; displays as one line.
#[derive(Debug, thiserror::Error)]
pub struct VerifyFailure {
    /// The segment (or checkpoint note) where the problem is.
    pub path: PathBuf,
    /// Offset of the bad frame in `path`, if the problem is inside a segment.
    pub offset: Option<u64>,
    /// The seq the record at `offset` should have had, or the record the problem is about.
    pub seq: Option<u64>,
    pub problem: Problem,
}

impl fmt::Display for VerifyFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path.display())?;
        if let Some(offset) = self.offset {
            write!(f, " at byte {offset}")?;
        }
        if let Some(seq) = self.seq {
            write!(f, " (seq {seq})")?;
        }
        write!(f, ": {}", self.problem)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Problem {
    #[error("read error: {0}")]
    Io(io::Error),
    #[error("missing segment")]
    MissingSegment,
    #[error("bad segment header: {0}")]
    BadHeader(String),
    #[error("segment header {field} is {found}, expected {expected}")]
    HeaderMismatch {
        field: &'static str,
        expected: String,
        found: String,
    },
    #[error("truncated frame in a non-final segment")]
    TruncatedFrame,
    #[error("zeros where a frame should be: the segment's records end early")]
    Unwritten,
    #[error("CRC-32C mismatch")]
    CrcMismatch,
    #[error("frame length {0} exceeds the payload limit")]
    FrameTooLarge(u32),
    #[error("invalid record: {0}")]
    BadPayload(String),
    #[error("record belongs to chain {0:?}")]
    ChainMismatch(String),
    #[error("seq gap or reorder: expected {expected}, found {found}")]
    SeqMismatch { expected: u64, found: u64 },
    #[error("prev hash mismatch: expected {}, found {found}", hex::encode(.expected))]
    PrevMismatch { expected: Hash, found: String },
    #[error("earlier segments are missing and no retention record removed them")]
    UnrecordedRemoval,
    #[error("earlier segments were removed by retention, but no checkpoint at or after seq {0} pins the first kept record")]
    RetentionUnpinned(u64),
    #[error("invalid checkpoint: {0}")]
    BadCheckpoint(String),
    #[error("checkpoint covers {size} records but the chain ends at seq {head}: records were removed from the end (seq {} to {size}, signed, are lost)", .head + 1)]
    CheckpointBeyondEnd { size: u64, head: u64 },
    /// An incomplete frame ends the chain and no writer is completing it.
    #[error("possible crash: {bytes} bytes of a partial record after seq {after}; records after seq {after} are lost")]
    TornTail { bytes: u64, after: u64 },
    #[error("checkpoint root at size {size} is {found}, the chain's is {expected}: records up to seq {size} were changed")]
    CheckpointMismatch {
        size: u64,
        expected: String,
        found: String,
    },
    #[error("checkpoint record names checkpoints/{0}.note, which is missing or differs")]
    CheckpointMissing(u64),
}

impl From<FrameError> for Problem {
    fn from(err: FrameError) -> Self {
        match err {
            FrameError::Truncated => Problem::TruncatedFrame,
            FrameError::Unwritten => Problem::Unwritten,
            FrameError::Crc => Problem::CrcMismatch,
            FrameError::TooLarge(len) => Problem::FrameTooLarge(len),
            FrameError::Io(err) => Problem::Io(err),
        }
    }
}

impl From<HeaderError> for Problem {
    fn from(err: HeaderError) -> Self {
        match err {
            HeaderError::Frame(FrameError::Io(err)) => Problem::Io(err),
            HeaderError::Frame(FrameError::Truncated) => Problem::BadHeader("truncated".into()),
            HeaderError::Frame(frame) => Problem::BadHeader(Problem::from(frame).to_string()),
            HeaderError::Invalid(what) => Problem::BadHeader(what),
        }
    }
}

/// The records the chain format itself gives meaning to (see FORMAT.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordKind {
    /// `kind: "checkpoint"`: a signed tree head was written for this chain.
    Checkpoint,
    /// `kind: "retention"`: segments before `first_segment` are about to be removed.
    Retention,
    Other,
}

/// The end of a chain as read so far: what the next record must continue from.
#[derive(Debug, Clone)]
pub(crate) struct ChainState {
    pub chain: String,
    pub seq: u64,
    pub head: Hash,
    pub tree: Frontier,
}

impl ChainState {
    pub fn genesis(chain: &str) -> ChainState {
        ChainState {
            chain: chain.to_owned(),
            seq: 0,
            head: [0; 32],
            tree: Frontier::new(),
        }
    }

    /// The state a segment's header says the chain was in before its first record.
    pub fn from_header(header: &SegmentHeader) -> ChainState {
        ChainState {
            chain: header.chain.clone(),
            seq: header.first_seq - 1,
            head: header.prev,
            tree: header.tree.clone(),
        }
    }

    /// The header of a segment that starts here.
    pub fn header(&self) -> SegmentHeader {
        SegmentHeader {
            chain: self.chain.clone(),
            first_seq: self.seq + 1,
            prev: self.head,
            tree: self.tree.clone(),
        }
    }

    /// Checks that a segment starting here says so in its header.
    pub fn check_header(&self, header: &SegmentHeader) -> Result<(), Problem> {
        let mismatch = |field, expected: String, found: String| {
            Err(Problem::HeaderMismatch {
                field,
                expected,
                found,
            })
        };
        if header.chain != self.chain {
            return mismatch("chain", self.chain.clone(), header.chain.clone());
        }
        if header.first_seq != self.seq + 1 {
            return mismatch(
                "first_seq",
                (self.seq + 1).to_string(),
                header.first_seq.to_string(),
            );
        }
        if header.prev != self.head {
            return mismatch("prev", hex::encode(self.head), hex::encode(header.prev));
        }
        if header.tree != self.tree {
            return mismatch(
                "tree",
                hex::encode(self.tree.root()),
                format!("a frontier with root {}", hex::encode(header.tree.root())),
            );
        }
        Ok(())
    }

    /// Checks that `payload`, whose leaf hash is `hash`, is the next record of the chain,
    /// then moves past it.
    pub fn advance(&mut self, payload: &[u8], hash: Hash) -> Result<RecordKind, Problem> {
        let record = scan_head(payload).map_err(Problem::BadPayload)?;
        if record.v != u64::from(FORMAT_VERSION) {
            return Err(Problem::BadPayload(format!(
                "unsupported record version {}",
                record.v
            )));
        }
        if record.chain != self.chain.as_bytes() {
            return Err(Problem::ChainMismatch(lossy(record.chain)));
        }
        if record.seq != self.seq + 1 {
            return Err(Problem::SeqMismatch {
                expected: self.seq + 1,
                found: record.seq,
            });
        }
        // The writer writes lowercase hex; comparing as text spares decoding it.
        if record.prev != hex_digits(&self.head) {
            return Err(Problem::PrevMismatch {
                expected: self.head,
                found: lossy(record.prev),
            });
        }
        self.seq = record.seq;
        self.head = hash;
        self.tree.push(self.head);
        Ok(match record.kind {
            Some(b"checkpoint") => RecordKind::Checkpoint,
            Some(b"retention") => RecordKind::Retention,
            _ => RecordKind::Other,
        })
    }
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// One verified record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub seq: u64,
    /// The record's leaf hash, SHA-256(0x00 || payload): what the next record's `prev` names.
    pub hash: Hash,
    /// The canonical JSON exactly as stored.
    pub payload: Vec<u8>,
}

impl Record {
    pub fn fields(&self) -> serde_json::Result<Map<String, Value>> {
        serde_json::from_slice(&self.payload)
    }
}
