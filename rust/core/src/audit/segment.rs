//! Segment files: naming, the header, and the frames that hold the header and records.

use std::fs::{self, File};
use std::io::{self, Read};
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::json;

use super::merkle::{leaf_hash, Frontier, Hash};
use super::pair::{crc32c_pair, leaf_hash_pair};
use super::payload::write_canonical;
use super::{FORMAT_VERSION, MAGIC, MAX_PAYLOAD};

/// Bytes before a frame's payload: u32 LE length, u32 LE CRC-32C of the payload.
pub(crate) const FRAME_HEADER: usize = 8;

/// Large reads keep verification streaming at memory speed rather than syscall speed, yet
/// small enough that a frame is still in the L2 cache when it is checked and hashed.
const READ_BUFFER: usize = 1 << 17;

pub(crate) fn segment_name(number: u64) -> String {
    format!("{number:08}.seg")
}

/// Segment numbers in `dir`, ascending. Other files (the lock, temp files) are ignored.
pub(crate) fn list_segments(dir: &Path) -> io::Result<Vec<u64>> {
    let mut numbers = Vec::new();
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name();
        let Some(name) = name.to_str() else { continue };
        let number = name
            .strip_suffix(".seg")
            .and_then(|stem| stem.parse::<u64>().ok());
        // Only canonical names: "1.seg" or "+0000001.seg" would parse to the same number.
        if let Some(number) = number.filter(|&number| segment_name(number) == name) {
            numbers.push(number);
        }
    }
    numbers.sort_unstable();
    Ok(numbers)
}

/// Where a segment sits in its chain, as stated by its header.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct SegmentHeader {
    pub chain: String,
    pub first_seq: u64,
    /// Hash of record `first_seq - 1`; zeros for the genesis segment.
    pub prev: Hash,
    /// The Merkle frontier of records `1..first_seq`, so the tree can be continued (and
    /// checked against checkpoints) from this segment on, once earlier ones are removed.
    pub tree: Frontier,
}

impl SegmentHeader {
    /// Magic, version, then the header as a frame whose payload is canonical JSON.
    pub fn encode(&self) -> Vec<u8> {
        let mut payload = Vec::new();
        write_canonical(
            &mut payload,
            &json!({
                "chain": self.chain,
                "first_seq": self.first_seq,
                "prev": hex::encode(self.prev),
                "tree": self.tree.nodes().iter().map(hex::encode).collect::<Vec<_>>(),
            }),
        );
        let mut out = Vec::with_capacity(MAGIC.len() + 2 + FRAME_HEADER + payload.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        out.extend_from_slice(&frame_header(&payload));
        out.extend_from_slice(&payload);
        out
    }
}

pub(crate) fn frame_header(payload: &[u8]) -> [u8; FRAME_HEADER] {
    let mut header = [0; FRAME_HEADER];
    header[..4].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    header[4..].copy_from_slice(&crc32c::crc32c(payload).to_le_bytes());
    header
}

/// Why a frame could not be read. Offsets are those of the frame's first byte.
#[derive(Debug)]
pub(crate) enum FrameError {
    /// The file ends inside the frame.
    Truncated,
    /// A frame header of zeros: where the records of the segment being appended end, the
    /// rest being space the writer reserved (FORMAT.md). Anywhere else, damage.
    Unwritten,
    /// The payload does not match its CRC.
    Crc,
    /// The length field exceeds [`MAX_PAYLOAD`].
    TooLarge(u32),
    Io(io::Error),
}

impl From<io::Error> for FrameError {
    fn from(err: io::Error) -> Self {
        match err.kind() {
            io::ErrorKind::UnexpectedEof => FrameError::Truncated,
            _ => FrameError::Io(err),
        }
    }
}

/// Why a segment header could not be read.
#[derive(Debug)]
pub(crate) enum HeaderError {
    Frame(FrameError),
    /// Wrong magic, unknown version or malformed header JSON.
    Invalid(String),
}

/// Streams the frames of one segment, up to the length the file had when opened, so a
/// segment still being appended to reads as a consistent prefix.
///
/// Frames are checked and returned in place in one large read buffer: a payload is not
/// copied out of it.
pub(crate) struct SegmentReader {
    pub path: PathBuf,
    /// File length when opened.
    pub len: u64,
    /// Offset of the next frame.
    pub offset: u64,
    file: File,
    /// Bytes of the file read into `buf` so far.
    read: u64,
    buf: Vec<u8>,
    /// `buf[start..end]` is read but not yet consumed; `start` is at `offset`.
    start: usize,
    end: usize,
    /// Where in `buf` the payload last returned by `next_frame` or `next_record` is.
    payload: Range<usize>,
    /// The computed CRC and leaf hash of a frame not yet returned by `next_record`.
    ahead: Option<Ahead>,
}

/// What `next_record` computed of a frame ahead of returning it.
struct Ahead {
    /// Offset of the frame in the file.
    offset: u64,
    crc: u32,
    hash: Hash,
}

impl SegmentReader {
    pub fn open(path: PathBuf) -> io::Result<SegmentReader> {
        let file = File::open(&path)?;
        let len = file.metadata()?.len();
        Ok(SegmentReader {
            path,
            len,
            offset: 0,
            file,
            read: 0,
            buf: Vec::new(),
            start: 0,
            end: 0,
            payload: 0..0,
            ahead: None,
        })
    }

    /// Makes at least `n` unconsumed bytes available in `buf[start..]`; `Truncated` if the
    /// file (as long as it was when opened) ends first.
    fn fill(&mut self, n: usize) -> Result<(), FrameError> {
        if self.end - self.start >= n {
            return Ok(());
        }
        if self.start + n > self.buf.len() {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            if n > self.buf.len() {
                self.buf.resize(n.max(READ_BUFFER), 0);
            }
        }
        while self.end - self.start < n {
            let left = usize::try_from(self.len - self.read).unwrap_or(usize::MAX);
            let want = (self.buf.len() - self.end).min(left);
            if want == 0 {
                return Err(FrameError::Truncated);
            }
            match self.file.read(&mut self.buf[self.end..self.end + want]) {
                Ok(0) => return Err(FrameError::Truncated),
                Ok(got) => {
                    self.end += got;
                    self.read += got as u64;
                }
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => return Err(err.into()),
            }
        }
        Ok(())
    }

    pub fn read_header(&mut self) -> Result<SegmentHeader, HeaderError> {
        const PREFIX: usize = MAGIC.len() + 2;
        self.fill(PREFIX).map_err(HeaderError::Frame)?;
        let prefix = &self.buf[self.start..self.start + PREFIX];
        let magic_ok = &prefix[..MAGIC.len()] == MAGIC;
        let version = u16::from_le_bytes([prefix[MAGIC.len()], prefix[MAGIC.len() + 1]]);
        self.start += PREFIX;
        self.offset = PREFIX as u64;
        if !magic_ok {
            return Err(HeaderError::Invalid("bad magic".into()));
        }
        if version != FORMAT_VERSION {
            return Err(HeaderError::Invalid(format!(
                "unsupported format version {version}"
            )));
        }
        let payload = self.next_frame().map_err(HeaderError::Frame)?;
        let payload = payload.ok_or(HeaderError::Frame(FrameError::Truncated))?;
        parse_header(payload).map_err(HeaderError::Invalid)
    }

    /// The next frame's payload, or `None` at the end of the segment. On error the reader
    /// stays at the start of the bad frame.
    pub fn next_frame(&mut self) -> Result<Option<&[u8]>, FrameError> {
        let Some((payload, crc)) = self.peek_frame()? else {
            return Ok(None);
        };
        if crc32c::crc32c(&self.buf[payload.clone()]) != crc {
            return Err(FrameError::Crc);
        }
        Ok(Some(self.consume(payload)))
    }

    /// Like `next_frame`, for a record: also returns its leaf hash. Checksums and hashes
    /// are computed for two frames at once when the next one is already in the buffer.
    pub fn next_record(&mut self) -> Result<Option<(&[u8], Hash)>, FrameError> {
        let Some((payload, crc)) = self.peek_frame()? else {
            return Ok(None);
        };
        let (found, hash) = match self.ahead.take() {
            Some(ahead) if ahead.offset == self.offset => (ahead.crc, ahead.hash),
            _ => {
                let this = &self.buf[payload.clone()];
                match self.buffered_after(payload.end) {
                    Some(next) => {
                        let next_payload = &self.buf[next.clone()];
                        let (found, next_crc) = crc32c_pair(this, next_payload);
                        let (hash, next_hash) = leaf_hash_pair(this, next_payload);
                        self.ahead = Some(Ahead {
                            offset: self.offset + (payload.end - self.start) as u64,
                            crc: next_crc,
                            hash: next_hash,
                        });
                        (found, hash)
                    }
                    None => (crc32c::crc32c(this), leaf_hash(this)),
                }
            }
        };
        if found != crc {
            return Err(FrameError::Crc);
        }
        Ok(Some((self.consume(payload), hash)))
    }

    /// The next frame's payload (where it is in `buf`) and stated CRC, read into the
    /// buffer but not consumed; `None` at the end of the segment.
    fn peek_frame(&mut self) -> Result<Option<(Range<usize>, u32)>, FrameError> {
        self.payload = 0..0;
        match self.fill(1) {
            Err(FrameError::Truncated) => return Ok(None),
            other => other?,
        }
        self.fill(FRAME_HEADER)?;
        let header = &self.buf[self.start..self.start + FRAME_HEADER];
        let len = u32::from_le_bytes(header[..4].try_into().expect("4 bytes"));
        let crc = u32::from_le_bytes(header[4..].try_into().expect("4 bytes"));
        if len == 0 && crc == 0 {
            return Err(FrameError::Unwritten);
        }
        let end = self.offset + (FRAME_HEADER as u64) + u64::from(len);
        if end > self.len {
            return Err(FrameError::Truncated);
        }
        if len > MAX_PAYLOAD {
            return Err(FrameError::TooLarge(len));
        }
        let frame = FRAME_HEADER + len as usize;
        self.fill(frame)?;
        Ok(Some((self.start + FRAME_HEADER..self.start + frame, crc)))
    }

    /// Moves past the frame whose payload is `payload`, and returns that payload.
    fn consume(&mut self, payload: Range<usize>) -> &[u8] {
        self.offset += (payload.end - self.start) as u64;
        self.start = payload.end;
        self.payload = payload;
        &self.buf[self.payload.clone()]
    }

    /// The payload of the frame starting at `at` in `buf`, if all of it is there already.
    fn buffered_after(&self, at: usize) -> Option<Range<usize>> {
        let header = self.buf[..self.end].get(at..at + FRAME_HEADER)?;
        let len = u32::from_le_bytes(header[..4].try_into().expect("4 bytes"));
        let payload = at + FRAME_HEADER..at + FRAME_HEADER + len as usize;
        (len > 0 && len <= MAX_PAYLOAD && payload.end <= self.end).then_some(payload)
    }

    /// The payload last returned by `next_frame` or `next_record`.
    pub fn payload(&self) -> &[u8] {
        &self.buf[self.payload.clone()]
    }

    /// Classifies the bytes from `from` to the end, to tell a torn final write from damage
    /// in the middle of a segment.
    pub fn inspect_tail(&self, from: u64) -> io::Result<Tail> {
        let mut file = File::open(&self.path)?;
        io::Seek::seek(&mut file, io::SeekFrom::Start(from))?;
        let mut tail = Vec::new();
        file.take(self.len - from).read_to_end(&mut tail)?;
        if tail.iter().all(|&b| b == 0) {
            return Ok(Tail::Zeros);
        }
        // Skip the first byte so the damaged frame itself is not found.
        let frame_follows = (1..tail.len()).any(|at| is_record_frame_at(&tail, at));
        Ok(if frame_follows {
            Tail::FrameFollows
        } else {
            Tail::Unframed
        })
    }
}

/// What follows the first bad frame of a segment.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Tail {
    /// Space the file system allocated but never wrote, as a crash can leave.
    Zeros,
    /// A well-formed frame starts later on: records follow the damage.
    FrameFollows,
    /// Neither: what a torn write leaves.
    Unframed,
}

/// True if `bytes[at..]` starts with a complete frame whose CRC matches and whose payload
/// is a JSON object.
fn is_record_frame_at(bytes: &[u8], at: usize) -> bool {
    let Some(header) = bytes.get(at..at + FRAME_HEADER) else {
        return false;
    };
    let len = u32::from_le_bytes(header[..4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(header[4..].try_into().expect("4 bytes"));
    let start = at + FRAME_HEADER;
    match bytes.get(start..start.saturating_add(len)) {
        Some(payload) => payload.first() == Some(&b'{') && crc32c::crc32c(payload) == crc,
        None => false,
    }
}

fn parse_header(payload: &[u8]) -> Result<SegmentHeader, String> {
    #[derive(Deserialize)]
    struct Raw<'a> {
        chain: &'a str,
        first_seq: u64,
        prev: &'a str,
        #[serde(borrow)]
        tree: Vec<&'a str>,
    }
    let raw: Raw = serde_json::from_slice(payload).map_err(|e| format!("header JSON: {e}"))?;
    let before = raw
        .first_seq
        .checked_sub(1)
        .ok_or("header first_seq is 0")?;
    let nodes = raw
        .tree
        .iter()
        .map(|node| {
            parse_hash(node).ok_or("header tree holds a hash that is not 64 lowercase hex digits")
        })
        .collect::<Result<Vec<_>, _>>()?;
    let count = nodes.len();
    Ok(SegmentHeader {
        chain: raw.chain.to_owned(),
        first_seq: raw.first_seq,
        prev: parse_hash(raw.prev).ok_or("header prev is not 64 lowercase hex digits")?,
        tree: Frontier::from_nodes(before, nodes).ok_or_else(|| {
            format!(
                "header tree has {count} hashes, a tree of {before} records has {}",
                before.count_ones()
            )
        })?,
    })
}

/// Parses a hash written as 64 lowercase hex digits, the only form the writer produces.
pub(crate) fn parse_hash(text: impl AsRef<[u8]>) -> Option<Hash> {
    let text = text.as_ref();
    let mut hash = [0u8; 32];
    let lowercase = text.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    (lowercase && hex::decode_to_slice(text, &mut hash).is_ok()).then_some(hash)
}
