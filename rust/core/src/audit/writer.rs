//! Appending to a chain, and picking it up again after a restart or a crash.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::chain::{ChainState, Problem, VerifyFailure};
use super::payload::{encode_record, WriterFields, WRITER_FIELDS};
use super::segment::{
    frame_header, list_segments, segment_name, FrameError, SegmentHeader, SegmentReader, Tail,
    FRAME_HEADER,
};
use super::{is_valid_chain_name, AuditError, MAX_PAYLOAD};

/// When appended records are forced to stable storage. Every append reaches the kernel
/// before it returns, so only a machine crash, not a process crash, can lose records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncPolicy {
    Never,
    /// fsync at most this often: checked on each append and by [`AuditWriter::flush_due`],
    /// which a timer should call so a quiet chain does not stay unsynced.
    Interval(Duration),
    Always,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AuditOptions {
    /// Start a new segment once the current one has reached this size.
    pub segment_bytes: u64,
    pub sync: SyncPolicy,
}

impl Default for AuditOptions {
    /// 64 MiB segments; fsync at most once a second, bounding what a power cut can lose
    /// without putting a disk flush on every request.
    fn default() -> Self {
        AuditOptions {
            segment_bytes: 64 << 20,
            sync: SyncPolicy::Interval(Duration::from_secs(1)),
        }
    }
}

/// What [`AuditWriter::open`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenReport {
    /// The chain did not exist and was started.
    pub created: bool,
    /// An incomplete last write that was cut off before appending.
    pub torn_tail: Option<TornTail>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TornTail {
    pub segment: PathBuf,
    /// Where the segment now ends.
    pub offset: u64,
    pub bytes_cut: u64,
}

/// The single writer of one chain; holds an exclusive lock on it while open.
pub struct AuditWriter {
    dir: PathBuf,
    state: ChainState,
    opts: AuditOptions,
    segment: u64,
    path: PathBuf,
    file: File,
    segment_len: u64,
    /// Frame under construction, reused so appends do not allocate it anew.
    frame: Vec<u8>,
    unsynced: bool,
    last_sync: Instant,
    poisoned: Option<String>,
    _lock: File,
}

impl AuditWriter {
    /// Opens `<root>/<chain>`, creating it if needed. An existing chain continues from the
    /// last good record of its last segment. What a crash can leave after it (unwritten
    /// zeros, or bad frames with no well-formed frame after them) is cut and reported; any
    /// other damage is refused as [`AuditError::Corrupt`], cutting nothing.
    pub fn open(
        root: &Path,
        chain: &str,
        opts: AuditOptions,
    ) -> Result<(AuditWriter, OpenReport), AuditError> {
        if !is_valid_chain_name(chain) {
            return Err(AuditError::InvalidChainName(chain.to_owned()));
        }
        let dir = root.join(chain);
        fs::create_dir_all(root).map_err(AuditError::io(root))?;
        let created = match fs::create_dir(&dir) {
            Ok(()) => true,
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => false,
            Err(err) => return Err(AuditError::io(&dir)(err)),
        };
        if created {
            sync_dir(root)?;
        }
        let lock = lock_chain(&dir)?;
        remove_temp_files(&dir)?;

        let (segment, state, torn_tail) =
            match list_segments(&dir).map_err(AuditError::io(&dir))?.last() {
                None => {
                    let genesis = ChainState::genesis(chain);
                    create_segment(&dir, 1, &genesis)?;
                    (1, genesis, None)
                }
                Some(&last) => {
                    let (state, torn_tail) = recover(dir.join(segment_name(last)), chain)?;
                    (last, state, torn_tail)
                }
            };
        let path = dir.join(segment_name(segment));
        let file = OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(AuditError::io(&path))?;
        let segment_len = file.metadata().map_err(AuditError::io(&path))?.len();
        let writer = AuditWriter {
            dir,
            state,
            opts,
            segment,
            path,
            file,
            segment_len,
            frame: Vec::with_capacity(1024),
            unsynced: false,
            last_sync: Instant::now(),
            poisoned: None,
            _lock: lock,
        };
        Ok((writer, OpenReport { created, torn_tail }))
    }

    /// Appends one record made of `fields` plus the writer's own (see [`WRITER_FIELDS`]),
    /// handing it to the kernel in a single write before returning its seq and hash.
    pub fn append(&mut self, fields: Map<String, Value>) -> Result<(u64, [u8; 32]), AuditError> {
        self.check_poisoned()?;
        if let Some(&reserved) = WRITER_FIELDS
            .iter()
            .find(|&&name| fields.contains_key(name))
        {
            return Err(AuditError::ReservedField(reserved));
        }
        let seq = self.state.seq + 1;
        let own = WriterFields {
            chain: &self.state.chain,
            prev: &self.state.head,
            seq,
            unix_micros: now_micros(),
        };
        self.frame.clear();
        self.frame.extend_from_slice(&[0; FRAME_HEADER]);
        encode_record(&mut self.frame, &own, &fields);
        let payload = &self.frame[FRAME_HEADER..];
        if payload.len() > MAX_PAYLOAD as usize {
            return Err(AuditError::RecordTooLarge(payload.len()));
        }
        let header = frame_header(payload);
        let hash: [u8; 32] = Sha256::digest(payload).into();
        self.frame[..FRAME_HEADER].copy_from_slice(&header);

        if self.segment_len >= self.opts.segment_bytes {
            let rotated = self.rotate();
            self.poison_on_err(rotated)?;
        }
        let written = self
            .file
            .write_all(&self.frame)
            .map_err(AuditError::io(&self.path));
        self.poison_on_err(written)?;
        self.segment_len += self.frame.len() as u64;
        self.state.seq = seq;
        self.state.head = hash;
        self.unsynced = true;
        match self.opts.sync {
            SyncPolicy::Never => {}
            SyncPolicy::Interval(_) => self.flush_due()?,
            SyncPolicy::Always => self.sync()?,
        }
        Ok((seq, hash))
    }

    /// Forces appended records to stable storage. A failure poisons the writer: after a
    /// failed fsync the kernel may have dropped the data, so retrying would lie.
    pub fn sync(&mut self) -> Result<(), AuditError> {
        self.check_poisoned()?;
        if self.unsynced {
            let synced = self.file.sync_data().map_err(AuditError::io(&self.path));
            self.poison_on_err(synced)?;
            self.unsynced = false;
        }
        self.last_sync = Instant::now();
        Ok(())
    }

    /// Syncs if the policy is [`SyncPolicy::Interval`] and the interval has passed since the
    /// last sync with records still unsynced.
    pub fn flush_due(&mut self) -> Result<(), AuditError> {
        match self.opts.sync {
            SyncPolicy::Interval(every) if self.unsynced && self.last_sync.elapsed() >= every => {
                self.sync()
            }
            _ => Ok(()),
        }
    }

    /// Changes when records are synced (config is hot-reloadable, ROLLBACK.md R12); applies
    /// from the next append or `flush_due`.
    pub fn set_sync_policy(&mut self, sync: SyncPolicy) {
        self.opts.sync = sync;
    }

    /// Seq and hash of the last record; 0 and zeros for an empty chain.
    pub fn head(&self) -> (u64, [u8; 32]) {
        (self.state.seq, self.state.head)
    }

    pub fn chain(&self) -> &str {
        &self.state.chain
    }

    /// Seals the current segment durably and continues in a new one.
    fn rotate(&mut self) -> Result<(), AuditError> {
        self.file.sync_data().map_err(AuditError::io(&self.path))?;
        self.unsynced = false;
        let next = self.segment + 1;
        create_segment(&self.dir, next, &self.state)?;
        let path = self.dir.join(segment_name(next));
        self.file = OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(AuditError::io(&path))?;
        self.segment_len = self.file.metadata().map_err(AuditError::io(&path))?.len();
        self.segment = next;
        self.path = path;
        Ok(())
    }

    fn check_poisoned(&self) -> Result<(), AuditError> {
        match &self.poisoned {
            Some(reason) => Err(AuditError::Poisoned(reason.clone())),
            None => Ok(()),
        }
    }

    fn poison_on_err<T>(&mut self, result: Result<T, AuditError>) -> Result<T, AuditError> {
        if let Err(err) = &result {
            self.poisoned = Some(err.to_string());
        }
        result
    }
}

/// Reads the last segment to find where the chain ends, cutting a torn write if there is one.
fn recover(path: PathBuf, chain: &str) -> Result<(ChainState, Option<TornTail>), AuditError> {
    let corrupt = |offset, seq, problem| {
        AuditError::Corrupt(VerifyFailure {
            segment: path.clone(),
            offset: Some(offset),
            seq,
            problem,
        })
    };
    let mut reader = SegmentReader::open(path.clone()).map_err(AuditError::io(&path))?;
    let header = reader
        .read_header()
        .map_err(|err| corrupt(0, None, err.into()))?;
    let Some(last_seq) = header.first_seq.checked_sub(1) else {
        return Err(corrupt(
            0,
            None,
            Problem::BadHeader("first_seq is 0".into()),
        ));
    };
    let mut state = ChainState {
        chain: chain.to_owned(),
        seq: last_seq,
        head: header.prev,
    };
    state
        .check_header(&header)
        .map_err(|problem| corrupt(0, None, problem))?;
    loop {
        let frame_start = reader.offset;
        // A bad frame may be an interrupted write; a well-framed bad record cannot be.
        let (bad_frame, problem) = match reader.next_frame() {
            Ok(Some(payload)) => match state.advance(payload) {
                Ok(_) => continue,
                Err(problem) => (false, problem),
            },
            Ok(None) => return Ok((state, None)),
            Err(FrameError::Io(err)) => return Err(AuditError::io(&path)(err)),
            Err(err) => (true, err.into()),
        };
        let crash_damage = match reader
            .inspect_tail(frame_start)
            .map_err(AuditError::io(&path))?
        {
            Tail::Zeros => true,
            Tail::FrameFollows => false,
            Tail::Unframed => bad_frame,
        };
        if !crash_damage {
            return Err(corrupt(frame_start, Some(state.seq + 1), problem));
        }
        let file = OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(AuditError::io(&path))?;
        file.set_len(frame_start)
            .and_then(|()| file.sync_data())
            .map_err(AuditError::io(&path))?;
        let torn_tail = TornTail {
            segment: path.clone(),
            offset: frame_start,
            bytes_cut: reader.len - frame_start,
        };
        return Ok((state, Some(torn_tail)));
    }
}

/// Creates segment `number` continuing from `state`. The header is written to a temporary
/// file and synced before being renamed into place, so a segment never exists without one.
fn create_segment(dir: &Path, number: u64, state: &ChainState) -> Result<(), AuditError> {
    let path = dir.join(segment_name(number));
    let temp = path.with_extension("seg.tmp");
    let header = SegmentHeader {
        chain: state.chain.clone(),
        first_seq: state.seq + 1,
        prev: state.head,
    };
    let mut file = File::create(&temp).map_err(AuditError::io(&temp))?;
    file.write_all(&header.encode())
        .and_then(|()| file.sync_data())
        .map_err(AuditError::io(&temp))?;
    fs::rename(&temp, &path).map_err(AuditError::io(&path))?;
    sync_dir(dir)
}

/// Leftovers of a segment creation interrupted before its rename.
fn remove_temp_files(dir: &Path) -> Result<(), AuditError> {
    for entry in fs::read_dir(dir).map_err(AuditError::io(dir))? {
        let path = entry.map_err(AuditError::io(dir))?.path();
        if path.to_str().is_some_and(|name| name.ends_with(".seg.tmp")) {
            fs::remove_file(&path).map_err(AuditError::io(&path))?;
        }
    }
    Ok(())
}

/// Two writers on one chain would interleave frames, so the second one is refused.
fn lock_chain(dir: &Path) -> Result<File, AuditError> {
    let path = dir.join("LOCK");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(AuditError::io(&path))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(TryLockError::WouldBlock) => Err(AuditError::Locked(dir.to_owned())),
        Err(TryLockError::Error(err)) => Err(AuditError::io(&path)(err)),
    }
}

/// Makes a created or renamed directory entry durable.
fn sync_dir(dir: &Path) -> Result<(), AuditError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(AuditError::io(dir))
}

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_micros() as u64)
}
