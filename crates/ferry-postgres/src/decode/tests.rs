//! Tests of the pgoutput decoder: a test encoder, hand-built fixtures for every message kind
//! and for hostile input. Property tests built on the encoder are in [`properties`].

use bytes::Bytes;
use ferry_core::{Lsn, Value};

use super::*;

mod properties;

/// Test-only encoder: the inverse of [`decode`], written from the protocol documentation.
fn encode(message: &PgOutputMessage) -> Vec<u8> {
    let mut out = Vec::new();
    match message {
        PgOutputMessage::Begin {
            final_lsn,
            commit_time_us,
            xid,
        } => {
            out.push(b'B');
            out.extend(final_lsn.0.to_be_bytes());
            out.extend(commit_time_us.to_be_bytes());
            out.extend(xid.to_be_bytes());
        }
        PgOutputMessage::Commit {
            flags,
            commit_lsn,
            end_lsn,
            commit_time_us,
        } => {
            out.push(b'C');
            out.push(*flags);
            out.extend(commit_lsn.0.to_be_bytes());
            out.extend(end_lsn.0.to_be_bytes());
            out.extend(commit_time_us.to_be_bytes());
        }
        PgOutputMessage::Origin { commit_lsn, name } => {
            out.push(b'O');
            out.extend(commit_lsn.0.to_be_bytes());
            put_str(&mut out, name);
        }
        PgOutputMessage::Relation(relation) => {
            out.push(b'R');
            out.extend(relation.id.to_be_bytes());
            put_str(&mut out, &relation.namespace);
            put_str(&mut out, &relation.name);
            out.push(relation.replica_identity);
            out.extend((relation.columns.len() as u16).to_be_bytes());
            for column in &relation.columns {
                out.push(u8::from(column.is_key));
                put_str(&mut out, &column.name);
                out.extend(column.type_oid.to_be_bytes());
                out.extend(column.type_modifier.to_be_bytes());
            }
        }
        PgOutputMessage::Type {
            oid,
            namespace,
            name,
        } => {
            out.push(b'Y');
            out.extend(oid.to_be_bytes());
            put_str(&mut out, namespace);
            put_str(&mut out, name);
        }
        PgOutputMessage::Insert { relation_id, new } => {
            out.push(b'I');
            out.extend(relation_id.to_be_bytes());
            out.push(b'N');
            put_tuple(&mut out, new);
        }
        PgOutputMessage::Update {
            relation_id,
            old,
            new,
        } => {
            out.push(b'U');
            out.extend(relation_id.to_be_bytes());
            if let Some(old) = old {
                put_old(&mut out, old);
            }
            out.push(b'N');
            put_tuple(&mut out, new);
        }
        PgOutputMessage::Delete { relation_id, old } => {
            out.push(b'D');
            out.extend(relation_id.to_be_bytes());
            put_old(&mut out, old);
        }
        PgOutputMessage::Truncate {
            relation_ids,
            cascade,
            restart_identity,
        } => {
            out.push(b'T');
            out.extend((relation_ids.len() as u32).to_be_bytes());
            out.push(u8::from(*cascade) | u8::from(*restart_identity) << 1);
            for id in relation_ids {
                out.extend(id.to_be_bytes());
            }
        }
        PgOutputMessage::Message {
            transactional,
            lsn,
            prefix,
            content,
        } => {
            out.push(b'M');
            out.push(u8::from(*transactional));
            out.extend(lsn.0.to_be_bytes());
            put_str(&mut out, prefix);
            out.extend((content.len() as i32).to_be_bytes());
            out.extend_from_slice(content);
        }
    }
    out
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(s.as_bytes());
    out.push(0);
}

fn put_old(out: &mut Vec<u8>, old: &OldTuple) {
    let (marker, values) = match old {
        OldTuple::Key(values) => (b'K', values),
        OldTuple::Full(values) => (b'O', values),
    };
    out.push(marker);
    put_tuple(out, values);
}

fn put_tuple(out: &mut Vec<u8>, values: &[Value]) {
    out.extend((values.len() as u16).to_be_bytes());
    for value in values {
        match value {
            Value::Null => out.push(b'n'),
            Value::Unchanged => out.push(b'u'),
            Value::Text(text) => {
                out.push(b't');
                out.extend((text.len() as i32).to_be_bytes());
                out.extend_from_slice(text);
            }
        }
    }
}

fn text(s: &str) -> Value {
    Value::Text(Bytes::copy_from_slice(s.as_bytes()))
}

fn decode_slice(bytes: &[u8]) -> Result<PgOutputMessage, DecodeError> {
    decode(&Bytes::copy_from_slice(bytes))
}

/// Encodes, decodes and compares.
fn assert_round_trip(message: PgOutputMessage) {
    assert_eq!(decode_slice(&encode(&message)), Ok(message));
}

#[test]
fn begin_from_literal_bytes() {
    let mut payload = vec![b'B', 0, 0, 0, 0, 0x01, 0x6B, 0x37, 0x48];
    payload.extend(7_000_000i64.to_be_bytes());
    payload.extend([0, 0, 0x02, 0xE6]);
    let message = decode_slice(&payload).unwrap();
    assert_eq!(
        message,
        PgOutputMessage::Begin {
            final_lsn: Lsn(0x16B_3748),
            commit_time_us: 7_000_000,
            xid: 742
        }
    );
}

#[test]
fn insert_from_literal_bytes() {
    let payload = b"I\0\0\x40\x00N\0\x03t\0\0\0\x0242nu";
    let message = decode_slice(payload).unwrap();
    let expected = vec![text("42"), Value::Null, Value::Unchanged];
    assert_eq!(
        message,
        PgOutputMessage::Insert {
            relation_id: 0x4000,
            new: expected
        }
    );
}

#[test]
fn transaction_boundaries_round_trip() {
    assert_round_trip(PgOutputMessage::Begin {
        final_lsn: Lsn(u64::MAX),
        commit_time_us: -1,
        xid: 1,
    });
    assert_round_trip(PgOutputMessage::Commit {
        flags: 0,
        commit_lsn: Lsn(0x1_0000_0010),
        end_lsn: Lsn(0x1_0000_0040),
        commit_time_us: 800_000_000_000_000,
    });
    assert_round_trip(PgOutputMessage::Origin {
        commit_lsn: Lsn(9),
        name: "east".into(),
    });
}

#[test]
fn relation_with_key_flags_and_empty_namespace() {
    let column = |is_key, name: &str, type_oid, type_modifier| RelationColumn {
        is_key,
        name: name.into(),
        type_oid,
        type_modifier,
    };
    let relation = RelationMessage {
        id: 16_385,
        namespace: String::new(),
        name: "orders".into(),
        replica_identity: b'd',
        columns: vec![column(true, "id", 20, -1), column(false, "note", 1043, 68)],
    };
    let payload = encode(&PgOutputMessage::Relation(relation.clone()));
    // The key flag is bit 1 of the column flags; other bits are ignored.
    let mut with_extra_flag_bits = payload.clone();
    let first_flags = 1 + 4 + 1 + "orders\0".len() + 1 + 2;
    with_extra_flag_bits[first_flags] = 0b1111_1111;
    assert_eq!(
        decode_slice(&payload),
        Ok(PgOutputMessage::Relation(relation.clone()))
    );
    assert_eq!(
        decode_slice(&with_extra_flag_bits),
        Ok(PgOutputMessage::Relation(relation))
    );
}

#[test]
fn type_message_round_trips() {
    assert_round_trip(PgOutputMessage::Type {
        oid: 16_400,
        namespace: "public".into(),
        name: "mood".into(),
    });
}

#[test]
fn updates_with_and_without_old_tuples() {
    let new = vec![text("1"), Value::Unchanged, Value::Null];
    for old in [
        None,
        Some(OldTuple::Key(vec![text("1"), Value::Null, Value::Null])),
        Some(OldTuple::Full(vec![text("0"), text("big"), Value::Null])),
    ] {
        assert_round_trip(PgOutputMessage::Update {
            relation_id: 7,
            old,
            new: new.clone(),
        });
    }
}

#[test]
fn deletes_with_key_and_full_old_tuples() {
    assert_round_trip(PgOutputMessage::Delete {
        relation_id: 7,
        old: OldTuple::Key(vec![text("1")]),
    });
    assert_round_trip(PgOutputMessage::Delete {
        relation_id: 7,
        old: OldTuple::Full(vec![text("1"), text(""), Value::Null]),
    });
}

#[test]
fn truncate_options() {
    for (options, cascade, restart_identity) in [
        (0u8, false, false),
        (1, true, false),
        (2, false, true),
        (3, true, true),
    ] {
        let mut payload = vec![b'T', 0, 0, 0, 2, options];
        payload.extend([0, 0, 0, 10, 0, 0, 0, 11]);
        let expected = PgOutputMessage::Truncate {
            relation_ids: vec![10, 11],
            cascade,
            restart_identity,
        };
        assert_eq!(decode_slice(&payload), Ok(expected));
    }
}

#[test]
fn logical_decoding_messages() {
    for transactional in [false, true] {
        assert_round_trip(PgOutputMessage::Message {
            transactional,
            lsn: Lsn(77),
            prefix: "ferry".into(),
            content: Bytes::from_static(b"\0hello\xff"),
        });
    }
}

#[test]
fn text_values_are_slices_of_the_payload() {
    let payload = Bytes::from(encode(&PgOutputMessage::Insert {
        relation_id: 1,
        new: vec![text("alpha"), text("beta")],
    }));
    let range = payload.as_ptr_range();
    let Ok(PgOutputMessage::Insert { new, .. }) = decode(&payload) else {
        panic!("not an insert")
    };
    for value in new {
        let Value::Text(bytes) = value else {
            panic!("not text")
        };
        assert!(range.contains(&bytes.as_ptr()), "value was copied");
    }
}

#[test]
fn epoch_conversion_saturates() {
    assert_eq!(pg_epoch_to_unix_us(0), 946_684_800_000_000);
    assert_eq!(pg_epoch_to_unix_us(-946_684_800_000_000), 0);
    assert_eq!(pg_epoch_to_unix_us(i64::MAX), i64::MAX);
    assert_eq!(
        pg_epoch_to_unix_us(i64::MIN),
        i64::MIN + 946_684_800_000_000
    );
}

#[test]
fn rejects_malformed_messages() {
    let truncated = |what| Err(DecodeError::Truncated { what });
    assert_eq!(decode_slice(b""), truncated("message type"));
    assert_eq!(
        decode_slice(b"S\0\0\0\x01"),
        Err(DecodeError::UnknownMessage(b'S'))
    );
    assert_eq!(
        decode_slice(b"I\0\0\0\x01N\0\x01b\0\0\0\x01x"),
        Err(DecodeError::BinaryValue)
    );
    assert_eq!(
        decode_slice(b"I\0\0\0\x01N\0\x01x"),
        Err(DecodeError::UnknownTupleKind(b'x'))
    );
    assert_eq!(
        decode_slice(b"I\0\0\0\x01N\0\x01t\xff\xff\xff\xff"),
        Err(DecodeError::NegativeLength {
            what: "text column value"
        })
    );
    assert_eq!(
        decode_slice(b"I\0\0\0\x01K\0\0"),
        Err(DecodeError::UnexpectedTupleMarker {
            message: "insert",
            found: b'K',
            expected: "'N'"
        })
    );
    assert!(matches!(
        decode_slice(b"U\0\0\0\x01K\0\0K\0\0"),
        Err(DecodeError::UnexpectedTupleMarker {
            message: "update",
            found: b'K',
            ..
        })
    ));
    assert!(matches!(
        decode_slice(b"D\0\0\0\x01N\0\0"),
        Err(DecodeError::UnexpectedTupleMarker {
            message: "delete",
            found: b'N',
            ..
        })
    ));
    assert_eq!(
        decode_slice(b"R\0\0\0\x01\0t\0x\0\0"),
        Err(DecodeError::UnknownReplicaIdentity(b'x'))
    );
    assert!(matches!(
        decode_slice(b"Y\0\0\0\x01\xff\0t\0"),
        Err(DecodeError::InvalidUtf8 {
            what: "type namespace",
            ..
        })
    ));
    assert_eq!(
        decode_slice(b"Y\0\0\0\x01public"),
        truncated("type namespace")
    );
}

#[test]
fn hostile_sizes_are_truncation_not_allocation() {
    let truncated = |what| Err(DecodeError::Truncated { what });
    // 2^31-1 byte value, 4 billion relations, 65535 columns: all in a few bytes.
    assert_eq!(
        decode_slice(b"I\0\0\0\x01N\0\x01t\x7f\xff\xff\xffab"),
        truncated("text column value")
    );
    assert_eq!(
        decode_slice(b"T\xff\xff\xff\xff\x00\0\0\0\x01"),
        truncated("truncate relation id")
    );
    assert_eq!(
        decode_slice(b"I\0\0\0\x01N\xff\xffn"),
        truncated("tuple column kind")
    );
    assert_eq!(
        decode_slice(b"R\0\0\0\x01\0t\0d\xff\xff"),
        truncated("column flags")
    );
    assert_eq!(
        decode_slice(b"M\x01\0\0\0\0\0\0\0\x01p\0\x7f\xff\xff\xff"),
        truncated("message content")
    );
}

#[test]
fn trailing_bytes_are_rejected_without_echoing_them() {
    let mut payload = encode(&PgOutputMessage::Insert {
        relation_id: 1,
        new: vec![text("x")],
    });
    payload.extend_from_slice(b"secret");
    let error = decode_slice(&payload).unwrap_err();
    assert_eq!(
        error,
        DecodeError::TrailingBytes {
            message: "insert",
            count: 6
        }
    );
    assert!(!error.to_string().contains("secret"));
}

#[test]
fn streamed_messages_decode_as_their_plain_form() {
    let messages = [
        PgOutputMessage::Insert {
            relation_id: 7,
            new: vec![text("1"), Value::Null],
        },
        PgOutputMessage::Update {
            relation_id: 7,
            old: Some(OldTuple::Key(vec![text("1"), Value::Null])),
            new: vec![text("2"), Value::Unchanged],
        },
        PgOutputMessage::Delete {
            relation_id: 7,
            old: OldTuple::Full(vec![text("2"), text("x")]),
        },
    ];
    for message in messages {
        let plain = encode(&message);
        // Protocol 2 puts the (sub)transaction's xid right after the tag.
        let mut streamed = vec![plain[0]];
        streamed.extend_from_slice(&4242u32.to_be_bytes());
        streamed.extend_from_slice(&plain[1..]);
        let payload = Bytes::from(streamed);
        assert_eq!(decode_streamed(&payload), Ok(message));
        // Values are slices of the payload, as in the plain form.
        if let Ok(PgOutputMessage::Insert { new, .. }) = decode_streamed(&payload) {
            let Value::Text(v) = &new[0] else {
                panic!("a text value")
            };
            assert!(payload.as_ptr_range().contains(&v.as_ptr()));
        }
    }
    assert!(decode_streamed(&Bytes::from_static(b"I\0\0")).is_err());
}
