//! Finding the PostgreSQL server binaries on this machine.
//!
//! Debian installs servers under `/usr/lib/postgresql/<major>/bin` and puts only client tools
//! on `PATH`; `/usr/bin/pg_config` may report `/usr/bin`, which has `psql` but no `initdb`.
//! So a candidate counts only if it holds `initdb`. Order: `pg_config --bindir`, then the
//! PostgreSQL 15 Debian directory, then the newest `/usr/lib/postgresql/*/bin`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// Where Debian's `postgresql-15` package puts the server binaries.
const DEBIAN_PG15_BIN_DIR: &str = "/usr/lib/postgresql/15/bin";

/// Parent of Debian's per-major-version installations.
const DEBIAN_PG_ROOT: &str = "/usr/lib/postgresql";

/// The directory holding `initdb`, `postgres`, `psql` and `pgbench`.
///
/// Looked up once per process. Panics with an install hint when no server is installed.
pub fn pg_bin_dir() -> PathBuf {
    static BIN_DIR: OnceLock<PathBuf> = OnceLock::new();
    BIN_DIR
        .get_or_init(|| {
            find_bin_dir().unwrap_or_else(|| {
                panic!(
                    "no PostgreSQL server binaries found (no initdb in `pg_config --bindir`, \
                     {DEBIAN_PG15_BIN_DIR} or {DEBIAN_PG_ROOT}/*/bin); run `scripts/setup` or \
                     `apt-get install postgresql-15 postgresql-client-15`"
                )
            })
        })
        .clone()
}

fn find_bin_dir() -> Option<PathBuf> {
    pg_config_bin_dir()
        .filter(|dir| has_initdb(dir))
        .or_else(|| Some(PathBuf::from(DEBIAN_PG15_BIN_DIR)).filter(|dir| has_initdb(dir)))
        .or_else(newest_debian_bin_dir)
}

fn pg_config_bin_dir() -> Option<PathBuf> {
    let output = Command::new("pg_config").arg("--bindir").output().ok()?;
    if !output.status.success() {
        return None;
    }
    let dir = String::from_utf8(output.stdout).ok()?;
    Some(PathBuf::from(dir.trim()))
}

/// The highest-numbered `/usr/lib/postgresql/<major>/bin` that holds `initdb`.
fn newest_debian_bin_dir() -> Option<PathBuf> {
    std::fs::read_dir(DEBIAN_PG_ROOT)
        .ok()?
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let major: u32 = entry.file_name().to_str()?.parse().ok()?;
            let dir = entry.path().join("bin");
            has_initdb(&dir).then_some((major, dir))
        })
        .max_by_key(|(major, _)| *major)
        .map(|(_, dir)| dir)
}

fn has_initdb(dir: &Path) -> bool {
    dir.join("initdb").is_file()
}
