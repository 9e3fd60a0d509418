//! The MySQL/MariaDB sink.

use async_trait::async_trait;
use ferry_core::{Sink, SinkConnector, SinkError, SinkUri, TargetPolicy};

/// Writes changefeeds into a MySQL or MariaDB server.
#[derive(Clone, Copy, Debug, Default)]
pub struct MySqlSinkConnector;

#[async_trait]
impl SinkConnector for MySqlSinkConnector {
    async fn connect(
        &self,
        _uri: &SinkUri,
        _feed: &str,
        _policy: TargetPolicy,
    ) -> Result<Box<dyn Sink>, SinkError> {
        Err(SinkError::Unsupported {
            message: "the MySQL/MariaDB sink is not built yet".into(),
        })
    }
}
