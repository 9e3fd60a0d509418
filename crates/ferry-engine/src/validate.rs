//! Checks before anything is stored, each asked of the connectors (so `check`, create and
//! a first start run one code path). Against the source: passwords given by reference can
//! be read, the source is reachable and configured for change capture, tables that exist,
//! and resume positions it can serve. Against the target: not the source itself, no table
//! owned by another changefeed, existing tables writable as they are, and a refusal
//! retrying cannot fix (a wrong password, an untrusted certificate). Every check only
//! reads and never touches a running changefeed.

use std::sync::Arc;

use ferry_core::{
    ConnectionUri, ErrorClass, Position, SinkError, SourceConnector, TableFilter, TargetPolicy,
    TargetProblem,
};

use crate::config::ChangefeedConfig;
use crate::engine::Engine;
use crate::error::EngineError;

/// Reads `uri`'s password now when it is given by reference (`password_file`,
/// `password_env`), so a missing file or variable is refused before anything is stored
/// instead of failing the changefeed later. The value read is dropped at once.
pub(crate) fn check_password(uri: &ConnectionUri) -> Result<(), EngineError> {
    uri.password()
        .map(drop)
        .map_err(|e| EngineError::SecretUnavailable(ferry_core::error_chain(&e)))
}

/// [`check_password`] for the source and the sink of `config`.
pub(crate) fn check_passwords(config: &ChangefeedConfig) -> Result<(), EngineError> {
    check_password(&config.source_uri).map_err(|e| prefixed("source_uri", e))?;
    if let Some(uri) = config.sink_uri.connection() {
        check_password(uri).map_err(|e| prefixed("sink_uri", e))?;
    }
    Ok(())
}

fn prefixed(field: &str, err: EngineError) -> EngineError {
    match err {
        EngineError::SecretUnavailable(m) => {
            EngineError::SecretUnavailable(format!("{field}: {m}"))
        }
        other => other,
    }
}

impl Engine {
    /// The connector of `uri`'s scheme.
    pub(crate) fn source_connector(
        &self,
        uri: &ConnectionUri,
    ) -> Result<Arc<dyn SourceConnector>, EngineError> {
        self.connectors.source(uri).map_err(EngineError::source)
    }

    /// Checks the source can serve changefeeds (reachable, configured, privileged).
    pub(crate) async fn check_source(
        &self,
        uri: &ConnectionUri,
    ) -> Result<Arc<dyn SourceConnector>, EngineError> {
        let connector = self.source_connector(uri)?;
        let check = connector.check(uri).await.map_err(EngineError::source)?;
        if let Some(problem) = check.problems.into_iter().next() {
            return Err(EngineError::SourceUnusable(problem));
        }
        Ok(connector)
    }

    /// Checks that every rule naming one exact table names an existing table.
    pub(crate) async fn check_tables(
        &self,
        connector: &dyn SourceConnector,
        uri: &ConnectionUri,
        filter: &TableFilter,
    ) -> Result<(), EngineError> {
        let missing = connector
            .missing_tables(uri, filter)
            .await
            .map_err(EngineError::source)?;
        if !missing.is_empty() {
            return Err(EngineError::TableNotFound(missing.join(", ")));
        }
        let problems = connector
            .table_problems(uri, filter)
            .await
            .map_err(EngineError::source)?;
        match problems.into_iter().next() {
            Some(problem) => Err(EngineError::SourceUnusable(problem)),
            None => Ok(()),
        }
    }

    /// Judges every table `filter` selects on the source `uri`, after the checks create
    /// runs on the source itself.
    pub async fn verify_tables(
        &self,
        uri: &ConnectionUri,
        filter: &TableFilter,
    ) -> Result<Vec<ferry_core::TableVerdict>, EngineError> {
        let connector = self.check_source(uri).await?;
        connector
            .verify_tables(uri, filter)
            .await
            .map_err(EngineError::source)
    }

    /// Checks that the changefeed `key` can stream from `position`.
    pub(crate) async fn check_resume_position(
        &self,
        uri: &ConnectionUri,
        key: &str,
        position: &Position,
    ) -> Result<(), EngineError> {
        let connector = self.source_connector(uri)?;
        connector
            .check_resume(uri, key, position)
            .await
            .map_err(EngineError::source)?
            .map_err(EngineError::InvalidPosition)
    }

    /// Checks the target of `config` against its source: a sink that is the source
    /// database is refused, and so is a table another changefeed owns, an existing table
    /// the source cannot be written into, and (under `existing_target: fail`) a table
    /// holding rows. A target that cannot be reached now is not an error: the same checks
    /// run when the changefeed first writes.
    pub(crate) async fn check_target(
        &self,
        config: &ChangefeedConfig,
        source: &dyn SourceConnector,
    ) -> Result<(), EngineError> {
        let key = config.key();
        let (schemas, identity) = source
            .selected_schemas(&config.source_uri, &config.filter())
            .await
            .map_err(EngineError::source)?;
        let policy = TargetPolicy {
            server_id: self.server_id.clone(),
            existing_target: config.existing_target(),
            source: identity,
            ddl: config.options.ddl,
            chunk_ledger: None,
        };
        let sink = self.connectors.sink(&config.sink_uri);
        let found = sink
            .preflight(&config.sink_uri, &key, &policy, &schemas, config.copies())
            .await;
        match found {
            Ok(None) => Ok(()),
            Ok(Some(TargetProblem::SinkIsSource(m))) => Err(EngineError::SinkIsSource(m)),
            Ok(Some(TargetProblem::Owned(m))) => Err(EngineError::TargetTableOwned(m)),
            Ok(Some(TargetProblem::NotEmpty(m))) => Err(EngineError::TargetNotEmpty(m)),
            Ok(Some(TargetProblem::Conflict(m))) => Err(EngineError::TargetConflict(m)),
            Err(e)
                if e.class() == ErrorClass::Definite && matches!(e, SinkError::Connect { .. }) =>
            {
                Err(EngineError::SinkUnusable(ferry_core::error_chain(&e)))
            }
            Err(e) => {
                tracing::info!(changefeed = %key, error = %ferry_core::error_chain(&e), "target unreachable: its checks run when the changefeed starts");
                Ok(())
            }
        }
    }
}
