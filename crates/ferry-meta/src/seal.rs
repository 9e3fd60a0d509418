//! Encryption at rest: the secret key file and sealed documents.
//!
//! Every document the store holds is sealed with ChaCha20-Poly1305 (ring's AEAD) under a
//! 256-bit key kept in a separate file, so that a copy of the data directory alone (a
//! backup, a volume snapshot, a support bundle) reveals no password. A sealed value is
//!
//! ```text
//! MAGIC "FSv1" (4 bytes) ─ nonce (12 bytes, fresh random per value) ─ ciphertext ─ tag (16)
//! ```
//!
//! and is bound to its place (`collection/key` as associated data), so a sealed value moved
//! to another key does not open. A JSON document never starts with `F`, which tells sealed
//! values from the plaintext documents of stores written before encryption existed.
//!
//! The key file holds 64 hexadecimal digits and a line break. It is generated on first
//! start (mode 0600, never overwritten); a key that does not open the store's check value is
//! refused at startup, before any document is read.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};

/// Leads every sealed value.
pub(crate) const MAGIC: &[u8; 4] = b"FSv1";
/// Key length of ChaCha20-Poly1305, in bytes.
const KEY_LEN: usize = 32;

/// A key file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// The file cannot be read or created.
    #[error("cannot {action} the secret key file {path}")]
    Io {
        /// `read` or `create`.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file does not hold a key.
    #[error("the secret key file {path} does not hold a Ferry key (64 hexadecimal digits)")]
    Malformed {
        /// The file.
        path: PathBuf,
    },
    /// Other users may read the file.
    #[error(
        "the secret key file {path} is accessible to other users (mode {mode:04o}); \
         run chmod 600 on it"
    )]
    TooOpen {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
}

/// The key documents are sealed with. Never printed.
pub struct SecretKey {
    key: LessSafeKey,
    path: PathBuf,
    generated: bool,
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretKey({})", self.path.display())
    }
}

impl SecretKey {
    /// Reads the key in `path`.
    pub fn load(path: &Path) -> Result<Self, KeyFileError> {
        let io = |source| KeyFileError::Io {
            action: "read",
            path: path.to_path_buf(),
            source,
        };
        let mode = std::fs::metadata(path).map_err(io)?.permissions().mode() & 0o777;
        if mode & 0o007 != 0 {
            return Err(KeyFileError::TooOpen {
                path: path.to_path_buf(),
                mode,
            });
        }
        let text = std::fs::read_to_string(path).map_err(io)?;
        let bytes = decode_hex(text.trim()).ok_or_else(|| KeyFileError::Malformed {
            path: path.to_path_buf(),
        })?;
        Ok(SecretKey::new(&bytes, path, false))
    }

    /// Generates a new key into `path` (which must not exist), mode 0600, synced to disk.
    pub fn generate(path: &Path) -> Result<Self, KeyFileError> {
        let io = |source| KeyFileError::Io {
            action: "create",
            path: path.to_path_buf(),
            source,
        };
        let mut bytes = [0u8; KEY_LEN];
        SystemRandom::new()
            .fill(&mut bytes)
            .map_err(|_| io(std::io::Error::other("the system random generator failed")))?;
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(io)?;
        }
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(io)?;
        file.write_all(format!("{}\n", encode_hex(&bytes)).as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(io)?;
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            crate::files::sync_dir(parent).map_err(io)?;
        }
        Ok(SecretKey::new(&bytes, path, true))
    }

    fn new(bytes: &[u8; KEY_LEN], path: &Path, generated: bool) -> Self {
        let key = UnboundKey::new(&CHACHA20_POLY1305, bytes).expect("a 32-byte key fits");
        SecretKey {
            key: LessSafeKey::new(key),
            path: path.to_path_buf(),
            generated,
        }
    }

    /// The key file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether this process generated the key (first start).
    pub fn generated(&self) -> bool {
        self.generated
    }

    /// `plaintext` sealed for the place `aad` (`collection/key`).
    pub(crate) fn seal(&self, aad: &str, plaintext: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .expect("the system random generator works (it did when the key was made)");
        let mut in_out = plaintext.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad.as_bytes()),
                &mut in_out,
            )
            .expect("ChaCha20-Poly1305 seals any document size the store holds");
        let mut sealed = Vec::with_capacity(MAGIC.len() + NONCE_LEN + in_out.len());
        sealed.extend_from_slice(MAGIC);
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(&in_out);
        sealed
    }

    /// The plaintext of `sealed`, if it was sealed with this key for the place `aad`.
    pub(crate) fn open(&self, aad: &str, sealed: &[u8]) -> Option<Vec<u8>> {
        let rest = sealed.strip_prefix(MAGIC.as_slice())?;
        if rest.len() < NONCE_LEN {
            return None;
        }
        let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut in_out = ciphertext.to_vec();
        let plaintext = self
            .key
            .open_in_place(nonce, Aad::from(aad.as_bytes()), &mut in_out)
            .ok()?;
        Some(plaintext.to_vec())
    }
}

/// Whether `value` is sealed (rather than a plaintext document of an older store).
pub(crate) fn is_sealed(value: &[u8]) -> bool {
    value.starts_with(MAGIC)
}

fn encode_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn decode_hex(text: &str) -> Option<[u8; KEY_LEN]> {
    if text.len() != KEY_LEN * 2 || !text.is_ascii() {
        return None;
    }
    let mut out = [0u8; KEY_LEN];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seals_and_opens_in_place_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        let key = SecretKey::generate(&path).unwrap();
        assert!(key.generated());
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let a = key.seal("changefeeds/default/a", b"{\"pw\":\"sentinel\"}");
        let b = key.seal("changefeeds/default/a", b"{\"pw\":\"sentinel\"}");
        assert_ne!(a, b, "a fresh nonce per value");
        assert!(is_sealed(&a));
        assert!(!a.windows(8).any(|w| w == b"sentinel"));
        assert_eq!(
            key.open("changefeeds/default/a", &a).unwrap(),
            b"{\"pw\":\"sentinel\"}"
        );
        assert!(
            key.open("changefeeds/default/b", &a).is_none(),
            "bound to its key"
        );

        let reloaded = SecretKey::load(&path).unwrap();
        assert!(!reloaded.generated());
        assert!(reloaded.open("changefeeds/default/a", &a).is_some());
        let other = SecretKey::generate(&dir.path().join("other")).unwrap();
        assert!(other.open("changefeeds/default/a", &a).is_none());
        assert!(SecretKey::generate(&path).is_err(), "never overwritten");
    }

    #[test]
    fn refuses_bad_key_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        std::fs::write(&path, "not a key\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(matches!(
            SecretKey::load(&path),
            Err(KeyFileError::Malformed { .. })
        ));
        std::fs::write(&path, format!("{}\n", "ab".repeat(32))).unwrap();
        assert!(SecretKey::load(&path).is_ok());
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = SecretKey::load(&path).unwrap_err();
        assert!(err.to_string().contains("mode 0644"), "{err}");
    }
}
