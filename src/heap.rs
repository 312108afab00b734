//! The process heap's arenas. glibc's malloc gives each thread that contends for the heap an
//! arena of its own, up to eight per core; the dealer (a serving thread per lane and party)
//! and the workers (a session thread per lane) then keep freed correlation bundles in a dozen
//! arenas that are never handed back to the system. In the 100-job load test (tests/load.rs)
//! a dealer's peak resident memory was 445–538 MiB with the default and 125–228 MiB with two
//! arenas, at the same jobs/s and the same online prefill time (`marill bench suffix`).
//!
//! `MALLOC_ARENA_MAX` in the environment still wins: glibc reads it itself, and the cap below
//! is set only when it is absent.

/// Arenas the process's heap may use unless `MALLOC_ARENA_MAX` says otherwise.
pub const ARENAS: i32 = 2;

/// Caps the heap's arenas at [`ARENAS`] (glibc on Linux; elsewhere nothing to do). Returns
/// the cap set, or None when the environment sets its own or the platform has no such knob.
pub fn cap_arenas() -> Option<i32> {
    if std::env::var_os("MALLOC_ARENA_MAX").is_some() {
        return None;
    }
    set_arena_max(ARENAS).then_some(ARENAS)
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn set_arena_max(n: i32) -> bool {
    // SAFETY: mallopt only changes a malloc tunable; it is called before any thread starts.
    unsafe { libc::mallopt(libc::M_ARENA_MAX, n) == 1 }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn set_arena_max(_: i32) -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_is_set_unless_the_environment_sets_one() {
        let set = cap_arenas();
        if std::env::var_os("MALLOC_ARENA_MAX").is_some() {
            assert_eq!(set, None);
        } else if cfg!(all(target_os = "linux", target_env = "gnu")) {
            assert_eq!(set, Some(ARENAS));
        }
    }
}
