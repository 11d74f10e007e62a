//! Reading a chain back: every record is checked against its predecessor as it streams by,
//! so reading and verifying are the same pass.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::payload::RecordHead;
use super::segment::{
    list_segments, parse_hash, segment_name, FrameError, HeaderError, SegmentHeader, SegmentReader,
};
use super::FORMAT_VERSION;

/// What a successful verification covered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    pub records: u64,
    pub segments: u64,
    /// Seq and hash of the last record; 0 and zeros for a chain with no records.
    pub head_seq: u64,
    pub head_hash: [u8; 32],
    /// Bytes of an incomplete frame ending the last segment: a write in progress, or a torn
    /// write the writer will cut when it next opens the chain. Not part of the chain.
    pub tail_bytes: u64,
}

/// Where verification stopped and why; displays as one line.
#[derive(Debug, thiserror::Error)]
pub struct VerifyFailure {
    pub segment: PathBuf,
    /// Offset of the bad frame in `segment`, if the problem is inside the file.
    pub offset: Option<u64>,
    /// The seq the record at `offset` should have had.
    pub seq: Option<u64>,
    pub problem: Problem,
}

impl fmt::Display for VerifyFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.segment.display())?;
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
    PrevMismatch { expected: [u8; 32], found: String },
}

impl From<FrameError> for Problem {
    fn from(err: FrameError) -> Self {
        match err {
            FrameError::Truncated => Problem::TruncatedFrame,
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

/// The end of a chain as read so far: what the next record must continue from.
#[derive(Debug, Clone)]
pub(crate) struct ChainState {
    pub chain: String,
    pub seq: u64,
    pub head: [u8; 32],
}

impl ChainState {
    pub fn genesis(chain: &str) -> ChainState {
        ChainState {
            chain: chain.to_owned(),
            seq: 0,
            head: [0; 32],
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
        Ok(())
    }

    /// Checks that `payload` is the next record of the chain, then moves past it.
    pub fn advance(&mut self, payload: &[u8]) -> Result<[u8; 32], Problem> {
        let record: RecordHead =
            serde_json::from_slice(payload).map_err(|e| Problem::BadPayload(e.to_string()))?;
        if record.v != FORMAT_VERSION {
            return Err(Problem::BadPayload(format!(
                "unsupported record version {}",
                record.v
            )));
        }
        if record.chain != self.chain {
            return Err(Problem::ChainMismatch(record.chain.to_owned()));
        }
        if record.seq != self.seq + 1 {
            return Err(Problem::SeqMismatch {
                expected: self.seq + 1,
                found: record.seq,
            });
        }
        if parse_hash(record.prev) != Some(self.head) {
            return Err(Problem::PrevMismatch {
                expected: self.head,
                found: record.prev.to_owned(),
            });
        }
        self.seq = record.seq;
        self.head = Sha256::digest(payload).into();
        Ok(self.head)
    }
}

/// One verified record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub seq: u64,
    /// SHA-256 of `payload`.
    pub hash: [u8; 32],
    /// The canonical JSON exactly as stored.
    pub payload: Vec<u8>,
}

impl Record {
    pub fn fields(&self) -> serde_json::Result<Map<String, Value>> {
        serde_json::from_slice(&self.payload)
    }
}

/// Verifies a whole chain: every frame, every link, every segment header.
pub fn verify_chain(root: &Path, chain: &str) -> Result<VerifyReport, VerifyFailure> {
    let mut reader = read_records(root, chain);
    let mut records = 0;
    while reader.next_payload()?.is_some() {
        records += 1;
    }
    Ok(VerifyReport {
        records,
        segments: reader.segments_read,
        head_seq: reader.state.seq,
        head_hash: reader.state.head,
        tail_bytes: reader.tail_bytes,
    })
}

/// Reads a chain's records in order, verifying as it goes; stops after the first failure.
pub fn read_records(root: &Path, chain: &str) -> RecordReader {
    RecordReader {
        dir: root.join(chain),
        segments: None,
        segments_read: 0,
        current: None,
        state: ChainState::genesis(chain),
        tail_bytes: 0,
        failed: false,
    }
}

/// Iterator over a chain's verified records; see [`read_records`].
pub struct RecordReader {
    dir: PathBuf,
    /// Segment numbers, listed on first use.
    segments: Option<Vec<u64>>,
    segments_read: u64,
    current: Option<SegmentReader>,
    state: ChainState,
    tail_bytes: u64,
    failed: bool,
}

impl RecordReader {
    /// The next verified record's payload, without copying it out of the read buffer.
    fn next_payload(&mut self) -> Result<Option<&[u8]>, VerifyFailure> {
        loop {
            let Some(reader) = &mut self.current else {
                if !self.open_next_segment()? {
                    return Ok(None);
                }
                continue;
            };
            let last_segment =
                self.segments.as_ref().map(Vec::len) == Some(self.segments_read as usize);
            let frame_start = reader.offset;
            let expected_seq = self.state.seq + 1;
            let fail = |reader: &SegmentReader, problem| VerifyFailure {
                segment: reader.path.clone(),
                offset: Some(frame_start),
                seq: Some(expected_seq),
                problem,
            };
            match reader.next_frame() {
                Ok(Some(payload)) => match self.state.advance(payload) {
                    Ok(_) => return Ok(self.current.as_ref().map(SegmentReader::payload)),
                    Err(problem) => return Err(fail(reader, problem)),
                },
                Ok(None) => self.current = None,
                Err(FrameError::Truncated) if last_segment => {
                    self.tail_bytes = reader.len - reader.offset;
                    self.current = None;
                }
                Err(err) => return Err(fail(reader, err.into())),
            }
        }
    }

    /// Opens the next segment and checks its header; false once all segments are read.
    fn open_next_segment(&mut self) -> Result<bool, VerifyFailure> {
        let segments = match &self.segments {
            Some(segments) => segments,
            None => self.segments.insert(self.list_segments()?),
        };
        let Some(&number) = segments.get(self.segments_read as usize) else {
            return Ok(false);
        };
        let path = self.dir.join(segment_name(number));
        let fail = |problem| VerifyFailure {
            segment: path.clone(),
            offset: Some(0),
            seq: None,
            problem,
        };
        let mut reader = SegmentReader::open(path.clone()).map_err(|e| fail(Problem::Io(e)))?;
        let header = reader.read_header().map_err(|e| fail(e.into()))?;
        self.state.check_header(&header).map_err(fail)?;
        self.segments_read += 1;
        self.current = Some(reader);
        Ok(true)
    }

    /// Segment numbers, which must run 1, 2, 3, ... without a gap.
    fn list_segments(&self) -> Result<Vec<u64>, VerifyFailure> {
        let numbers = list_segments(&self.dir).map_err(|err| VerifyFailure {
            segment: self.dir.clone(),
            offset: None,
            seq: None,
            problem: Problem::Io(err),
        })?;
        let expected = 1..=numbers.len() as u64 + 1;
        match numbers
            .iter()
            .zip(expected)
            .find(|(&found, expected)| found != *expected)
        {
            None if !numbers.is_empty() => Ok(numbers),
            gap => Err(VerifyFailure {
                segment: self
                    .dir
                    .join(segment_name(gap.map_or(1, |(_, expected)| expected))),
                offset: None,
                seq: None,
                problem: Problem::MissingSegment,
            }),
        }
    }
}

impl Iterator for RecordReader {
    type Item = Result<Record, VerifyFailure>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        match self.next_payload() {
            Ok(Some(payload)) => {
                let payload = payload.to_vec();
                Some(Ok(Record {
                    seq: self.state.seq,
                    hash: self.state.head,
                    payload,
                }))
            }
            Ok(None) => None,
            Err(failure) => {
                self.failed = true;
                Some(Err(failure))
            }
        }
    }
}
