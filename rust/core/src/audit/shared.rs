//! One replica's writer, shared by its request path, its timers and its control thread:
//! appends take a short lock, and fsyncs run outside it so appends never wait for the disk.

use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};

use serde_json::{Map, Value};

use super::checkpoint::Checkpoint;
use super::merkle::Hash;
use super::payload::RecordFields;
use super::retention::{self, RetentionPlan, RetentionPolicy};
use super::writer::{AuditWriter, SyncPolicy};
use super::AuditError;

pub struct SharedWriter(Mutex<AuditWriter>);

/// Where durability stands: the policy, the last record written and the last one synced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SyncState {
    pub policy: SyncPolicy,
    pub head_seq: u64,
    pub synced_seq: u64,
}

impl SharedWriter {
    pub fn new(writer: AuditWriter) -> SharedWriter {
        SharedWriter(Mutex::new(writer))
    }

    /// A panic while holding the lock cannot leave a half-written record (an append's
    /// copies cannot panic), so a poisoned lock is taken over.
    fn lock(&self) -> MutexGuard<'_, AuditWriter> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Appends one record; returns its seq.
    pub fn append(&self, fields: Map<String, Value>) -> Result<u64, AuditError> {
        self.append_record(&fields)
    }

    /// Appends one typed record (see [`RecordFields`]); returns its seq.
    pub fn append_record(&self, fields: &dyn RecordFields) -> Result<u64, AuditError> {
        self.lock().append_record(fields).map(|(seq, _)| seq)
    }

    /// Syncs every record appended before the call, holding the lock only before and after
    /// the fsync; returns the seq up to which records are durable. Callers that wait for
    /// the same sync share it: that is the group commit.
    pub fn sync(&self) -> Result<u64, AuditError> {
        // Two statements: a guard taken in a `let ... else` lives on into its `else`.
        let pending = self.lock().begin_sync()?;
        let Some(pending) = pending else {
            return Ok(self.lock().synced_seq());
        };
        let result = pending.run();
        self.lock().finish_sync(pending, result)
    }

    /// Gives back the space reserved past the last record (see [`AuditWriter::release_reserve`]).
    pub fn release_reserve(&self) -> Result<(), AuditError> {
        self.lock().release_reserve()
    }

    pub fn set_sync_policy(&self, policy: SyncPolicy) {
        self.lock().set_sync_policy(policy);
    }

    pub fn sync_state(&self) -> SyncState {
        let writer = self.lock();
        SyncState {
            policy: writer.sync_policy(),
            head_seq: writer.head().0,
            synced_seq: writer.synced_seq(),
        }
    }

    pub fn head(&self) -> (u64, Hash) {
        self.lock().head()
    }

    /// The current tree head, made durable before it is returned, so that a signed
    /// checkpoint never covers a record a power cut could take back.
    pub fn checkpoint(&self, origin: &str) -> Result<Checkpoint, AuditError> {
        let (checkpoint, pending) = {
            let writer = self.lock();
            (writer.checkpoint(origin), writer.begin_sync()?)
        };
        if let Some(pending) = pending {
            let result = pending.run();
            self.lock().finish_sync(pending, result)?;
        }
        Ok(checkpoint)
    }

    pub fn plan_retention(
        &self,
        policy: &RetentionPolicy,
    ) -> Result<Option<RetentionPlan>, AuditError> {
        self.lock().plan_retention(policy)
    }

    /// Removes what `plan` lets go; unlinking large files happens outside the lock.
    pub fn apply_retention(&self, plan: &RetentionPlan) -> Result<u64, AuditError> {
        retention::apply(&self.dir(), plan)
    }

    /// `<root>/<chain>`.
    pub fn dir(&self) -> PathBuf {
        self.lock().dir().to_owned()
    }
}
