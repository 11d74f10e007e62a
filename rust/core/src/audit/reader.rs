//! Reading a chain back: every record is checked against its predecessor as it streams by,
//! so reading and verifying are the same pass.

use std::fs;
use std::path::{Path, PathBuf};

use super::chain::{ChainState, Problem, Record, RecordKind, VerifyFailure};
use super::merkle::{Frontier, Hash};
use super::segment::{list_segments, segment_name, FrameError, SegmentHeader, SegmentReader, Tail};

/// Iterator over a chain's verified records, stopping after the first failure.
///
/// Verification can instead go on past a failure with [`RecordReader::skip_to_next_segment`],
/// picking the chain up again from the next segment's header.
pub struct RecordReader {
    dir: PathBuf,
    /// Segment numbers on disk: contiguous, but not necessarily from 1 (retention).
    segments: Vec<u64>,
    /// Index in `segments` of the next segment to open.
    next_segment: usize,
    segments_read: u64,
    current: Option<SegmentReader>,
    state: ChainState,
    /// Seq of the first record read: 1 unless reading started past the first segment.
    first_seq: u64,
    first_segment: u64,
    tail: Option<TornTail>,
    /// Records before this seq are verified but not yielded by the iterator.
    skip_before: u64,
    failed: bool,
    /// The next segment's header is taken as given, not checked against the chain so far:
    /// it is the first one read, or reading skipped damage before it.
    resync: bool,
    /// Number of the last segment opened (or found missing).
    last_number: Option<u64>,
}

/// An incomplete frame ending the last segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TornTail {
    pub path: PathBuf,
    /// Where the incomplete frame starts, and how long the file was when it was read.
    pub offset: u64,
    pub file_len: u64,
    /// Its header was zeros: a frame copied into reserved space and not yet announced.
    pub unannounced: bool,
}

impl TornTail {
    /// True if a live writer finished the frame since it was read: the file grew, or the
    /// header of an unannounced frame is there now.
    pub(crate) fn completed(&self) -> bool {
        use std::io::{Read, Seek, SeekFrom};
        let grew = fs::metadata(&self.path).is_ok_and(|meta| meta.len() > self.file_len);
        let announced = || -> std::io::Result<bool> {
            let mut file = fs::File::open(&self.path)?;
            file.seek(SeekFrom::Start(self.offset))?;
            let mut header = [0u8; 8];
            file.read_exact(&mut header)?;
            Ok(header != [0; 8])
        };
        grew || (self.unannounced && announced().unwrap_or(false))
    }
}

impl RecordReader {
    /// Reads a chain from its first segment on disk. If that is not segment 1 (retention
    /// removed the earlier ones), the chain before it is taken from its header.
    pub fn open(root: &Path, chain: &str) -> Result<RecordReader, VerifyFailure> {
        RecordReader::open_at(root, chain, 0)
    }

    /// Reads a chain from the segment holding record `seq`, taking what came before from
    /// that segment's header; the iterator skips the records before `seq`.
    pub fn open_at(root: &Path, chain: &str, seq: u64) -> Result<RecordReader, VerifyFailure> {
        let dir = root.join(chain);
        let segments = list_contiguous(&dir)?;
        let mut reader = RecordReader::over(dir, chain, segments, seq);
        for (index, &number) in reader.segments.iter().enumerate().skip(1).rev() {
            if read_header(&reader.dir.join(segment_name(number)))?.first_seq <= seq {
                reader.next_segment = index;
                break;
            }
        }
        reader.first_segment = reader.segments[reader.next_segment];
        reader.open_next_segment()?;
        Ok(reader)
    }

    /// Reads a whole chain even if segments are missing or damaged: each problem is
    /// returned by [`RecordReader::next_payload`] in turn (a gap as a missing segment) and
    /// reading goes on after [`RecordReader::skip_to_next_segment`]. The first segment that
    /// opens is open on return, so the reader stands where the chain read starts; the
    /// problems of those before it are returned beside it. Fails only if the chain's
    /// directory cannot be listed or holds no segment.
    pub(crate) fn open_tolerant(
        root: &Path,
        chain: &str,
    ) -> Result<(RecordReader, Vec<VerifyFailure>), VerifyFailure> {
        let dir = root.join(chain);
        let segments = list_segments(&dir).map_err(|err| VerifyFailure {
            path: dir.clone(),
            offset: None,
            seq: None,
            problem: Problem::Io(err),
        })?;
        if segments.is_empty() {
            return Err(VerifyFailure {
                path: dir.join(segment_name(1)),
                offset: None,
                seq: None,
                problem: Problem::MissingSegment,
            });
        }
        let mut reader = RecordReader::over(dir, chain, segments, 0);
        let mut problems = Vec::new();
        while let Err(failure) = reader.open_next_segment() {
            problems.push(failure);
            reader.skip_to_next_segment();
        }
        Ok((reader, problems))
    }

    fn over(dir: PathBuf, chain: &str, segments: Vec<u64>, skip_before: u64) -> RecordReader {
        RecordReader {
            dir,
            first_segment: segments[0],
            segments,
            next_segment: 0,
            segments_read: 0,
            current: None,
            state: ChainState::genesis(chain),
            first_seq: 1,
            tail: None,
            skip_before,
            failed: false,
            resync: false,
            last_number: None,
        }
    }

    /// Seq of the last record read (0 before any).
    pub fn seq(&self) -> u64 {
        self.state.seq
    }

    /// Hash of the last record read.
    pub fn head(&self) -> Hash {
        self.state.head
    }

    /// The Merkle frontier of every record up to the last one read.
    pub fn tree(&self) -> &Frontier {
        &self.state.tree
    }

    pub fn first_seq(&self) -> u64 {
        self.first_seq
    }

    pub fn first_segment(&self) -> u64 {
        self.first_segment
    }

    pub fn segments_read(&self) -> u64 {
        self.segments_read
    }

    /// Bytes of an incomplete frame ending the last segment: a write in progress, or a torn
    /// write the writer will cut when it next opens the chain. Not part of the chain.
    pub fn tail_bytes(&self) -> u64 {
        self.tail
            .as_ref()
            .map_or(0, |tail| tail.file_len - tail.offset)
    }

    pub(crate) fn tail(&self) -> Option<&TornTail> {
        self.tail.as_ref()
    }

    /// The segment being read, or the directory before the first one is opened.
    pub fn path(&self) -> &Path {
        self.current
            .as_ref()
            .map_or(&self.dir, |segment| &segment.path)
    }

    /// After a failure, gives up on the rest of the segment being read: reading goes on
    /// from the next segment, whose header is taken as given.
    pub(crate) fn skip_to_next_segment(&mut self) {
        self.current = None;
        self.resync = true;
    }

    /// The next verified record's payload and kind, without copying it out of the buffer.
    pub(crate) fn next_payload(&mut self) -> Result<Option<(&[u8], RecordKind)>, VerifyFailure> {
        loop {
            let Some(reader) = &mut self.current else {
                if !self.open_next_segment()? {
                    return Ok(None);
                }
                continue;
            };
            let last_segment = self.next_segment == self.segments.len();
            let frame_start = reader.offset;
            let expected_seq = self.state.seq + 1;
            let fail = |reader: &SegmentReader, problem| VerifyFailure {
                path: reader.path.clone(),
                offset: Some(frame_start),
                seq: Some(expected_seq),
                problem,
            };
            match reader.next_record() {
                Ok(Some((payload, hash))) => match self.state.advance(payload, hash) {
                    Ok(kind) => {
                        let payload = self.current.as_ref().map(SegmentReader::payload);
                        return Ok(payload.map(|payload| (payload, kind)));
                    }
                    Err(problem) => return Err(fail(reader, problem)),
                },
                Ok(None) => self.current = None,
                // The reserve after the live segment's last record, when zeros to its end;
                // otherwise a frame being appended, or one a crash left unannounced.
                Err(FrameError::Unwritten) if last_segment => {
                    let reserve = reader.inspect_tail(frame_start);
                    match reserve {
                        Ok(Tail::Zeros) => {}
                        Ok(_) => {
                            self.tail = Some(TornTail {
                                path: reader.path.clone(),
                                offset: frame_start,
                                file_len: reader.len,
                                unannounced: true,
                            })
                        }
                        Err(err) => return Err(fail(reader, Problem::Io(err))),
                    }
                    self.current = None;
                }
                Err(FrameError::Truncated) if last_segment => {
                    self.tail = Some(TornTail {
                        path: reader.path.clone(),
                        offset: reader.offset,
                        file_len: reader.len,
                        unannounced: false,
                    });
                    self.current = None;
                }
                Err(err) => return Err(fail(reader, err.into())),
            }
        }
    }

    /// Opens the next segment and checks its header; false once all segments are read. A
    /// segment that fails is passed over: reading can go on with the one after it.
    fn open_next_segment(&mut self) -> Result<bool, VerifyFailure> {
        let Some(&number) = self.segments.get(self.next_segment) else {
            return Ok(false);
        };
        if let Some(missing) = self
            .last_number
            .map(|last| last + 1)
            .filter(|&n| n < number)
        {
            // Reported once; the segment after the gap is then read on its own header.
            self.last_number = Some(number - 1);
            self.resync = true;
            return Err(VerifyFailure {
                path: self.dir.join(segment_name(missing)),
                offset: None,
                seq: Some(self.state.seq + 1),
                problem: Problem::MissingSegment,
            });
        }
        self.next_segment += 1;
        self.last_number = Some(number);
        let path = self.dir.join(segment_name(number));
        let fail = |problem| VerifyFailure {
            path: path.clone(),
            offset: Some(0),
            seq: None,
            problem,
        };
        let mut reader = SegmentReader::open(path.clone()).map_err(|e| fail(Problem::Io(e)))?;
        let header = reader.read_header().map_err(|e| fail(e.into()))?;
        let first_read = self.segments_read == 0;
        if (first_read && number > 1) || self.resync {
            // Nothing before this segment is read: its header is where the chain stands.
            if header.chain != self.state.chain {
                return Err(fail(Problem::HeaderMismatch {
                    field: "chain",
                    expected: self.state.chain.clone(),
                    found: header.chain,
                }));
            }
            if first_read && number == self.first_segment {
                self.first_seq = header.first_seq;
            }
            self.state = ChainState::from_header(&header);
            self.resync = false;
        } else {
            self.state.check_header(&header).map_err(fail)?;
        }
        self.segments_read += 1;
        self.current = Some(reader);
        Ok(true)
    }
}

impl Iterator for RecordReader {
    type Item = Result<Record, VerifyFailure>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        loop {
            let skipped = self.state.seq + 1 < self.skip_before;
            match self.next_payload() {
                Ok(Some(_)) if skipped => {}
                Ok(Some((payload, _))) => {
                    let payload = payload.to_vec();
                    return Some(Ok(Record {
                        seq: self.state.seq,
                        hash: self.state.head,
                        payload,
                    }));
                }
                Ok(None) => return None,
                Err(failure) => {
                    self.failed = true;
                    return Some(Err(failure));
                }
            }
        }
    }
}

/// The header of one segment.
pub(crate) fn read_header(path: &Path) -> Result<SegmentHeader, VerifyFailure> {
    let fail = |problem| VerifyFailure {
        path: path.to_owned(),
        offset: Some(0),
        seq: None,
        problem,
    };
    let mut reader = SegmentReader::open(path.to_owned()).map_err(|e| fail(Problem::Io(e)))?;
    reader.read_header().map_err(|e| fail(e.into()))
}

/// Segment numbers in `dir`, which must be contiguous: a gap is a removed segment.
pub(crate) fn list_contiguous(dir: &Path) -> Result<Vec<u64>, VerifyFailure> {
    let numbers = list_segments(dir).map_err(|err| VerifyFailure {
        path: dir.to_owned(),
        offset: None,
        seq: None,
        problem: Problem::Io(err),
    })?;
    let missing = match numbers.first() {
        None => Some(1),
        Some(&first) => (first..)
            .zip(&numbers)
            .find(|(expected, &found)| found != *expected)
            .map(|(expected, _)| expected),
    };
    match missing {
        None => Ok(numbers),
        Some(number) => Err(VerifyFailure {
            path: dir.join(segment_name(number)),
            offset: None,
            seq: None,
            problem: Problem::MissingSegment,
        }),
    }
}
