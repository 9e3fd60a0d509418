//! Property tests of the pgoutput decoder: no panic on any input, round trip through the
//! test encoder, truncation always detected.

use bytes::Bytes;
use ferry_core::{Lsn, Value};
use proptest::prelude::*;

use super::{decode_slice, encode};
use crate::decode::*;

/// The message type bytes [`decode`] accepts.
const TAGS: &[u8] = b"BCORYIUDTM";

fn arb_lsn() -> impl Strategy<Value = Lsn> {
    any::<u64>().prop_map(Lsn)
}

/// Any UTF-8 string without NUL, multi-byte characters included.
fn arb_name() -> impl Strategy<Value = String> {
    "[^\\x00]{0,12}"
}

fn arb_tuple() -> impl Strategy<Value = TupleData> {
    let value = prop_oneof![
        Just(Value::Null),
        Just(Value::Unchanged),
        prop::collection::vec(any::<u8>(), 0..24).prop_map(|v| Value::Text(Bytes::from(v))),
    ];
    prop::collection::vec(value, 0..10)
}

fn arb_old_tuple() -> impl Strategy<Value = OldTuple> {
    prop_oneof![
        arb_tuple().prop_map(OldTuple::Key),
        arb_tuple().prop_map(OldTuple::Full)
    ]
}

fn arb_relation() -> impl Strategy<Value = RelationMessage> {
    let column = (any::<bool>(), arb_name(), any::<u32>(), any::<i32>()).prop_map(
        |(is_key, name, type_oid, type_modifier)| RelationColumn {
            is_key,
            name,
            type_oid,
            type_modifier,
        },
    );
    let identity = prop::sample::select(b"dnfi".to_vec());
    (
        any::<u32>(),
        arb_name(),
        arb_name(),
        identity,
        prop::collection::vec(column, 0..8),
    )
        .prop_map(
            |(id, namespace, name, replica_identity, columns)| RelationMessage {
                id,
                namespace,
                name,
                replica_identity,
                columns,
            },
        )
}

fn arb_message() -> impl Strategy<Value = PgOutputMessage> {
    use PgOutputMessage as M;
    prop_oneof![
        (arb_lsn(), any::<i64>(), any::<u32>()).prop_map(|(final_lsn, commit_time_us, xid)| {
            M::Begin {
                final_lsn,
                commit_time_us,
                xid,
            }
        }),
        (any::<u8>(), arb_lsn(), arb_lsn(), any::<i64>()).prop_map(
            |(flags, commit_lsn, end_lsn, commit_time_us)| M::Commit {
                flags,
                commit_lsn,
                end_lsn,
                commit_time_us
            }
        ),
        (arb_lsn(), arb_name()).prop_map(|(commit_lsn, name)| M::Origin { commit_lsn, name }),
        arb_relation().prop_map(M::Relation),
        (any::<u32>(), arb_name(), arb_name()).prop_map(|(oid, namespace, name)| M::Type {
            oid,
            namespace,
            name
        }),
        (any::<u32>(), arb_tuple()).prop_map(|(relation_id, new)| M::Insert { relation_id, new }),
        (any::<u32>(), prop::option::of(arb_old_tuple()), arb_tuple()).prop_map(
            |(relation_id, old, new)| M::Update {
                relation_id,
                old,
                new
            }
        ),
        (any::<u32>(), arb_old_tuple())
            .prop_map(|(relation_id, old)| M::Delete { relation_id, old }),
        (
            prop::collection::vec(any::<u32>(), 0..8),
            any::<bool>(),
            any::<bool>()
        )
            .prop_map(|(relation_ids, cascade, restart_identity)| M::Truncate {
                relation_ids,
                cascade,
                restart_identity
            }),
        (
            any::<bool>(),
            arb_lsn(),
            arb_name(),
            prop::collection::vec(any::<u8>(), 0..32)
        )
            .prop_map(|(transactional, lsn, prefix, content)| M::Message {
                transactional,
                lsn,
                prefix,
                content: Bytes::from(content),
            }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode_slice(&bytes);
    }

    #[test]
    fn random_bodies_after_valid_tags_never_panic(
        tag in prop::sample::select(TAGS.to_vec()),
        body in prop::collection::vec(any::<u8>(), 0..512),
    ) {
        let mut payload = vec![tag];
        payload.extend(body);
        let _ = decode_slice(&payload);
    }

    #[test]
    fn corrupted_valid_messages_never_panic(
        message in arb_message(),
        at in any::<prop::sample::Index>(),
        byte in any::<u8>(),
    ) {
        let mut payload = encode(&message);
        let i = at.index(payload.len());
        payload[i] = byte;
        let _ = decode_slice(&payload);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn encoded_messages_round_trip(message in arb_message()) {
        prop_assert_eq!(decode_slice(&encode(&message)), Ok(message));
    }

    #[test]
    fn every_strict_prefix_is_truncated(message in arb_message()) {
        let payload = Bytes::from(encode(&message));
        for len in 0..payload.len() {
            let result = decode(&payload.slice(..len));
            prop_assert!(
                matches!(result, Err(DecodeError::Truncated { .. })),
                "prefix of {} of {} bytes decoded as {:?}", len, payload.len(), result
            );
        }
    }
}
