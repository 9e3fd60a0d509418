//! Options every stream sink URI takes: `transactions=true` adds a `BEGIN` and an `END`
//! event around each source transaction (Debezium's `provide.transaction.metadata`), and
//! `schemas=true` writes every message with its schema (Debezium's `schemas.enable=true`),
//! and `tombstones=true` (Kafka only) follows each delete with a tombstone for compacted
//! topics.

use super::UriError;

/// The event options of a stream sink.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventOptions {
    /// `BEGIN`/`END` events around each transaction.
    pub transactions: bool,
    /// A tombstone (the key, no value) after each delete.
    pub tombstones: bool,
    /// Every message in Debezium's `schemas.enable=true` form, `{"schema", "payload"}`.
    pub schemas: bool,
}

/// The option names, for the messages that list a sink's parameters.
pub(super) const NAMES: &str = "transactions, schemas, tombstones";

impl EventOptions {
    /// Takes `key=value` when it is an event option (`Ok(false)`: not one). `tombstones`
    /// only where the transport has message keys to compact by.
    pub(super) fn take(
        &mut self,
        key: &str,
        value: &str,
        tombstones_allowed: bool,
    ) -> Result<bool, UriError> {
        let flag = || match value {
            "true" | "1" => Ok(true),
            "false" | "0" => Ok(false),
            _ => Err(UriError::InvalidParameter {
                reason: format!("{key}={value}: expected true or false"),
            }),
        };
        match key {
            "transactions" => self.transactions = flag()?,
            "schemas" => self.schemas = flag()?,
            "tombstones" if tombstones_allowed => self.tombstones = flag()?,
            "tombstones" => {
                return Err(UriError::InvalidParameter {
                    reason: "tombstones=: only Kafka sinks have keys to compact by".into(),
                })
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// `&name=true` for each option set (none for the defaults, so a URI stored before
    /// the options existed prints as it did).
    pub(super) fn query_suffix(&self) -> String {
        let mut out = String::new();
        if self.transactions {
            out.push_str("&transactions=true");
        }
        if self.schemas {
            out.push_str("&schemas=true");
        }
        if self.tombstones {
            out.push_str("&tombstones=true");
        }
        out
    }
}
