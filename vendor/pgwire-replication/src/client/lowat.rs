//! Reading a stream that comes in bulk without a wake-up per server send (Ferry's patch).
//!
//! The walsender sends every message with a `send()` of its own. A reader that wakes for
//! each one reads a few hundred bytes per `recv()`, and (measured on loopback) each such
//! read also sends an ACK back: per wake-up, two system calls and a packet.
//! While the stream comes in bulk (a backlog being drained), the reader asks the kernel to
//! wake it only once [`BULK_LOWAT`] bytes are waiting (`SO_RCVLOWAT`), and reads them in
//! one go. It never waits more than [`BULK_WAIT`] for them: then the mark goes back to one
//! byte (which wakes the reader at once if anything is waiting) until the rate is measured
//! again. A stream that comes at a trickle (live changes) keeps the mark at one byte, so
//! its latency is untouched.

use std::time::Duration;

use tokio::time::Instant;

/// What the reader waits for while the stream comes in bulk.
const BULK_LOWAT: i32 = 32 * 1024;

/// The longest the reader waits for [`BULK_LOWAT`] bytes before it reads what is there.
pub(super) const BULK_WAIT: Duration = Duration::from_millis(4);

/// The stream is read in bulk while it brings at least this many bytes per second
/// (pgbench's transactions are ~310 bytes of pgoutput each: a backlog drains at 10–25 MB/s
/// here, a live `pgbench -c 4` at ~3,700 transactions/s brings ~1.2 MB/s).
const BULK_RATE: u64 = 8 << 20;

/// The rate is measured over windows at least this long.
const WINDOW: Duration = Duration::from_millis(20);

/// The receive low-water mark of the replication socket, set from the stream's rate.
pub(super) struct LowWater {
    /// The socket (`None`: not a TCP socket, or it refused the mark).
    fd: Option<i32>,
    /// The mark the socket has now.
    mark: i32,
    window_start: Instant,
    window_bytes: u64,
    bulk: bool,
}

impl LowWater {
    /// `fd`: the TCP socket under the stream (`None`: the mark is never set).
    pub(super) fn new(fd: Option<i32>) -> Self {
        Self {
            fd,
            mark: 1,
            window_start: Instant::now(),
            window_bytes: 0,
            bulk: false,
        }
    }

    /// Counts `bytes` received.
    pub(super) fn received(&mut self, bytes: usize) {
        self.window_bytes += bytes as u64;
    }

    /// Called before waiting for the socket: sets the mark for this wait and returns
    /// whether it is raised (then the wait is bounded by [`BULK_WAIT`]).
    pub(super) fn before_wait(&mut self) -> bool {
        let elapsed = self.window_start.elapsed();
        if elapsed >= WINDOW {
            let per_second = self.window_bytes as f64 / elapsed.as_secs_f64();
            self.bulk = per_second >= BULK_RATE as f64;
            self.window_start = Instant::now();
            self.window_bytes = 0;
        }
        let mark = if self.bulk { BULK_LOWAT } else { 1 };
        self.set(mark);
        self.mark > 1
    }

    /// The bounded wait ended with less than the mark waiting: read what is there, and
    /// wait for single bytes until the rate is measured again.
    pub(super) fn timed_out(&mut self) {
        self.bulk = false;
    }

    /// Lowers the mark to one byte after a wait: any other read (the rest of a message
    /// whose start is buffered) must not wait for more than the message itself.
    pub(super) fn after_wait(&mut self) {
        self.set(1);
    }

    fn set(&mut self, mark: i32) {
        if mark == self.mark {
            return;
        }
        let Some(fd) = self.fd else {
            return;
        };
        #[cfg(unix)]
        {
            let value: libc::c_int = mark;
            // SAFETY: `fd` is the open socket under the stream this reader owns, and the
            // option's value is a c_int of the size passed.
            let done = unsafe {
                libc::setsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    libc::SO_RCVLOWAT,
                    (&value as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            if done != 0 {
                // Leave the mark alone from now on: the socket refuses it.
                self.fd = None;
                return;
            }
            self.mark = mark;
        }
        #[cfg(not(unix))]
        let _ = fd;
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    /// The socket's `SO_RCVLOWAT`, as the kernel holds it.
    fn mark_of(fd: i32) -> i32 {
        let mut value: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: `fd` is an open socket and `value` has the size given in `len`.
        let done = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVLOWAT,
                (&mut value as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        assert_eq!(done, 0, "getsockopt(SO_RCVLOWAT)");
        value
    }

    #[tokio::test]
    async fn the_mark_rises_only_while_the_stream_comes_in_bulk() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let fd = client.as_raw_fd();
        let mut low_water = LowWater::new(Some(fd));

        // A trickle (a live stream): the mark stays at one byte.
        low_water.received(500);
        tokio::time::sleep(WINDOW + Duration::from_millis(5)).await;
        assert!(!low_water.before_wait());
        assert_eq!(mark_of(fd), 1);

        // A window far above the bulk rate (4 MiB within half a second at most): raised for
        // the wait, lowered after it.
        low_water.received(4 << 20);
        tokio::time::sleep(WINDOW + Duration::from_millis(5)).await;
        assert!(low_water.before_wait());
        assert_eq!(mark_of(fd), BULK_LOWAT);
        low_water.after_wait();
        assert_eq!(mark_of(fd), 1);

        // A bounded wait that timed out (the bulk ended) lowers it until the next window.
        low_water.timed_out();
        assert!(!low_water.before_wait());
        assert_eq!(mark_of(fd), 1);
    }

    #[test]
    fn without_a_socket_nothing_is_raised() {
        let mut low_water = LowWater::new(None);
        low_water.received(64 << 20);
        std::thread::sleep(WINDOW + Duration::from_millis(5));
        assert!(!low_water.before_wait(), "no socket: waits stay unbounded");
    }
}
