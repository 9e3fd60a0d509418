use proptest::prelude::*;

use super::*;

fn messages(spool: Spool) -> Vec<Vec<u8>> {
    let mut reader = spool.into_reader().unwrap();
    let mut out = Vec::new();
    while let Some(m) = reader.next_message().unwrap() {
        out.push(m.to_vec());
    }
    out
}

#[test]
fn control_messages_are_read() {
    let mut commit = vec![b'c'];
    commit.extend_from_slice(&7u32.to_be_bytes());
    commit.push(0);
    commit.extend_from_slice(&0x10u64.to_be_bytes());
    commit.extend_from_slice(&0x20u64.to_be_bytes());
    commit.extend_from_slice(&5i64.to_be_bytes());
    assert_eq!(
        control(&commit).unwrap(),
        Some(StreamControl::Commit {
            xid: 7,
            commit_lsn: Lsn(0x10),
            end_lsn: Lsn(0x20),
            commit_time_us: 5
        })
    );
    assert_eq!(
        control(&[b'S', 0, 0, 0, 9, 1]).unwrap(),
        Some(StreamControl::Start {
            xid: 9,
            first: true
        })
    );
    assert_eq!(control(b"E").unwrap(), Some(StreamControl::Stop));
    assert_eq!(
        control(&[b'A', 0, 0, 0, 9, 0, 0, 0, 10]).unwrap(),
        Some(StreamControl::Abort { xid: 9, subxid: 10 })
    );
    assert_eq!(control(b"I....").unwrap(), None);
    assert!(control(&[b'S', 0, 0]).is_err());
    assert!(control(&[b'E', 1]).is_err());
}

#[test]
fn a_streamed_message_loses_its_xid() {
    let (xid, message) = split_streamed(&[b'I', 0, 0, 1, 0, b'x', b'y']).unwrap();
    assert_eq!((xid, message.concat()), (256, b"Ixy".to_vec()));
    assert!(split_streamed(&[b'I', 0, 0]).is_err());
}

/// Pushes `n` messages of `xid`, each naming its own index.
fn push_n(spool: &mut Spool, xid: u32, from: usize, n: usize, size: usize) {
    for i in from..from + n {
        let mut m = format!("{xid}:{i}:").into_bytes();
        m.resize(size, b'.');
        spool.push(xid, &[&m]).unwrap();
    }
}

fn names(messages: &[Vec<u8>]) -> Vec<String> {
    messages
        .iter()
        .map(|m| {
            let s = String::from_utf8_lossy(m);
            s.split(':').take(2).collect::<Vec<_>>().join(":")
        })
        .collect()
}

#[test]
fn a_rolled_back_subtransaction_is_cut_with_its_descendants() {
    for size in [16, 3_000] {
        let mut spool = Spool::with_memory_limit(1, 10_000);
        push_n(&mut spool, 1, 0, 2, size);
        push_n(&mut spool, 2, 2, 2, size); // savepoint a
        push_n(&mut spool, 3, 4, 1, size); // savepoint b inside a
        spool.abort_subtransaction(2).unwrap(); // rollback to a: b goes too
        push_n(&mut spool, 1, 5, 1, size);
        push_n(&mut spool, 4, 6, 1, size);
        spool.abort_subtransaction(9).unwrap(); // no changes: nothing to cut
        push_n(&mut spool, 3, 7, 1, size); // a subtransaction id seen before the cut
        spool.abort_subtransaction(3).unwrap();
        assert_eq!(spool.messages(), 4);
        assert_eq!(spool.spilled(), size > 1_000);
        let got = messages(spool);
        assert_eq!(names(&got), ["1:0", "1:1", "1:5", "4:6"], "size {size}");
        assert!(got.iter().all(|m| m.len() == size));
    }
}

proptest! {
    #[test]
    fn control_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
        let _ = control(&bytes);
        let _ = split_streamed(&bytes);
    }

    /// Whatever the sizes, the messages come back as pushed, spilled or not.
    #[test]
    fn messages_come_back_in_order(sizes in proptest::collection::vec(0usize..3_000, 1..12)) {
        let mut spool = Spool::with_memory_limit(1, 8_000);
        let mut want = Vec::new();
        for (i, size) in sizes.iter().enumerate() {
            let m: Vec<u8> = (0..*size).map(|b| (b + i) as u8).collect();
            spool.push(1, &[&m[..m.len() / 2], &m[m.len() / 2..]]).unwrap();
            want.push(m);
        }
        prop_assert_eq!(spool.bytes(), want.iter().map(|m| 4 + m.len() as u64).sum::<u64>());
        prop_assert_eq!(messages(spool), want);
    }
}
