//! CPU clocks for `marill plan`: per-thread CPU time (a thread's `CLOCK_THREAD_CPUTIME_ID`,
//! read from other threads through `pthread_getcpuclockid`), the process's CPU time
//! (`getrusage`), and the machine's description.

use std::sync::{Arc, Mutex};

fn read(clock: libc::clockid_t) -> Option<f64> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; clock_gettime only writes it.
    let rc = unsafe { libc::clock_gettime(clock, &mut ts) };
    (rc == 0).then_some(ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9)
}

/// The CPU clock of the calling thread, readable from other threads while it lives.
fn own_clock() -> Option<libc::clockid_t> {
    let mut id: libc::clockid_t = 0;
    // SAFETY: pthread_self() is the calling thread; `id` is a valid out pointer.
    let rc = unsafe { libc::pthread_getcpuclockid(libc::pthread_self(), &mut id) };
    (rc == 0).then_some(id)
}

/// The CPU clocks of a set of threads (a party's rayon pool): each thread registers itself when
/// it starts; [`ThreadClocks::cpu_s`] sums them. Read only while the threads live (the pool is
/// kept alive by its owner for as long as the clocks are read).
#[derive(Clone, Default)]
pub struct ThreadClocks {
    clocks: Arc<Mutex<Vec<libc::clockid_t>>>,
}

impl ThreadClocks {
    /// Registers the calling thread.
    pub fn register_current(&self) {
        if let Some(c) = own_clock() {
            self.clocks
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(c);
        }
    }

    /// CPU seconds of every registered thread together.
    pub fn cpu_s(&self) -> f64 {
        self.clocks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter_map(|c| read(*c))
            .sum()
    }
}

/// CPU seconds of this process (all threads).
pub fn process_cpu_s() -> f64 {
    // SAFETY: a zeroed rusage is a valid value; getrusage writes it.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `u` is a valid, writable rusage.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) } != 0 {
        return 0.0;
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    tv(u.ru_utime) + tv(u.ru_stime)
}

/// Logical cores available to this process.
pub fn cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// The CPU's `model name` from /proc/cpuinfo ("unknown" elsewhere).
pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clocks_advance_with_work() {
        let clocks = ThreadClocks::default();
        clocks.register_current();
        let (t0, c0, p0) = (
            read(libc::CLOCK_THREAD_CPUTIME_ID).unwrap_or(0.0),
            clocks.cpu_s(),
            process_cpu_s(),
        );
        let mut x = 0u64;
        let start = std::time::Instant::now();
        while start.elapsed().as_millis() < 30 {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
        assert!(
            read(libc::CLOCK_THREAD_CPUTIME_ID).unwrap_or(0.0) - t0 > 0.01,
            "{x}"
        );
        assert!(clocks.cpu_s() - c0 > 0.01);
        assert!(process_cpu_s() - p0 > 0.01);
        assert!(cores() >= 1);
        assert!(!cpu_model().is_empty());
    }
}
