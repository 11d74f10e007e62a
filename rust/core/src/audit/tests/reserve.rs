//! The space a live writer reserves past its last record (audit/mapped.rs): readers stop at
//! it, a writer gives it back, and zeros that hide records are never read as the end.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;

use super::*;

/// A writer left open on a chain of `records` records.
fn live_chain(root: &Path, records: u64) -> AuditWriter {
    let (mut writer, _) = AuditWriter::open(root, CHAIN, AuditOptions::default()).unwrap();
    for n in 0..records {
        writer.append(fields(n)).unwrap();
    }
    writer
}

fn file_len(path: &Path) -> u64 {
    fs::metadata(path).unwrap().len()
}

#[test]
fn a_live_segment_ends_at_its_last_record_for_readers_and_after_release() {
    let root = TempDir::new().unwrap();
    let mut writer = live_chain(root.path(), 10);
    let path = segment(root.path(), 1);
    let reserved = file_len(&path);
    let report = verify_chain(root.path(), CHAIN).unwrap();
    assert_eq!((report.records, report.tail_bytes), (10, 0));
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    let last = tamper::frames(&fs::read(&path).unwrap())
        .last()
        .unwrap()
        .end;
    assert!(
        reserved > last as u64,
        "space is reserved past the last record"
    );

    writer.release_reserve().unwrap();
    assert_eq!(file_len(&path), last as u64);
    writer.append(fields(10)).unwrap(); // reserves again
    assert!(file_len(&path) > last as u64);
    drop(writer);
    assert_eq!(verify_chain(root.path(), CHAIN).unwrap().records, 11);
    let after_drop = fs::read(&path).unwrap();
    assert_eq!(
        tamper::frames(&after_drop).last().unwrap().end,
        after_drop.len(),
        "a dropped writer leaves no reserve"
    );
}

#[test]
fn readers_racing_appends_see_whole_records_only() {
    let root = TempDir::new().unwrap();
    let (mut writer, _) = AuditWriter::open(root.path(), CHAIN, small_segments()).unwrap();
    writer.append(fields(0)).unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let reader = {
        let (root, done) = (root.path().to_owned(), Arc::clone(&done));
        thread::spawn(move || {
            let mut reads = 0;
            while !done.load(Ordering::Relaxed) || reads == 0 {
                let report = check_chain(&root, CHAIN);
                assert!(report.problems.is_empty(), "{:?}", report.problems);
                reads += 1;
            }
            reads
        })
    };
    for n in 1..3000 {
        writer.append(fields(n)).unwrap();
    }
    done.store(true, Ordering::Relaxed);
    assert!(reader.join().unwrap() > 0);
}

#[test]
fn a_reserve_cut_while_a_reader_reads_is_no_torn_write() {
    let root = TempDir::new().unwrap();
    let mut writer = live_chain(root.path(), 2000); // a few read buffers' worth
    let mut reader = RecordReader::open(root.path(), CHAIN).unwrap();
    reader.next().unwrap().unwrap(); // the segment opened: its length includes the reserve
    writer.release_reserve().unwrap(); // as rotation and shutdown do
    assert_eq!(reader.by_ref().map(Result::unwrap).count(), 1999);
    // The read met the end of the file at a frame boundary: the segment's end, not a tear.
    assert!(reader.tail().is_none());
}

#[test]
fn zeros_hiding_records_in_the_live_segment_are_not_its_end() {
    let root = TempDir::new().unwrap();
    let writer = live_chain(root.path(), 10);
    let path = segment(root.path(), 1);
    let mut bytes = fs::read(&path).unwrap();
    let hidden = tamper::frames(&bytes)[6].clone();
    bytes[hidden.start..hidden.start + 8].fill(0); // a header zeroed: records 7.. hidden
    fs::write(&path, &bytes).unwrap();

    let report = check_chain(root.path(), CHAIN);
    assert_eq!(report.records, 6);
    assert!(
        report
            .problems
            .iter()
            .any(|p| matches!(p.problem, Problem::TornTail { after: 6, .. })),
        "{:?}",
        report.problems
    );
    drop(writer);
}

#[test]
fn zeros_in_a_sealed_segment_are_damage() {
    let root = TempDir::new().unwrap();
    write_chain(root.path(), 40, small_segments());
    let path = segment(root.path(), 1);
    let mut bytes = fs::read(&path).unwrap();
    let last = tamper::frames(&bytes).last().unwrap().clone();
    bytes[last.start..].fill(0);
    fs::write(&path, &bytes).unwrap();

    let report = check_chain(root.path(), CHAIN);
    assert!(
        report
            .problems
            .iter()
            .any(|p| matches!(p.problem, Problem::Unwritten)),
        "{:?}",
        report.problems
    );
}
