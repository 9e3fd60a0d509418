//! Tables of another SQL dialect: a MySQL table's columns as PostgreSQL types.
//!
//! A source of another kind names its columns' types in its own dialect (`bigint(20)
//! unsigned`); what the column holds is its [`LogicalType`], whose canonical text
//! PostgreSQL reads as is. So the table is created from the logical types, and values pass
//! through untouched. The schema of the table keeps its name: MySQL database `shop` lands
//! in PostgreSQL schema `shop`.

use std::sync::Arc;

use ferry_core::{Dialect, LogicalType, SinkError, TableSchema};

/// `schema` with PostgreSQL types: itself when it is PostgreSQL's already.
pub(crate) fn in_postgres(schema: &Arc<TableSchema>) -> Result<Arc<TableSchema>, SinkError> {
    if schema.dialect == Dialect::Postgres {
        return Ok(schema.clone());
    }
    let mut out = (**schema).clone();
    for column in &mut out.columns {
        column.type_name =
            postgres_type(&column.logical).ok_or_else(|| SinkError::Unsupported {
                message: format!(
                    "column {} of {} has source type {}, which has no PostgreSQL equivalent; \
                 exclude the table or change the column's type on the source",
                    column.name, schema.id, column.type_name
                ),
            })?;
        column.type_oid = 0;
    }
    out.user_types.clear();
    out.dialect = Dialect::Postgres;
    Ok(Arc::new(out))
}

/// The PostgreSQL type of a logical type, as `format_type` prints it (so a table Ferry
/// created compares equal to the source's shape); `None` for [`LogicalType::Other`].
pub(crate) fn postgres_type(logical: &LogicalType) -> Option<String> {
    Some(match logical {
        LogicalType::Bool => "boolean".into(),
        LogicalType::Int { bits: 16 } => "smallint".into(),
        LogicalType::Int { bits: 32 } => "integer".into(),
        LogicalType::Int { .. } => "bigint".into(),
        LogicalType::Decimal {
            precision: Some(p),
            scale,
        } => format!("numeric({p},{})", scale.unwrap_or(0)),
        LogicalType::Decimal { .. } => "numeric".into(),
        LogicalType::Float { bits: 32 } => "real".into(),
        LogicalType::Float { .. } => "double precision".into(),
        LogicalType::Text | LogicalType::Enum => "text".into(),
        LogicalType::Bytes => "bytea".into(),
        LogicalType::Date => "date".into(),
        LogicalType::Time { tz: false } => "time without time zone".into(),
        LogicalType::Time { tz: true } => "time with time zone".into(),
        LogicalType::Timestamp { tz: false } => "timestamp without time zone".into(),
        LogicalType::Timestamp { tz: true } => "timestamp with time zone".into(),
        LogicalType::Interval => "interval".into(),
        LogicalType::Json => "jsonb".into(),
        LogicalType::Uuid => "uuid".into(),
        LogicalType::Array(element) => format!("{}[]", postgres_type(element)?),
        LogicalType::Other { .. } => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logical_types_print_as_format_type_does() {
        let unsigned = LogicalType::Decimal {
            precision: Some(20),
            scale: Some(0),
        };
        assert_eq!(postgres_type(&unsigned).unwrap(), "numeric(20,0)");
        assert_eq!(
            postgres_type(&LogicalType::Timestamp { tz: true }).unwrap(),
            "timestamp with time zone"
        );
        assert_eq!(
            postgres_type(&LogicalType::Array(Box::new(LogicalType::Int { bits: 32 }))).unwrap(),
            "integer[]"
        );
        assert!(postgres_type(&LogicalType::default()).is_none());
    }
}
