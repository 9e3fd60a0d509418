//! MySQL and MariaDB for Ferry: a source that reads the row binlog and a sink that writes
//! tables, behind the connector traits of `ferry-core`.
//!
//! A MySQL database is the schema: table rules read `database.table`, and a target table
//! lands in the database named by its schema (created when missing). Every session Ferry
//! opens is pinned to time zone UTC ([`connect`]), so TIMESTAMP values are exact whatever
//! the server's `time_zone`.
//!
//! The project tests against MariaDB (Debian ships it, not Oracle MySQL) and builds to the
//! MySQL 8 protocol where the two agree; `docs/types.md` says where they differ.

pub mod connect;
pub mod sink;
pub mod source;
