//! The registry of connectors: the one crate that names every source and sink kind.
//! The binary hands a [`Registry`] to the engine, which sees only
//! [`ferry_core::Connectors`].
//!
//! | scheme | source | sink |
//! |---|---|---|
//! | `postgres://`, `postgresql://` | `ferry_postgres::connector::PgSourceConnector` | `ferry_postgres::connector::PgSinkConnector` |
//! | `blackhole://` | — | [`blackhole::BlackholeConnector`] |
//! | `file://` | — | [`file::FileConnector`] |
//! | `nats://` | — | [`nats::NatsConnector`] |
//! | `mysql://`, `mariadb://` | `ferry_mysql::source::MySqlSourceConnector` | `ferry_mysql::sink::MySqlSinkConnector` |
//! | `kafka://` | — | `kafka::KafkaConnector` (cargo feature `kafka`) |
//! | `http://`, `https://` | — | [`webhook::WebhookConnector`] |

pub mod blackhole;
mod event_sink;
pub mod file;
#[cfg(feature = "kafka")]
pub mod kafka;
pub mod nats;
pub mod webhook;

use std::sync::Arc;

use ferry_core::{
    ConnectionUri, Connectors, ErrorClass, ForeignKeyCreated, SequenceSynced, SinkConnector,
    SinkUri, SourceConnector, SourceError, TableFilter,
};
use ferry_mysql::sink::MySqlSinkConnector;
use ferry_mysql::source::MySqlSourceConnector;
use ferry_postgres::connector::{PgSinkConnector, PgSourceConnector};
use futures::future::BoxFuture;

/// Every connector this build has.
#[derive(Clone, Copy, Debug, Default)]
pub struct Registry;

impl Connectors for Registry {
    fn source(&self, uri: &ConnectionUri) -> Result<Arc<dyn SourceConnector>, SourceError> {
        match uri.scheme() {
            "postgres" | "postgresql" => Ok(Arc::new(PgSourceConnector)),
            "mysql" | "mariadb" => Ok(Arc::new(MySqlSourceConnector)),
            other => Err(SourceError::message(
                format!("no source connector for scheme {other}://"),
                ErrorClass::Definite,
            )),
        }
    }

    fn sink(&self, uri: &SinkUri) -> Arc<dyn SinkConnector> {
        match uri {
            SinkUri::Postgres(_) => Arc::new(PgSinkConnector),
            SinkUri::Blackhole => Arc::new(blackhole::BlackholeConnector),
            SinkUri::File(_) => Arc::new(file::FileConnector),
            SinkUri::Nats(_) => Arc::new(nats::NatsConnector),
            SinkUri::Mysql(_) => Arc::new(MySqlSinkConnector),
            #[cfg(feature = "kafka")]
            SinkUri::Kafka(_) => Arc::new(kafka::KafkaConnector),
            #[cfg(not(feature = "kafka"))]
            SinkUri::Kafka(_) => Arc::new(NotBuilt("Kafka", "kafka")),
            SinkUri::Webhook(_) => Arc::new(webhook::WebhookConnector),
        }
    }

    fn sync_sequences<'a>(
        &'a self,
        source: &'a ConnectionUri,
        sink: &'a SinkUri,
        filter: &'a TableFilter,
    ) -> BoxFuture<'a, Result<Vec<SequenceSynced>, String>> {
        Box::pin(async move {
            match sink {
                SinkUri::Postgres(target) => {
                    ferry_postgres::connector::sync_sequences(source, target, filter).await
                }
                SinkUri::Blackhole
                | SinkUri::File(_)
                | SinkUri::Nats(_)
                | SinkUri::Kafka(_)
                | SinkUri::Mysql(_)
                | SinkUri::Webhook(_) => Ok(Vec::new()),
            }
        })
    }

    fn create_foreign_keys<'a>(
        &'a self,
        source: &'a ConnectionUri,
        sink: &'a SinkUri,
        filter: &'a TableFilter,
    ) -> BoxFuture<'a, Result<Vec<ForeignKeyCreated>, String>> {
        Box::pin(async move {
            match sink {
                SinkUri::Postgres(target) => {
                    ferry_postgres::connector::create_foreign_keys(source, target, filter).await
                }
                SinkUri::Blackhole
                | SinkUri::File(_)
                | SinkUri::Nats(_)
                | SinkUri::Kafka(_)
                | SinkUri::Mysql(_)
                | SinkUri::Webhook(_) => Ok(Vec::new()),
            }
        })
    }
}

/// A sink kind this build leaves out: every connect says which cargo feature brings it.
#[cfg(not(feature = "kafka"))]
struct NotBuilt(&'static str, &'static str);

#[cfg(not(feature = "kafka"))]
#[async_trait::async_trait]
impl SinkConnector for NotBuilt {
    async fn connect(
        &self,
        _uri: &SinkUri,
        _feed: &str,
        _policy: ferry_core::TargetPolicy,
    ) -> Result<Box<dyn ferry_core::Sink>, ferry_core::SinkError> {
        Err(ferry_core::SinkError::Unsupported {
            message: format!(
                "this ferry was built without the {} sink: build it with cargo feature `{}`",
                self.0, self.1
            ),
        })
    }
}
