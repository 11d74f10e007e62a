//! The live segment, appended through a shared memory map: an append is a copy into the
//! file's page cache instead of a write(2), whose kernel entry took about a tenth of a
//! cache hit's CPU on a VM.
//!
//! Durability is write(2)'s: the mapped pages are the file's page cache, so a process crash
//! loses nothing once an append returns, and `sync_data` (fdatasync) writes them back
//! exactly as it writes back written pages.
//!
//! Space is reserved ahead with `posix_fallocate`, so a full disk fails a reservation (the
//! writer is poisoned as by a failed write) instead of raising SIGBUS in a page fault. The
//! reserve reads as zeros, and a frame header of zeros ends a segment's records
//! (`FORMAT.md`). Each frame's payload is copied before its header, so a reader that sees a
//! header also sees its payload. `release` gives the reserve back: at rotation, at
//! shutdown, and when the writer is dropped; recovery cuts what a killed process left.
//!
//! The pages of records already written are unmapped from the process at each reserve step
//! (they stay in the page cache, dirty ones still to be written back), so the mapping adds
//! at most about two steps to the worker's RSS, not the segment's size.

use std::fs::File;
use std::io;
use std::ptr::NonNull;
use std::sync::atomic::{fence, Ordering};
use std::sync::Arc;

use super::segment::FRAME_HEADER;

/// Space reserved at a time past the last record: one `posix_fallocate` and one prefault
/// call per this many bytes of records.
pub(crate) const RESERVE_STEP: u64 = 1 << 20;

pub(crate) struct MappedFile {
    /// Shared with syncs run outside the writer's lock.
    file: Arc<File>,
    /// `map_len` bytes mapped from the file's start; only those below `reserved` are touched.
    map: NonNull<u8>,
    map_len: usize,
    /// Bytes of the segment written: header and whole frames.
    written: u64,
    /// The file's length: `written` plus zeros reserved for the next frames.
    reserved: u64,
    /// Pages below this offset are no longer mapped in (see `unmap_behind`).
    unmapped_below: u64,
}

// SAFETY: the mapping is owned by this value alone (no copy of `map` escapes it), and it is
// only written through `&mut self`.
unsafe impl Send for MappedFile {}

impl MappedFile {
    /// Maps `file`, whose first `written` bytes are the segment so far (its length), with
    /// room for `capacity` bytes before it must be mapped again.
    pub(crate) fn open(file: File, capacity: u64) -> io::Result<MappedFile> {
        let written = file.metadata()?.len();
        let map_len = page_align(capacity.max(written) + RESERVE_STEP);
        let map = map_shared(&file, map_len)?;
        Ok(MappedFile {
            file: Arc::new(file),
            map,
            map_len,
            written,
            reserved: written,
            unmapped_below: 0,
        })
    }

    pub(crate) fn file(&self) -> &Arc<File> {
        &self.file
    }

    pub(crate) fn written(&self) -> u64 {
        self.written
    }

    /// Appends one whole frame (header, then payload); reserves space first when needed.
    pub(crate) fn append(&mut self, frame: &[u8]) -> io::Result<()> {
        let end = self.written + frame.len() as u64;
        if end > self.reserved {
            self.reserve(end)?;
        }
        let at = self.written as usize;
        let (header, payload) = frame.split_at(FRAME_HEADER);
        // SAFETY: `at + frame.len() <= reserved <= map_len`: inside the mapping and the file.
        unsafe {
            let base = self.map.as_ptr().add(at);
            std::ptr::copy_nonoverlapping(payload.as_ptr(), base.add(FRAME_HEADER), payload.len());
            fence(Ordering::Release); // the payload before the header that announces it
            std::ptr::copy_nonoverlapping(header.as_ptr(), base, FRAME_HEADER);
        }
        self.written = end;
        Ok(())
    }

    /// Makes the file at least `end` bytes long, mapped and prefaulted: a whole step, or,
    /// when a full disk or a file-size limit leaves less than that, exactly `end`.
    fn reserve(&mut self, end: u64) -> io::Result<()> {
        let step = end.div_ceil(RESERVE_STEP) * RESERVE_STEP;
        self.extend_to(step).or_else(|_| self.extend_to(end))
    }

    fn extend_to(&mut self, target: u64) -> io::Result<()> {
        if target as usize > self.map_len {
            let map_len = page_align(target + RESERVE_STEP);
            let map = map_shared(&self.file, map_len)?;
            unmap(self.map, self.map_len);
            (self.map, self.map_len) = (map, map_len);
            self.unmapped_below = 0; // a new mapping has only what is touched from here on
        }
        allocate(&self.file, self.reserved, target - self.reserved)?;
        prefault(self.map, self.reserved, target);
        self.reserved = target;
        self.unmap_behind();
        Ok(())
    }

    /// Takes the whole pages of written records out of the process's mapping: an append
    /// never touches them again. MADV_DONTNEED on a shared file mapping only drops the page
    /// table entries (a dirty page stays dirty in the page cache, to be written back), so
    /// nothing written is lost and RSS stops growing with the segment.
    fn unmap_behind(&mut self) {
        const PAGE: u64 = 4096;
        let below = self.written / PAGE * PAGE;
        if below <= self.unmapped_below {
            return;
        }
        // SAFETY: a page-aligned range inside the mapping (below `written` <= `map_len`).
        unsafe {
            libc::madvise(
                self.map.as_ptr().add(self.unmapped_below as usize).cast(),
                (below - self.unmapped_below) as usize,
                libc::MADV_DONTNEED,
            )
        };
        self.unmapped_below = below;
    }

    /// Cuts the reserve: the file ends with its last frame again.
    pub(crate) fn release(&mut self) -> io::Result<()> {
        if self.reserved > self.written {
            self.file.set_len(self.written)?;
            self.reserved = self.written;
        }
        Ok(())
    }
}

impl Drop for MappedFile {
    fn drop(&mut self) {
        let _ = self.release(); // best effort: recovery cuts a reserve left behind
        unmap(self.map, self.map_len);
    }
}

fn page_align(len: u64) -> usize {
    const PAGE: u64 = 64 << 10; // a multiple of every page size Linux uses for files
    len.div_ceil(PAGE) as usize * PAGE as usize
}

fn map_shared(file: &File, len: usize) -> io::Result<NonNull<u8>> {
    use std::os::fd::AsRawFd;
    // SAFETY: a new shared mapping of an open file; the kernel picks the address.
    let addr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            0,
        )
    };
    if addr == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    NonNull::new(addr.cast()).ok_or_else(|| io::Error::other("mmap returned null"))
}

fn unmap(map: NonNull<u8>, len: usize) {
    // SAFETY: `map` and `len` are exactly a mapping made by `map_shared`, unmapped once.
    unsafe { libc::munmap(map.as_ptr().cast(), len) };
}

/// Extends `file` by `len` bytes at `offset` with blocks allocated: ENOSPC here, not later.
fn allocate(file: &File, offset: u64, len: u64) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: plain syscall wrapper on an open descriptor.
    let err = unsafe { libc::posix_fallocate(file.as_raw_fd(), offset as i64, len as i64) };
    match err {
        0 => Ok(()),
        err => Err(io::Error::from_raw_os_error(err)),
    }
}

/// Faults the reserved pages in writable in one call, rather than one fault per page as
/// appends reach them. Only a hint: older kernels refuse it, and appends fault them in.
fn prefault(map: NonNull<u8>, from: u64, to: u64) {
    #[cfg(target_os = "linux")]
    {
        const PAGE: u64 = 4096;
        let start = from / PAGE * PAGE;
        // SAFETY: a range inside the mapping (below `to`, which is at most its length).
        unsafe {
            libc::madvise(
                map.as_ptr().add(start as usize).cast(),
                (to - start) as usize,
                libc::MADV_POPULATE_WRITE,
            )
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Resident kB of the mapping that starts at `map`, from /proc/self/smaps: this
    /// mapping's own pages, whatever other tests running beside it allocate.
    fn resident_kb(map: NonNull<u8>) -> u64 {
        let start = format!("{:x}-", map.as_ptr() as usize);
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let mut lines = smaps.lines().skip_while(|line| !line.starts_with(&start));
        lines.next().expect("the mapping is listed");
        let rss = lines.find(|line| line.starts_with("Rss:")).unwrap();
        rss.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    #[test]
    fn the_mapping_holds_about_two_steps_however_long_the_segment_grows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("segment");
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        let mut mapped = MappedFile::open(file, 64 << 20).unwrap();
        let mut frame = vec![b'x'; 900];
        frame[..FRAME_HEADER].copy_from_slice(&[1; FRAME_HEADER]);
        let mut most = 0;
        while mapped.written() < 12 * RESERVE_STEP {
            mapped.append(&frame).unwrap();
            most = most.max(resident_kb(mapped.map));
        }
        assert!(
            most <= 2 * RESERVE_STEP / 1024 + 8,
            "{most} kB resident for a 12 MiB segment"
        );
        // Nothing written was lost with the pages let go: the file holds every frame.
        mapped.release().unwrap();
        let on_disk = std::fs::read(&path).unwrap();
        assert_eq!(on_disk.len() as u64, mapped.written());
        assert!(on_disk.chunks(frame.len()).all(|chunk| chunk == frame));
    }
}
