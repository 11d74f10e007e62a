//! Picking a chain up after a restart or a crash: lock it, cut a torn tail, and re-verify
//! it from its last checkpoint so a writer never extends a chain that disagrees with what
//! it has already signed.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::chain::{ChainState, Problem, VerifyFailure};
use super::checkpoint::{base64_hash, list_notes, read_note};
use super::reader::RecordReader;
use super::segment::{list_segments, segment_name, FrameError, SegmentReader, Tail};
use super::writer::{OpenReport, TornTail};
use super::AuditError;

/// A chain ready for appending.
pub(super) struct Opened {
    pub dir: PathBuf,
    pub state: ChainState,
    /// Number of the last segment, the one appends go to.
    pub segment: u64,
    pub lock: File,
    pub report: OpenReport,
}

pub(super) fn open_chain(root: &Path, chain: &str) -> Result<Opened, AuditError> {
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

    let last = list_segments(&dir)
        .map_err(AuditError::io(&dir))?
        .last()
        .copied();
    let (segment, state, torn_tail) = match last {
        None => {
            let genesis = ChainState::genesis(chain);
            create_segment(&dir, 1, &genesis)?;
            (1, genesis, None)
        }
        Some(last) => {
            let (state, torn_tail) = recover(dir.join(segment_name(last)), chain)?;
            (last, state, torn_tail)
        }
    };
    let checkpoint = recheck(root, chain, &state)?;
    let report = OpenReport {
        created,
        torn_tail,
        checkpoint,
    };
    Ok(Opened {
        dir,
        state,
        segment,
        lock,
        report,
    })
}

/// Reads the last segment to find where the chain ends, cutting a torn write if there is one.
fn recover(path: PathBuf, chain: &str) -> Result<(ChainState, Option<TornTail>), AuditError> {
    let corrupt = |offset, seq, problem| {
        AuditError::Corrupt(VerifyFailure {
            path: path.clone(),
            offset: Some(offset),
            seq,
            problem,
        })
    };
    let mut reader = SegmentReader::open(path.clone()).map_err(AuditError::io(&path))?;
    let header = reader
        .read_header()
        .map_err(|err| corrupt(0, None, err.into()))?;
    if header.chain != chain {
        let problem = Problem::HeaderMismatch {
            field: "chain",
            expected: chain.to_owned(),
            found: header.chain,
        };
        return Err(corrupt(0, None, problem));
    }
    let mut state = ChainState::from_header(&header);
    loop {
        let frame_start = reader.offset;
        // A bad frame may be an interrupted write; a well-framed bad record cannot be.
        let (bad_frame, problem) = match reader.next_record() {
            Ok(Some((payload, hash))) => match state.advance(payload, hash) {
                Ok(_) => continue,
                Err(problem) => (false, problem),
            },
            Ok(None) => return Ok((state, None)),
            Err(FrameError::Io(err)) => return Err(AuditError::io(&path)(err)),
            Err(err) => (true, err.into()),
        };
        let tail = reader
            .inspect_tail(frame_start)
            .map_err(AuditError::io(&path))?;
        let crash_damage = match tail {
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
        if matches!(problem, Problem::Unwritten) && tail == Tail::Zeros {
            return Ok((state, None)); // the reserve a stopped writer left, not a torn write
        }
        let torn_tail = TornTail {
            segment: path.clone(),
            offset: frame_start,
            bytes_cut: reader.len - frame_start,
        };
        return Ok((state, Some(torn_tail)));
    }
}

/// Re-verifies the chain from the segment holding its last checkpoint to `end`, and that
/// the checkpoint's root is the chain's at its size; returns that size. A crash can cut
/// only unsynced records, and checkpoints cover synced ones, so a failure here is damage.
fn recheck(root: &Path, chain: &str, end: &ChainState) -> Result<Option<u64>, AuditError> {
    let dir = root.join(chain);
    let Some((size, path)) = list_notes(&dir).map_err(AuditError::io(&dir))?.pop() else {
        return Ok(None);
    };
    let fail = |problem| {
        AuditError::Corrupt(VerifyFailure {
            path: path.clone(),
            offset: None,
            seq: Some(size),
            problem,
        })
    };
    let checkpoint = read_note(&path).map_err(|what| fail(Problem::BadCheckpoint(what)))?;
    if size > end.seq {
        return Err(fail(Problem::CheckpointBeyondEnd {
            size,
            head: end.seq,
        }));
    }
    let mut reader = RecordReader::open_at(root, chain, size)?;
    let mut root_at_size = (reader.seq() == size).then(|| reader.tree().root());
    while reader.next_payload()?.is_some() {
        if reader.seq() == size {
            root_at_size = Some(reader.tree().root());
        }
    }
    if root_at_size != Some(checkpoint.root) || checkpoint.size != size {
        return Err(fail(Problem::CheckpointMismatch {
            size,
            expected: root_at_size.map_or_else(|| "unknown".into(), |root| base64_hash(&root)),
            found: base64_hash(&checkpoint.root),
        }));
    }
    if (reader.seq(), reader.head()) != (end.seq, end.head) {
        let problem = Problem::BadPayload(format!(
            "re-read chain ends at seq {}, not {}",
            reader.seq(),
            end.seq
        ));
        return Err(fail(problem));
    }
    Ok(Some(size))
}

/// Creates segment `number` continuing from `state`. The header is written to a temporary
/// file and synced before being renamed into place, so a segment never exists without one.
pub(super) fn create_segment(
    dir: &Path,
    number: u64,
    state: &ChainState,
) -> Result<(), AuditError> {
    let path = dir.join(segment_name(number));
    let temp = path.with_extension("seg.tmp");
    let mut file = File::create(&temp).map_err(AuditError::io(&temp))?;
    file.write_all(&state.header().encode())
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

/// Makes a created, renamed or removed directory entry durable.
pub(super) fn sync_dir(dir: &Path) -> Result<(), AuditError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(AuditError::io(dir))
}
