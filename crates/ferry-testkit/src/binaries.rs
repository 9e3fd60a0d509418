//! What the servers started from Debian's packages share: finding their binaries and a
//! free loopback port.

use std::net::TcpListener;
use std::path::{Path, PathBuf};

/// A free `127.0.0.1` port (it may be taken again before the server binds it: callers
/// retry on another).
pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind a free loopback port")
}

/// Binary `name`, looked up on `PATH`, then in `/usr/sbin` and `/usr/bin`; panics naming
/// Debian `package` (which `scripts/setup` installs) when it is missing.
pub(crate) fn find_binary(name: &str, package: &str) -> PathBuf {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")])
        .map(|dir| dir.join(name))
        .find(|p| Path::is_file(p))
        .unwrap_or_else(|| {
            panic!("{name} not found: install Debian's {package} package (scripts/setup)")
        })
}
