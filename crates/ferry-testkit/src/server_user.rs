//! The operating-system account that runs server processes.
//!
//! Database servers refuse to run as root (`initdb: cannot be run as root`). When the test
//! process is root — the usual case in CI containers — servers run as an unprivileged account
//! instead: the `postgres` system user if it exists, else `nobody`. Otherwise they run as the
//! current user and nothing changes.
//!
//! Invariant: every file a server must read or write lives under a directory that
//! [`ServerUser::give`] has handed to that account; the test process itself keeps root's
//! rights, so it can still read logs and delete the directory afterwards.

use std::os::unix::fs::chown;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;
use std::{fs, io};

/// Accounts tried, in order, when the test process runs as root.
const CANDIDATE_ACCOUNTS: &[&str] = &["postgres", "nobody"];

/// An unprivileged account that server processes switch to before `exec`.
#[derive(Debug)]
pub(crate) struct ServerUser {
    name: String,
    uid: u32,
    gid: u32,
}

impl ServerUser {
    /// The account servers must run as, or `None` to run them as the current user.
    ///
    /// Panics when running as root and no candidate account exists.
    pub(crate) fn current() -> Option<&'static ServerUser> {
        static USER: OnceLock<Option<ServerUser>> = OnceLock::new();
        USER.get_or_init(|| {
            // SAFETY: geteuid has no preconditions, touches no memory and cannot fail.
            if unsafe { libc::geteuid() } != 0 {
                return None;
            }
            let passwd = fs::read_to_string("/etc/passwd").unwrap_or_default();
            let user = CANDIDATE_ACCOUNTS
                .iter()
                .find_map(|name| lookup(&passwd, name))
                .unwrap_or_else(|| {
                    panic!(
                        "running as root, and none of the accounts {CANDIDATE_ACCOUNTS:?} exists \
                         to run database servers as; create one (`useradd --system postgres`) \
                         or run the tests as an unprivileged user"
                    )
                });
            Some(user)
        })
        .as_ref()
    }

    /// Makes `command` switch to this account (uid, gid, no supplementary groups) before exec.
    pub(crate) fn apply(&self, command: &mut Command) {
        // std drops supplementary groups itself when a uid is set and no groups were given.
        command.uid(self.uid).gid(self.gid);
    }

    /// Hands `path` to this account, so a server running as it can read and write there.
    pub(crate) fn give(&self, path: &Path) -> io::Result<()> {
        chown(path, Some(self.uid), Some(self.gid))
    }

    /// The account's login name, for error messages.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }
}

/// Finds `name` in the text of an `/etc/passwd` file (`name:x:uid:gid:gecos:home:shell`).
fn lookup(passwd: &str, name: &str) -> Option<ServerUser> {
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        if fields.next()? != name {
            return None;
        }
        let _password = fields.next()?;
        let uid = fields.next()?.parse().ok()?;
        let gid = fields.next()?.parse().ok()?;
        Some(ServerUser {
            name: name.to_owned(),
            uid,
            gid,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/bash\n\
                          nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n\
                          postgres:x:101:104:PostgreSQL administrator:/var/lib/postgresql:/bin/bash\n";

    #[test]
    fn lookup_reads_uid_and_gid() {
        let user = lookup(PASSWD, "postgres").expect("postgres is in the sample");
        assert_eq!((user.name(), user.uid, user.gid), ("postgres", 101, 104));
        let user = lookup(PASSWD, "nobody").expect("nobody is in the sample");
        assert_eq!((user.uid, user.gid), (65534, 65534));
    }

    #[test]
    fn lookup_ignores_prefixes_and_missing_accounts() {
        assert!(lookup(PASSWD, "post").is_none());
        assert!(lookup(PASSWD, "mysql").is_none());
        assert!(lookup("broken-line", "broken-line").is_none());
    }
}
