//! Syncs run outside the writer's lock and are shared; a failed one stops the writer.

use std::io;
use std::sync::Arc;
use std::thread;

use super::*;

#[test]
fn a_sync_covers_what_was_written_when_it_began() {
    let root = TempDir::new().unwrap();
    let (mut writer, _) = AuditWriter::open(root.path(), CHAIN, small_segments()).unwrap();
    assert!(writer.begin_sync().unwrap().is_none(), "nothing to sync");
    writer.append(fields(0)).unwrap();
    writer.append(fields(1)).unwrap();
    let pending = writer.begin_sync().unwrap().unwrap();
    writer.append(fields(2)).unwrap();
    let result = pending.run();
    assert_eq!(writer.finish_sync(pending, result).unwrap(), 2);
    assert_eq!(writer.sync().unwrap(), 3);
}

#[test]
fn concurrent_appenders_share_syncs_and_each_gets_its_record_synced() {
    let root = TempDir::new().unwrap();
    let (writer, _) = AuditWriter::open(root.path(), CHAIN, small_segments()).unwrap();
    let shared = Arc::new(SharedWriter::new(writer));
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let shared = Arc::clone(&shared);
            thread::spawn(move || {
                for n in 0..100 {
                    let seq = shared.append(fields(n)).unwrap();
                    assert!(shared.sync().unwrap() >= seq);
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    let state = shared.sync_state();
    assert_eq!((state.head_seq, state.synced_seq), (400, 400));
    assert_eq!(verify_chain(root.path(), CHAIN).unwrap().records, 400);
}

#[test]
fn a_shared_sync_with_nothing_to_sync_returns_at_once() {
    let root = TempDir::new().unwrap();
    let (writer, _) = AuditWriter::open(root.path(), CHAIN, AuditOptions::default()).unwrap();
    let shared = SharedWriter::new(writer);
    assert_eq!(shared.sync().unwrap(), 0);
    shared.append(fields(0)).unwrap();
    assert_eq!(shared.sync().unwrap(), 1);
    assert_eq!(shared.sync().unwrap(), 1);
}

#[test]
fn a_checkpoint_is_taken_of_synced_records_only() {
    let root = TempDir::new().unwrap();
    let (writer, _) = AuditWriter::open(root.path(), CHAIN, AuditOptions::default()).unwrap();
    let shared = SharedWriter::new(writer);
    for n in 0..5 {
        shared.append(fields(n)).unwrap();
    }
    assert_eq!(shared.sync_state().synced_seq, 0);
    let checkpoint = shared.checkpoint("gatewayd.test").unwrap();
    assert_eq!(
        (checkpoint.origin.as_str(), checkpoint.size),
        ("gatewayd.test/replica-1", 5)
    );
    assert_eq!(shared.sync_state().synced_seq, 5);
    assert_eq!(
        checkpoint.root,
        verify_chain(root.path(), CHAIN).unwrap().root
    );
}

#[test]
fn a_failed_sync_stops_the_writer() {
    let root = TempDir::new().unwrap();
    let (mut writer, _) = AuditWriter::open(root.path(), CHAIN, AuditOptions::default()).unwrap();
    writer.append(fields(0)).unwrap();
    let pending = writer.begin_sync().unwrap().unwrap();
    let failed = writer.finish_sync(pending, Err(io::Error::other("EIO from the disk")));
    assert!(matches!(failed, Err(AuditError::Io { .. })));
    for err in [
        writer.append(fields(1)).unwrap_err(),
        writer.sync().unwrap_err(),
    ] {
        assert!(
            matches!(&err, AuditError::Poisoned(reason) if reason.contains("EIO")),
            "{err}"
        );
    }
}
