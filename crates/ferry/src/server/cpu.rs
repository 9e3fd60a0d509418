//! The server's CPU scheduling policy ([`CpuScheduling`]). Set on the main thread before
//! the runtime starts: Linux keeps a policy per thread, and every thread the runtime
//! starts later inherits it.

use crate::settings::CpuScheduling;

/// Sets `policy` on the calling thread (and so on the threads it starts from now on).
#[cfg(target_os = "linux")]
pub(super) fn apply(policy: CpuScheduling) -> std::io::Result<()> {
    let policy = match policy {
        CpuScheduling::Batch => libc::SCHED_BATCH,
        CpuScheduling::Normal => libc::SCHED_OTHER,
    };
    // Neither policy has a static priority: 0 is the only value the kernel accepts.
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: pid 0 names the calling thread and `param` outlives the call.
    if unsafe { libc::sched_setscheduler(0, policy, &param) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Elsewhere the system's default applies.
#[cfg(not(target_os = "linux"))]
pub(super) fn apply(_policy: CpuScheduling) -> std::io::Result<()> {
    Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "CPU scheduling policies are set on Linux only",
    ))
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// The calling thread's policy.
    fn current() -> libc::c_int {
        // SAFETY: no argument but the calling thread's pid 0.
        unsafe { libc::sched_getscheduler(0) }
    }

    #[test]
    fn sets_the_policy_of_the_thread_and_of_threads_it_starts() {
        // A thread of its own: the policy stays off the test harness's threads.
        std::thread::spawn(|| {
            apply(CpuScheduling::Batch).unwrap();
            assert_eq!(current(), libc::SCHED_BATCH);
            let child = std::thread::spawn(current).join().unwrap();
            assert_eq!(
                child,
                libc::SCHED_BATCH,
                "a thread started later inherits it"
            );
            apply(CpuScheduling::Normal).unwrap();
            assert_eq!(current(), libc::SCHED_OTHER);
        })
        .join()
        .unwrap();
    }
}
