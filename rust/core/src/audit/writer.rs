//! Appending to a chain: framing, linking, the Merkle frontier, segment rotation and fsync.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Map, Value};

use super::chain::ChainState;
use super::checkpoint::Checkpoint;
use super::mapped::MappedFile;
use super::merkle::Hash;
use super::payload::{frame_record, RecordFields};
use super::recover;
use super::retention::{self, RetentionPlan, RetentionPolicy};
use super::segment::segment_name;
use super::{is_valid_chain_name, AuditError};

/// When appended records are forced to stable storage. Every append reaches the kernel
/// before it returns, so only a machine crash, not a process crash, can lose records.
///
/// Only `Always` syncs inside [`AuditWriter::append`]. `Interval` and `Group` are carried
/// out by the embedding through [`AuditWriter::begin_sync`] (a timer, or requests waiting
/// for one shared fsync), so that an fsync never holds up appends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncPolicy {
    /// Only rotation, checkpoints and shutdown sync.
    Never,
    /// A timer syncs this often when there are unsynced records.
    Interval(Duration),
    /// A request's response waits until a sync covers its record; concurrent requests
    /// share one fsync (group commit).
    Group,
    /// Every append syncs before returning.
    Always,
}

impl SyncPolicy {
    /// How the runtime config spells each policy (`audit.fsync`), in this order.
    pub const NAMES: [&'static str; 4] = ["never", "interval", "group", "always"];

    /// The policy a config names; `interval` syncs every `interval`.
    pub fn from_name(name: &str, interval: Duration) -> Option<SyncPolicy> {
        match name {
            "never" => Some(SyncPolicy::Never),
            "interval" => Some(SyncPolicy::Interval(interval)),
            "group" => Some(SyncPolicy::Group),
            "always" => Some(SyncPolicy::Always),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            SyncPolicy::Never => "never",
            SyncPolicy::Interval(_) => "interval",
            SyncPolicy::Group => "group",
            SyncPolicy::Always => "always",
        }
    }
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
    /// Size of the last checkpoint, which the chain was re-verified against up to its end.
    pub checkpoint: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TornTail {
    pub segment: PathBuf,
    /// Where the segment now ends.
    pub offset: u64,
    pub bytes_cut: u64,
}

/// A sync taken under the writer's lock and run outside it, so appends go on meanwhile.
pub struct PendingSync {
    file: Arc<File>,
    /// Every record up to this seq is in the file being synced.
    up_to: u64,
}

impl PendingSync {
    pub fn run(&self) -> io::Result<()> {
        self.file.sync_data()
    }
}

/// The single writer of one chain; holds an exclusive lock on it while open.
pub struct AuditWriter {
    dir: PathBuf,
    state: ChainState,
    opts: AuditOptions,
    segment: u64,
    path: PathBuf,
    file: MappedFile,
    /// Frame under construction, reused so appends do not allocate it anew.
    frame: Vec<u8>,
    synced_seq: u64,
    poisoned: Option<String>,
    _lock: File,
}

impl AuditWriter {
    /// Opens `<root>/<chain>`, creating it if needed. An existing chain continues from the
    /// last good record of its last segment: what a crash can leave after it (unwritten
    /// zeros, or bad frames with no well-formed frame after them) is cut and reported; any
    /// other damage is refused as [`AuditError::Corrupt`], cutting nothing. The chain is
    /// then re-verified from its last checkpoint, whose root must still be the chain's.
    pub fn open(
        root: &Path,
        chain: &str,
        opts: AuditOptions,
    ) -> Result<(AuditWriter, OpenReport), AuditError> {
        if !is_valid_chain_name(chain) {
            return Err(AuditError::InvalidChainName(chain.to_owned()));
        }
        let opened = recover::open_chain(root, chain)?;
        let path = opened.dir.join(segment_name(opened.segment));
        let file = map_segment(&path, opts.segment_bytes)?;
        let writer = AuditWriter {
            dir: opened.dir,
            synced_seq: opened.state.seq,
            state: opened.state,
            opts,
            segment: opened.segment,
            path,
            file,
            frame: Vec::with_capacity(1024),
            poisoned: None,
            _lock: opened.lock,
        };
        Ok((writer, opened.report))
    }

    /// Appends one record made of `fields` plus the writer's own (see [`super::WRITER_FIELDS`]),
    /// copied into the segment's page cache (see `mapped.rs`) before returning its seq and hash.
    pub fn append(&mut self, fields: Map<String, Value>) -> Result<(u64, Hash), AuditError> {
        self.append_record(&fields)
    }

    /// [`AuditWriter::append`] for any [`RecordFields`], typed records included.
    pub fn append_record(&mut self, fields: &dyn RecordFields) -> Result<(u64, Hash), AuditError> {
        self.check_poisoned()?;
        let seq = self.state.seq + 1;
        self.frame.clear();
        let state = &self.state;
        let hash = frame_record(
            &mut self.frame,
            &state.chain,
            seq,
            &state.head,
            now_micros(),
            fields,
        )?;

        if self.file.written() >= self.opts.segment_bytes {
            let rotated = self.rotate();
            self.poison_on_err(rotated)?;
        }
        let written = self
            .file
            .append(&self.frame)
            .map_err(AuditError::io(&self.path));
        self.poison_on_err(written)?;
        self.state.seq = seq;
        self.state.head = hash;
        self.state.tree.push(hash);
        if self.opts.sync == SyncPolicy::Always {
            self.sync()?;
        }
        Ok((seq, hash))
    }

    /// Starts a sync of every record appended so far; `None` if they are all synced. Run it
    /// without holding the writer, then hand the result to [`AuditWriter::finish_sync`].
    pub fn begin_sync(&self) -> Result<Option<PendingSync>, AuditError> {
        self.check_poisoned()?;
        Ok((self.synced_seq < self.state.seq).then(|| PendingSync {
            file: Arc::clone(self.file.file()),
            up_to: self.state.seq,
        }))
    }

    /// Records the outcome of a sync; returns the seq up to which records are durable. A
    /// failure poisons the writer: after a failed fsync the kernel may have dropped the
    /// data, so retrying would lie.
    pub fn finish_sync(
        &mut self,
        pending: PendingSync,
        result: io::Result<()>,
    ) -> Result<u64, AuditError> {
        self.check_poisoned()?;
        let synced = result.map_err(AuditError::io(&self.path));
        self.poison_on_err(synced)?;
        self.synced_seq = self.synced_seq.max(pending.up_to);
        Ok(self.synced_seq)
    }

    /// Forces every appended record to stable storage; returns the synced seq.
    pub fn sync(&mut self) -> Result<u64, AuditError> {
        match self.begin_sync()? {
            None => Ok(self.synced_seq),
            Some(pending) => {
                let result = pending.run();
                self.finish_sync(pending, result)
            }
        }
    }

    /// Changes when records are synced (config is hot-reloadable, docs/ROLLBACK.md R12).
    pub fn set_sync_policy(&mut self, sync: SyncPolicy) {
        self.opts.sync = sync;
    }

    pub fn sync_policy(&self) -> SyncPolicy {
        self.opts.sync
    }

    /// Seq and hash of the last record; 0 and zeros for an empty chain.
    pub fn head(&self) -> (u64, Hash) {
        (self.state.seq, self.state.head)
    }

    /// The seq up to which records are known to be on stable storage.
    pub fn synced_seq(&self) -> u64 {
        self.synced_seq
    }

    /// The tree head of every record appended so far, for the log `<origin>/<chain>`.
    pub fn checkpoint(&self, origin: &str) -> Checkpoint {
        Checkpoint {
            origin: format!("{origin}/{}", self.state.chain),
            size: self.state.seq,
            root: self.state.tree.root(),
        }
    }

    pub fn chain(&self) -> &str {
        &self.state.chain
    }

    /// `<root>/<chain>`: the segments, and the checkpoint notes under `checkpoints/`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Picks the sealed segments `policy` lets go and records the decision as a
    /// `retention` record; nothing is removed until [`AuditWriter::apply_retention`].
    pub fn plan_retention(
        &mut self,
        policy: &RetentionPolicy,
    ) -> Result<Option<RetentionPlan>, AuditError> {
        let Some(mut plan) = retention::plan(
            &self.dir,
            (self.segment, self.file.written()),
            policy,
            SystemTime::now(),
        )?
        else {
            return Ok(None);
        };
        let fields = json!({
            "kind": "retention",
            "first_segment": plan.first_segment,
            "first_seq": plan.first_seq,
            "removed_segments": plan.segments,
            "removed_bytes": plan.bytes,
        });
        let Value::Object(fields) = fields else {
            unreachable!("json! object literal")
        };
        plan.record_seq = self.append(fields)?.0;
        Ok(Some(plan))
    }

    /// Removes what `plan` lets go, once a checkpoint pins the first kept record.
    pub fn apply_retention(&mut self, plan: &RetentionPlan) -> Result<u64, AuditError> {
        retention::apply(&self.dir, plan)
    }

    /// Gives back the space reserved past the last record, so the segment ends with it
    /// (at shutdown; appends reserve again).
    pub fn release_reserve(&mut self) -> Result<(), AuditError> {
        let released = self.file.release().map_err(AuditError::io(&self.path));
        self.poison_on_err(released)
    }

    /// Seals the current segment durably (ending with its last record) and continues in a
    /// new one.
    fn rotate(&mut self) -> Result<(), AuditError> {
        self.file.release().map_err(AuditError::io(&self.path))?;
        self.file
            .file()
            .sync_data()
            .map_err(AuditError::io(&self.path))?;
        self.synced_seq = self.state.seq;
        let next = self.segment + 1;
        recover::create_segment(&self.dir, next, &self.state)?;
        let path = self.dir.join(segment_name(next));
        self.file = map_segment(&path, self.opts.segment_bytes)?;
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

/// Opens a segment for appending through a map sized for `segment_bytes`.
fn map_segment(path: &Path, segment_bytes: u64) -> Result<MappedFile, AuditError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .and_then(|file| MappedFile::open(file, segment_bytes))
        .map_err(AuditError::io(path))
}

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_micros() as u64)
}
