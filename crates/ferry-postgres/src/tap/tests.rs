use std::collections::VecDeque;
use std::convert::Infallible;

use futures::StreamExt;
use proptest::prelude::*;

use super::*;

/// A server stream that hands out its bytes in the given pieces, then ends.
struct Pieces(VecDeque<Vec<u8>>);

impl AsyncRead for Pieces {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Some(piece) = self.0.front_mut() {
            let n = piece.len().min(out.remaining());
            out.put_slice(&piece[..n]);
            piece.drain(..n);
            if piece.is_empty() {
                self.0.pop_front();
            }
        }
        Poll::Ready(Ok(()))
    }
}

fn message(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![kind];
    out.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// What the driver read and the items the copy gave, reading `wire` cut into pieces of
/// `cuts` lengths (cycled) through a driver buffer of `window` bytes. The copy's items are
/// taken whenever the driver's read waits.
fn run(wire: &[u8], cuts: &[usize], window: usize) -> (Vec<u8>, Vec<Bytes>, bool) {
    let mut pieces = VecDeque::new();
    let mut at = 0;
    for &cut in cuts.iter().cycle() {
        if at == wire.len() {
            break;
        }
        let end = (at + cut.max(1)).min(wire.len());
        pieces.push_back(wire[at..end].to_vec());
        at = end;
    }
    let tap = Tap::default();
    let armed = tap.arm();
    let mut stream = tap.wrap(Pieces(pieces));
    let mut copy = armed.rows(futures::stream::empty::<Result<Bytes, Infallible>>());
    let mut cx = Context::from_waker(Waker::noop());
    let (mut driver, mut items) = (Vec::new(), Vec::new());
    let mut take = |items: &mut Vec<Bytes>, cx: &mut Context<'_>| {
        while let Poll::Ready(Some(item)) = copy.poll_next_unpin(cx) {
            items.push(item.expect("no error"));
        }
    };
    loop {
        let mut space = vec![0u8; window];
        let mut out = ReadBuf::new(&mut space);
        match Pin::new(&mut stream).poll_read(&mut cx, &mut out) {
            Poll::Ready(Ok(())) if out.filled().is_empty() => break,
            Poll::Ready(Ok(())) => driver.extend_from_slice(out.filled()),
            Poll::Ready(Err(e)) => panic!("{e}"),
            Poll::Pending => take(&mut items, &mut cx),
        }
    }
    take(&mut items, &mut cx);
    let ended = tap.lock().ended;
    (driver, items, ended)
}

proptest! {
    /// However the bytes arrive and however little the driver reads at once, the driver
    /// gets every message but the rows, byte for byte, and the copy every row, whole.
    #[test]
    fn rows_are_taken_whole_and_the_rest_passes_untouched(
        rows in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 0..40),
        notice_at in any::<prop::sample::Index>(),
        cuts in prop::collection::vec(1usize..700, 1..8),
        window in 1usize..64,
    ) {
        let mut wire = message(b'H', &[0, 0, 0]);
        let mut expected_driver = wire.clone();
        let notice_at = notice_at.index(rows.len() + 1);
        for (i, row) in rows.iter().enumerate() {
            if i == notice_at {
                let notice = message(b'N', b"SNOTICE\0\0");
                wire.extend_from_slice(&notice);
                expected_driver.extend_from_slice(&notice);
            }
            wire.extend_from_slice(&message(b'd', row));
        }
        for tail in [message(b'c', b""), message(b'C', b"COPY 3\0"), message(b'Z', b"I")] {
            wire.extend_from_slice(&tail);
            expected_driver.extend_from_slice(&tail);
        }
        let (driver, items, ended) = run(&wire, &cuts, window);
        prop_assert_eq!(driver, expected_driver);
        prop_assert!(ended);
        let taken: Vec<u8> = items.iter().flat_map(|i| i.iter().copied()).collect();
        prop_assert_eq!(taken, rows.concat());
        // Every item ends where a row ends.
        let mut ends = std::collections::HashSet::new();
        let mut at = 0;
        for row in &rows {
            at += row.len();
            ends.insert(at);
        }
        let mut at = 0;
        for item in &items {
            prop_assert!(!item.is_empty());
            at += item.len();
            prop_assert!(ends.contains(&at));
        }
    }
}

/// One read by the driver, into a buffer of 64 bytes: what it got, or `None` for a wait.
fn read_once(stream: &mut Tapped<Pieces>) -> Option<Vec<u8>> {
    let mut cx = Context::from_waker(Waker::noop());
    let mut space = vec![0u8; 64];
    let mut out = ReadBuf::new(&mut space);
    match Pin::new(stream).poll_read(&mut cx, &mut out) {
        Poll::Ready(result) => {
            result.expect("no error");
            Some(out.filled().to_vec())
        }
        Poll::Pending => None,
    }
}

/// Rows of 1,000 bytes, three times what a tap holds, then `after`.
fn three_taps_of_rows(after: &[u8]) -> Vec<u8> {
    let row = vec![7u8; 1000];
    let mut wire = Vec::new();
    for _ in 0..3 * TAP_BYTES / row.len() {
        wire.extend_from_slice(&message(b'd', &row));
    }
    wire.extend_from_slice(after);
    wire
}

#[test]
fn an_unarmed_tap_passes_everything_on() {
    let wire = [message(b'd', b"row\n"), message(b'Z', b"I")].concat();
    let tap = Tap::default();
    let mut stream = tap.wrap(Pieces(VecDeque::from([wire.clone()])));
    assert_eq!(read_once(&mut stream), Some(wire));
}

#[test]
fn a_full_tap_stops_reading_until_its_rows_are_taken() {
    let wire = three_taps_of_rows(&message(b'c', b""));
    let tap = Tap::default();
    let armed = tap.arm();
    let mut stream = tap.wrap(Pieces(VecDeque::from([wire])));
    assert_eq!(read_once(&mut stream), None);
    let held = tap.lock().whole;
    assert!((TAP_BYTES..TAP_BYTES + 1000).contains(&held), "{held}");
    let mut copy = armed.rows(futures::stream::empty::<Result<Bytes, Infallible>>());
    let mut cx = Context::from_waker(Waker::noop());
    let Poll::Ready(Some(Ok(item))) = copy.poll_next_unpin(&mut cx) else {
        panic!("rows ready");
    };
    assert_eq!(item.len(), held);
    assert_eq!(read_once(&mut stream), None);
}

#[test]
fn an_abandoned_copy_is_read_to_its_end_and_the_session_goes_on() {
    let after = [
        message(b'c', b""),
        message(b'C', b"COPY\0"),
        message(b'Z', b"I"),
    ]
    .concat();
    let wire = three_taps_of_rows(&after);
    for taken_first in [false, true] {
        let tap = Tap::default();
        let armed = tap.arm();
        let mut stream = tap.wrap(Pieces(VecDeque::from([wire.clone()])));
        assert_eq!(read_once(&mut stream), None);
        if taken_first {
            let mut copy = armed.rows(futures::stream::pending::<Result<Bytes, Infallible>>());
            let mut cx = Context::from_waker(Waker::noop());
            assert!(copy.poll_next_unpin(&mut cx).is_ready());
            drop(copy);
        } else {
            // The statement never came back (a timeout): the guard alone is dropped.
            drop(armed);
        }
        let mut driver = Vec::new();
        loop {
            match read_once(&mut stream) {
                Some(bytes) if bytes.is_empty() => break,
                Some(bytes) => driver.extend_from_slice(&bytes),
                None => panic!("the abandoned copy held the session"),
            }
        }
        assert_eq!(driver, after);
        assert!(tap.lock().rows.is_empty());
    }
}
