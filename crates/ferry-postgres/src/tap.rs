//! A snapshot session's COPY data, taken off the wire before the driver parses it.
//!
//! PostgreSQL sends `COPY … TO STDOUT` as one `CopyData` message per row. Through the
//! driver each row becomes a parsed message and a reference-counted buffer, handed from the
//! connection task to the copy stream and then gathered with its neighbours again:
//! about a quarter of Ferry's own CPU in a snapshot (docs/benchmarks.md, "COPY data taken
//! off the wire"). A [`Tap`] sits between the driver and the (plain or TLS) stream of a
//! snapshot session. It follows the server's message framing, and while a copy is armed it
//! moves each `CopyData` payload straight into one buffer and passes every other message
//! on untouched:
//!
//! ```text
//! socket ─► Tapped ─┬─ CopyData payloads ──► Tap buffer ──► TappedCopy (whole rows)
//!                   └─ every other message ─► tokio-postgres (CopyOutResponse, CopyDone,
//!                                              CommandComplete, errors, notices)
//! ```
//!
//! The driver still runs the statement and sees its end or its error; it merely sees a
//! copy without rows. Invariants:
//! - a payload is in the buffer before the driver can see the message after it, so when the
//!   driver's copy stream ends, every row is in the buffer;
//! - the consumer takes whole rows only (the bytes up to the last complete payload), as the
//!   driver would give them;
//! - the buffer is bounded: while it holds [`TAP_BYTES`] of whole rows, the tap reads
//!   nothing more from the socket, so a slow target holds the source back as before.
//! - a copy whose consumer is gone ([`Armed`] dropped) is read to its end and its rows
//!   dropped, as the driver does with a stream nobody reads: the session stays usable.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use bytes::{Buf, Bytes, BytesMut};
use futures::Stream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Bytes of whole rows the tap holds before it stops reading: one item for the sink.
pub const TAP_BYTES: usize = 256 << 10;

/// How much the tap asks of the socket at once.
const READ_BYTES: usize = 64 << 10;

/// The handle to one session's tap: arms it for a copy and takes the copied rows.
#[derive(Clone, Debug, Default)]
pub struct Tap {
    shared: Arc<Mutex<Shared>>,
}

#[derive(Debug, Default)]
struct Shared {
    /// Whether `CopyData` payloads are taken (from [`Tap::arm`] to the copy's end).
    armed: bool,
    /// Nobody takes the armed copy's rows any more: they are dropped as they come.
    abandoned: bool,
    /// Payloads taken, in order.
    rows: BytesMut,
    /// Length of `rows` up to the end of the last complete payload.
    whole: usize,
    /// The copy ended (`CopyDone`, an error, or the connection closed): no more rows come.
    ended: bool,
    /// The copy's consumer, waiting for rows.
    consumer: Option<Waker>,
    /// The connection task, waiting for room.
    connection: Option<Waker>,
}

impl Tap {
    /// Wraps the session's `stream` in this tap.
    pub fn wrap<S>(&self, stream: S) -> Tapped<S> {
        Tapped {
            inner: stream,
            shared: self.shared.clone(),
            input: BytesMut::new(),
            header: [0; 5],
            header_len: 0,
            forward: 0..0,
            body_left: 0,
            divert: false,
        }
    }

    /// Takes the next copy's `CopyData` payloads; call before sending its statement, with
    /// nothing else in flight on the session. Dropping the returned guard (or the copy made
    /// of it) before the copy ended abandons it: the rest of its rows are read and dropped,
    /// as the driver drops the messages of a stream nobody reads, and the session stays
    /// usable.
    pub fn arm(&self) -> Armed {
        let mut shared = self.lock();
        shared.armed = true;
        shared.abandoned = false;
        shared.ended = false;
        shared.rows.clear();
        shared.whole = 0;
        Armed {
            shared: self.shared.clone(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().expect("tap lock")
    }
}

/// A copy armed on a [`Tap`] (see [`Tap::arm`]).
#[derive(Debug)]
pub struct Armed {
    shared: Arc<Mutex<Shared>>,
}

impl Armed {
    /// The rows of the armed copy, ending with `copy` (the driver's stream of the same
    /// statement, which yields no rows but the copy's end or error).
    pub fn rows<C>(self, copy: C) -> TappedCopy<C> {
        TappedCopy {
            armed: self,
            copy: Box::pin(copy),
        }
    }
}

impl Drop for Armed {
    fn drop(&mut self) {
        let mut shared = self.shared.lock().expect("tap lock");
        if shared.armed {
            shared.abandoned = true;
            shared.rows = BytesMut::new();
            shared.whole = 0;
            if let Some(waker) = shared.connection.take() {
                waker.wake();
            }
        }
    }
}

impl Shared {
    /// The copy ends: wakes the consumer, disarms.
    fn end(&mut self) {
        if self.armed {
            self.armed = false;
            self.ended = true;
            if let Some(waker) = self.consumer.take() {
                waker.wake();
            }
        }
    }
}

/// A session's stream with its [`Tap`].
pub struct Tapped<S> {
    inner: S,
    shared: Arc<Mutex<Shared>>,
    /// Bytes read from `inner`, not yet passed on or taken.
    input: BytesMut,
    /// The current message's header (type and length), as far as it has come.
    header: [u8; 5],
    header_len: usize,
    /// Part of `header` still to pass on to the driver.
    forward: std::ops::Range<usize>,
    /// Bytes of the current message's body still to come.
    body_left: usize,
    /// Whether the current body is a payload the tap takes.
    divert: bool,
}

impl<S: AsyncRead + Unpin> AsyncRead for Tapped<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let start = out.filled().len();
        let cell = Arc::clone(&this.shared);
        loop {
            // One lock for all the messages `input` holds, not one per row.
            let step = {
                let mut shared = cell.lock().expect("tap lock");
                loop {
                    match this.step(&mut shared, cx, out) {
                        Step::Continue => {}
                        done => break done,
                    }
                }
            };
            match step {
                Step::Continue => unreachable!("steps go on until one is not Continue"),
                Step::Full => return Poll::Ready(Ok(())),
                Step::Wait => {
                    if out.filled().len() > start {
                        return Poll::Ready(Ok(()));
                    }
                    return Poll::Pending;
                }
                Step::NeedInput => {
                    if out.filled().len() > start {
                        // Hand over what is there before reading more.
                        return Poll::Ready(Ok(()));
                    }
                    match this.fill(cx) {
                        Poll::Ready(Ok(true)) => continue,
                        Poll::Ready(Ok(false)) => {
                            cell.lock().expect("tap lock").end();
                            return Poll::Ready(Ok(()));
                        }
                        Poll::Ready(Err(e)) => {
                            cell.lock().expect("tap lock").end();
                            return Poll::Ready(Err(e));
                        }
                        Poll::Pending => return Poll::Pending,
                    }
                }
            }
        }
    }
}

/// What one step of the framing did.
enum Step {
    Continue,
    /// The driver's buffer is full.
    Full,
    /// The tap's buffer is full: the consumer wakes the connection when it takes rows.
    Wait,
    NeedInput,
}

impl<S: AsyncRead + Unpin> Tapped<S> {
    /// Passes on or takes what `input` holds, one piece at a time.
    fn step(&mut self, shared: &mut Shared, cx: &mut Context<'_>, out: &mut ReadBuf<'_>) -> Step {
        if !self.forward.is_empty() {
            let n = self.forward.len().min(out.remaining());
            if n == 0 {
                return Step::Full;
            }
            out.put_slice(&self.header[self.forward.start..self.forward.start + n]);
            self.forward.start += n;
            return Step::Continue;
        }
        if self.body_left > 0 {
            if self.input.is_empty() {
                return Step::NeedInput;
            }
            let n = self.body_left.min(self.input.len());
            if self.divert {
                if shared.abandoned {
                    self.input.advance(n);
                    self.body_left -= n;
                    return Step::Continue;
                }
                if shared.whole >= TAP_BYTES {
                    shared.connection = Some(cx.waker().clone());
                    return Step::Wait;
                }
                shared.rows.extend_from_slice(&self.input[..n]);
                self.input.advance(n);
                self.body_left -= n;
                if self.body_left == 0 {
                    shared.whole = shared.rows.len();
                    if let Some(waker) = shared.consumer.take() {
                        waker.wake();
                    }
                }
            } else {
                let n = n.min(out.remaining());
                if n == 0 {
                    return Step::Full;
                }
                out.put_slice(&self.input[..n]);
                self.input.advance(n);
                self.body_left -= n;
            }
            return Step::Continue;
        }
        // At a message boundary: gather the header.
        let n = (5 - self.header_len).min(self.input.len());
        self.header[self.header_len..self.header_len + n].copy_from_slice(&self.input[..n]);
        self.input.advance(n);
        self.header_len += n;
        if self.header_len < 5 {
            return Step::NeedInput;
        }
        self.header_len = 0;
        let kind = self.header[0];
        let length = u32::from_be_bytes(self.header[1..5].try_into().expect("4 bytes")) as usize;
        // A length below 4 is a broken stream: pass it on, the driver reports it.
        self.body_left = length.saturating_sub(4);
        self.divert = shared.armed && kind == b'd';
        if !self.divert {
            self.forward = 0..5;
            // CopyDone or an error: the copy's rows are all taken.
            if kind == b'c' || kind == b'E' {
                shared.end();
            }
        } else if self.body_left == 0 {
            shared.whole = shared.rows.len();
        }
        Step::Continue
    }

    /// Reads more from the socket into `input`: `false` at its end.
    fn fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<bool>> {
        self.input.reserve(READ_BYTES);
        tokio_util::io::poll_read_buf(Pin::new(&mut self.inner), cx, &mut self.input)
            .map_ok(|n| n > 0)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tapped<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The rows of one tapped copy, in items of whole rows of up to about [`TAP_BYTES`], then
/// the driver's end or error of the same copy.
pub struct TappedCopy<C> {
    armed: Armed,
    copy: Pin<Box<C>>,
}

impl<C, E> Stream for TappedCopy<C>
where
    C: Stream<Item = Result<Bytes, E>>,
{
    type Item = Result<Bytes, E>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        {
            let mut shared = self.armed.shared.lock().expect("tap lock");
            if shared.whole > 0 {
                let whole = shared.whole;
                let rows = shared.rows.split_to(whole).freeze();
                shared.whole = 0;
                if let Some(waker) = shared.connection.take() {
                    waker.wake();
                }
                return Poll::Ready(Some(Ok(rows)));
            }
            if !shared.ended {
                shared.consumer = Some(cx.waker().clone());
            }
        }
        // The driver's stream: its error, its end, or (untapped) its rows.
        self.copy.as_mut().poll_next(cx)
    }
}

#[cfg(test)]
#[path = "tap/tests.rs"]
mod tests;
