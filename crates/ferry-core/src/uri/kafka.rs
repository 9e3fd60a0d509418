//! `kafka://host:port[,host:port…]?topic_prefix=PFX` (or `?topic=NAME`): Kafka brokers that
//! events are produced to, one topic per table (`PFX.<schema>.<table>`) or one topic for
//! every table. Parsing only; the sink lives in `ferry-connectors`.

use std::fmt;

use super::events::{self, EventOptions};
use super::UriError;

/// Kafka's default broker port.
pub const DEFAULT_PORT: u16 = 9092;

/// Where a table's events go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KafkaTopics {
    /// `PFX.<schema>.<table>`.
    Prefix(String),
    /// One topic for every table.
    Single(String),
}

/// A parsed `kafka://` sink URI.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KafkaSinkUri {
    brokers: Vec<(String, u16)>,
    topics: KafkaTopics,
    options: EventOptions,
}

impl KafkaSinkUri {
    /// The bootstrap servers, `host:port,host:port`.
    pub fn bootstrap_servers(&self) -> String {
        self.brokers
            .iter()
            .map(|(host, port)| format!("{host}:{port}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Where the events go.
    pub fn topics(&self) -> &KafkaTopics {
        &self.topics
    }

    /// The event options (`transactions=`, `tombstones=`).
    pub fn options(&self) -> EventOptions {
        self.options
    }

    /// The topic of transaction `BEGIN`/`END` events: `PFX.transaction`, or
    /// `NAME.transaction` beside a single topic.
    pub fn transaction_topic(&self) -> String {
        match &self.topics {
            KafkaTopics::Prefix(prefix) => format!("{prefix}.transaction"),
            KafkaTopics::Single(topic) => format!("{topic}.transaction"),
        }
    }

    /// The topic of `schema.table`'s events.
    pub fn topic_for(&self, schema: &str, table: &str) -> String {
        match &self.topics {
            KafkaTopics::Prefix(prefix) => format!("{prefix}.{schema}.{table}"),
            KafkaTopics::Single(topic) => topic.clone(),
        }
    }

    /// Parses `kafka://…` by hand: a URL parser takes one host, a broker list has several.
    /// Refuses credentials (not supported yet), a path and unknown parameters.
    pub(super) fn parse(s: &str) -> Result<Self, UriError> {
        let rest = s
            .strip_prefix("kafka://")
            .ok_or_else(|| UriError::Malformed {
                reason: "expected kafka://host:port[,host:port]?topic_prefix=PFX".into(),
            })?;
        let (authority, query) = rest.split_once('?').unwrap_or((rest, ""));
        let authority = authority.trim_end_matches('/');
        if authority.contains('@') {
            return Err(UriError::InvalidParameter {
                reason: "kafka:// sinks take no credentials yet: use brokers that allow this \
                         client without them"
                    .into(),
            });
        }
        if authority.contains('/') {
            return Err(UriError::InvalidParameter {
                reason: "a kafka:// sink has no path: name topics with ?topic_prefix= or ?topic="
                    .into(),
            });
        }
        let brokers = authority
            .split(',')
            .map(parse_broker)
            .collect::<Result<Vec<_>, _>>()?;
        let (mut prefix, mut single) = (None, None);
        let mut options = EventOptions::default();
        for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
            if options.take(&key, &value, true)? {
                continue;
            }
            match key.as_ref() {
                "topic_prefix" => prefix = Some(check_topic("topic_prefix", &value)?),
                "topic" => single = Some(check_topic("topic", &value)?),
                other => {
                    return Err(UriError::InvalidParameter {
                        reason: format!(
                        "unknown kafka sink parameter {other:?} (known: topic_prefix, topic, {})",
                        events::NAMES
                    ),
                    })
                }
            }
        }
        let topics = match (prefix, single) {
            (Some(prefix), None) => KafkaTopics::Prefix(prefix),
            (None, Some(topic)) => KafkaTopics::Single(topic),
            (Some(_), Some(_)) => {
                return Err(UriError::InvalidParameter {
                    reason: "give topic_prefix= (a topic per table) or topic= (one topic), \
                             not both"
                        .into(),
                })
            }
            (None, None) => {
                return Err(UriError::Missing {
                    part: "the topics (?topic_prefix=PFX for one per table, or ?topic=NAME)",
                })
            }
        };
        Ok(KafkaSinkUri {
            brokers,
            topics,
            options,
        })
    }
}

fn parse_broker(broker: &str) -> Result<(String, u16), UriError> {
    let missing = || UriError::Missing {
        part: "a broker host (kafka://host:9092?topic_prefix=PFX)",
    };
    let (host, port) = match broker.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(':') => {
            let port = port.parse().map_err(|_| UriError::InvalidParameter {
                reason: format!("broker {broker:?}: the port is not a number"),
            })?;
            (host, port)
        }
        _ => (broker, DEFAULT_PORT),
    };
    if host.is_empty() || host.contains(|c: char| c.is_whitespace() || c.is_control()) {
        return Err(missing());
    }
    Ok((host.to_string(), port))
}

/// Kafka topic names: 1–249 of `[a-zA-Z0-9._-]`.
fn check_topic(param: &str, name: &str) -> Result<String, UriError> {
    let ok = |c: char| c.is_ascii_alphanumeric() || "._-".contains(c);
    if name.is_empty() || name.len() > 200 || !name.chars().all(ok) {
        return Err(UriError::InvalidParameter {
            reason: format!("{param}={name}: 1 to 200 of a-z, A-Z, 0-9, '.', '_', '-'"),
        });
    }
    Ok(name.to_string())
}

/// The canonical form: every parameter spelled out, so what is stored is what runs.
impl fmt::Display for KafkaSinkUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (key, value) = match &self.topics {
            KafkaTopics::Prefix(prefix) => ("topic_prefix", prefix),
            KafkaTopics::Single(topic) => ("topic", topic),
        };
        write!(
            f,
            "kafka://{}?{key}={value}{}",
            self.bootstrap_servers(),
            self.options.query_suffix()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SinkUri;

    fn kafka(s: &str) -> Result<KafkaSinkUri, UriError> {
        match s.parse::<SinkUri>()? {
            SinkUri::Kafka(k) => Ok(k),
            other => panic!("not a kafka sink: {other:?}"),
        }
    }

    #[test]
    fn parses_brokers_and_topics() {
        let k = kafka("kafka://a:9093,b?topic_prefix=cdc.shop").unwrap();
        assert_eq!(k.bootstrap_servers(), "a:9093,b:9092");
        assert_eq!(k.topic_for("public", "orders"), "cdc.shop.public.orders");
        assert_eq!(k.to_string(), "kafka://a:9093,b:9092?topic_prefix=cdc.shop");
        assert_eq!(kafka(&k.to_string()).unwrap(), k);
        let one = kafka("kafka://127.0.0.1:1/?topic=all_changes").unwrap();
        assert_eq!(one.topic_for("s", "t"), "all_changes");
        assert_eq!(one.options(), EventOptions::default());
        let both = kafka("kafka://h?topic_prefix=p&tombstones=1&transactions=true").unwrap();
        assert!(both.options().transactions && both.options().tombstones);
        assert_eq!(both.transaction_topic(), "p.transaction");
        assert_eq!(
            both.to_string(),
            "kafka://h:9092?topic_prefix=p&transactions=true&tombstones=true"
        );
        assert!("nats://h?stream=S&subject_prefix=p&tombstones=true"
            .parse::<SinkUri>()
            .is_err());
    }

    #[test]
    fn refuses_what_it_cannot_honour() {
        for bad in [
            "kafka://h:9092",
            "kafka://h:9092?topic_prefix=a&topic=b",
            "kafka://h:9092?topic_prefix=a b",
            "kafka://h:x?topic_prefix=p",
            "kafka://u:pw@h:9092?topic_prefix=p",
            "kafka://h:9092/t?topic_prefix=p",
            "kafka://h:9092?topic_prefix=p&acks=all",
            "kafka://?topic_prefix=p",
            "kafka://h?topic_prefix=p&transactions=maybe",
        ] {
            assert!(kafka(bad).is_err(), "{bad}");
        }
    }
}
