//! Fresh request ids, for requests that bring no sane `x-request-id` of their own: 128
//! bits from a fast generator (wyrand), as 32 hex digits. Ids must be unique, not secret,
//! and the kernel's random bytes cost a system call each, so each thread's generator is
//! seeded from the kernel once. A forked child (granian forks its workers) seeds afresh,
//! so no two workers ever hand out the same sequence.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Once;

/// Counts forks: a generator seeded in an earlier generation seeds again.
static FORKS: AtomicU64 = AtomicU64::new(0);
static WATCH_FORKS: Once = Once::new();

thread_local! {
    /// (the fork generation it was seeded in, the wyrand state); None until first use.
    static STATE: Cell<Option<(u64, u64)>> = const { Cell::new(None) };
}

extern "C" fn forked_child() {
    FORKS.fetch_add(1, Ordering::Relaxed);
}

/// A new request id: 32 lowercase hex digits.
pub fn fresh() -> String {
    WATCH_FORKS.call_once(|| {
        // SAFETY: registers a handler that only increments an atomic (async-signal-safe).
        unsafe { libc::pthread_atfork(None, None, Some(forked_child)) };
    });
    let generation = FORKS.load(Ordering::Relaxed);
    STATE.with(|state| {
        let mut seed = match state.get() {
            Some((seeded_in, seed)) if seeded_in == generation => seed,
            _ => kernel_seed(),
        };
        let id = (u128::from(wyrand(&mut seed)) << 64) | u128::from(wyrand(&mut seed));
        state.set(Some((generation, seed)));
        format!("{id:032x}")
    })
}

/// One step of wyrand (Wang Yi's generator, as fastrand and Go's runtime use it).
fn wyrand(seed: &mut u64) -> u64 {
    *seed = seed.wrapping_add(0xa076_1d64_78bd_642f);
    let t = u128::from(*seed) * u128::from(*seed ^ 0xe703_7ed1_a0b4_28db);
    (t as u64) ^ ((t >> 64) as u64)
}

fn kernel_seed() -> u64 {
    let mut seed = [0u8; 8];
    // SAFETY: getrandom writes at most `seed.len()` bytes into the buffer it is given.
    let got = unsafe { libc::getrandom(seed.as_mut_ptr().cast(), seed.len(), 0) };
    if got != seed.len() as isize {
        // No getrandom (or interrupted): the clock and the address of a local still differ
        // between processes and calls, which is all uniqueness asks of a seed here.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        return now ^ (std::process::id() as u64).rotate_left(32) ^ (&seed as *const _ as u64);
    }
    u64::from_ne_bytes(seed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn ids_are_32_hex_digits_and_do_not_repeat() {
        let ids: HashSet<String> = (0..100_000).map(|_| fresh()).collect();
        assert_eq!(ids.len(), 100_000);
        assert!(ids.iter().all(|id| id.len() == 32
            && id
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())));
    }

    #[test]
    fn threads_seed_their_own_generators() {
        let theirs: Vec<String> = std::thread::spawn(|| (0..1000).map(|_| fresh()).collect())
            .join()
            .unwrap();
        let ours: HashSet<String> = (0..1000).map(|_| fresh()).collect();
        assert!(theirs.iter().all(|id| !ours.contains(id)));
    }

    #[test]
    fn a_forked_child_does_not_repeat_its_parent() {
        fresh(); // seeded (and the fork handler registered) before the fork
        let mut pipe = [0i32; 2];
        // SAFETY: plain pipe/fork/read/write/waitpid; the child only computes ids, writes
        // them to the pipe and exits without running the parent's destructors.
        unsafe {
            assert_eq!(libc::pipe(pipe.as_mut_ptr()), 0);
            let pid = libc::fork();
            assert!(pid >= 0);
            if pid == 0 {
                let id = fresh();
                libc::write(pipe[1], id.as_ptr().cast(), id.len());
                libc::_exit(0);
            }
            let mut buf = [0u8; 32];
            assert_eq!(libc::read(pipe[0], buf.as_mut_ptr().cast(), 32), 32);
            let mut status = 0;
            libc::waitpid(pid, &mut status, 0);
            let childs = String::from_utf8(buf.to_vec()).unwrap();
            // The parent's next id is what the child would have repeated without reseeding.
            assert_ne!(childs, fresh());
        }
    }
}
