//! Retention: dropping the oldest sealed segments by age or total size, without breaking
//! the verifiability of what is kept.
//!
//! Segments go only from the start of the chain and only whole. The decision is first
//! appended as a `retention` record, a checkpoint is then signed over it, and only then are
//! files removed: the first kept segment's header (its `prev` and Merkle frontier) is
//! thereby pinned by a signed tree head, and verification can tell retention from a
//! segment deleted by anyone else.

use std::fs;
use std::path::Path;
use std::time::{Duration, SystemTime};

use super::checkpoint::{list_notes, CHECKPOINT_DIR};
use super::reader::read_header;
use super::recover::sync_dir;
use super::segment::{list_segments, segment_name};
use super::AuditError;

/// What to keep; `None` means no limit of that kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// Drop a sealed segment once its last write is older than this.
    pub max_age: Option<Duration>,
    /// Drop the oldest sealed segments while the chain is larger than this.
    pub max_bytes: Option<u64>,
}

/// What retention removes: every segment before `first_segment`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetentionPlan {
    /// The first segment kept.
    pub first_segment: u64,
    /// Seq of the first record kept.
    pub first_seq: u64,
    /// How many segments go.
    pub segments: u64,
    pub bytes: u64,
    /// Seq of the `retention` record announcing this plan.
    pub record_seq: u64,
}

/// The oldest segments `policy` lets go; never `current`, the one being appended to, which
/// counts `current_len` bytes (its file is longer by the space reserved for appends).
pub(super) fn plan(
    dir: &Path,
    (current, current_len): (u64, u64),
    policy: &RetentionPolicy,
    now: SystemTime,
) -> Result<Option<RetentionPlan>, AuditError> {
    let mut sealed = Vec::new();
    let mut total = 0;
    for number in list_segments(dir).map_err(AuditError::io(dir))? {
        let path = dir.join(segment_name(number));
        let meta = fs::metadata(&path).map_err(AuditError::io(&path))?;
        total += if number == current {
            current_len
        } else {
            meta.len()
        };
        if number < current {
            sealed.push((
                number,
                meta.len(),
                meta.modified().map_err(AuditError::io(&path))?,
            ));
        }
    }
    let (mut segments, mut bytes) = (0, 0);
    for &(_, len, modified) in &sealed {
        let too_old = policy
            .max_age
            .is_some_and(|age| now.duration_since(modified).unwrap_or_default() > age);
        let too_big = policy.max_bytes.is_some_and(|max| total - bytes > max);
        if !(too_old || too_big) {
            break;
        }
        segments += 1;
        bytes += len;
    }
    if segments == 0 {
        return Ok(None);
    }
    let first_segment = sealed[segments - 1].0 + 1;
    let header = read_header(&dir.join(segment_name(first_segment)))?;
    Ok(Some(RetentionPlan {
        first_segment,
        first_seq: header.first_seq,
        segments: segments as u64,
        bytes,
        record_seq: 0,
    }))
}

/// Removes the segments before `plan.first_segment`, oldest first so an interruption
/// leaves a contiguous chain, and the notes of checkpoints that only covered them.
/// Refused unless a checkpoint at or after the first kept record exists.
pub(super) fn apply(dir: &Path, plan: &RetentionPlan) -> Result<u64, AuditError> {
    let notes = list_notes(dir).map_err(AuditError::io(dir))?;
    if !notes
        .iter()
        .any(|&(size, _)| size >= plan.first_seq.max(plan.record_seq))
    {
        return Err(AuditError::RetentionUnpinned(plan.record_seq));
    }
    let mut removed = 0;
    for number in list_segments(dir).map_err(AuditError::io(dir))? {
        if number >= plan.first_segment {
            break;
        }
        let path = dir.join(segment_name(number));
        fs::remove_file(&path).map_err(AuditError::io(&path))?;
        removed += 1;
    }
    for (size, path) in notes {
        if size + 1 < plan.first_seq {
            fs::remove_file(&path).map_err(AuditError::io(&path))?;
        }
    }
    sync_dir(dir)?;
    sync_dir(&dir.join(CHECKPOINT_DIR))?;
    Ok(removed)
}
