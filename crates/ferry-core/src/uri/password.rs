//! Where a URI's password comes from: inline, or by reference so that it is never stored.
//!
//! A password may be given exactly one way:
//!
//! | form | example | resolved |
//! |---|---|---|
//! | userinfo | `postgres://app:pw@h/db` | as given |
//! | query parameter (libpq) | `postgres://app@h/db?password=pw` | as given |
//! | [`PASSWORD_FILE`] | `?password_file=/run/secrets/pg` | the file, read at every connect, one trailing line break dropped |
//! | [`PASSWORD_ENV`] | `?password_env=PG_PASSWORD` | that variable of the Ferry server's process, at every connect |
//!
//! Two forms at once are refused when the URI is parsed ([`check_password_forms`]), so no
//! precedence rule can surprise anyone. A reference is resolved by
//! [`super::ConnectionUri::password`]; its errors name the file or variable, never a value.

use std::path::{Path, PathBuf};

use super::UriError;

/// Query parameter naming a file that holds the password (read by the Ferry server).
pub const PASSWORD_FILE: &str = "password_file";
/// Query parameter naming an environment variable of the Ferry server that holds the
/// password.
pub const PASSWORD_ENV: &str = "password_env";

/// How a URI gives its password.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PasswordSource {
    /// No password (trust, peer or certificate authentication, or a `.pgpass` elsewhere).
    None,
    /// In the URI itself (userinfo or `?password=`); stored, encrypted at rest.
    Inline(String),
    /// `password_file=`: this file on the Ferry server.
    File(PathBuf),
    /// `password_env=`: this environment variable of the Ferry server.
    Env(String),
}

/// A password reference that cannot be resolved. Names the file or variable, never a value.
#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    /// The file cannot be read.
    #[error("cannot read password_file {path}")]
    FileUnreadable {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file holds nothing but a line break.
    #[error("password_file {path} is empty")]
    FileEmpty {
        /// The file.
        path: PathBuf,
    },
    /// The variable is not set (or is empty) in the Ferry server's environment.
    #[error("environment variable {var} (password_env) is not set on the Ferry server")]
    EnvUnset {
        /// The variable.
        var: String,
    },
    /// The variable's value is not UTF-8.
    #[error("environment variable {var} (password_env) is not valid UTF-8")]
    EnvNotUnicode {
        /// The variable.
        var: String,
    },
}

/// Refuses a URI that gives its password more than one way, or a malformed reference.
/// `userinfo` says whether the URI has a password before `@`; `params` are its decoded query
/// parameters.
pub(super) fn check_password_forms(
    userinfo: bool,
    params: &[(String, String)],
) -> Result<(), UriError> {
    let mut forms: Vec<&str> = Vec::new();
    if userinfo {
        forms.push("a password before '@'");
    }
    for (key, value) in params {
        let form = match key.as_str() {
            "password" => "password=",
            PASSWORD_FILE => {
                if !Path::new(value).is_absolute() {
                    return Err(UriError::PasswordReference {
                        reason: "password_file must be an absolute path (it is read by the Ferry \
                                 server, whose working directory is not yours)"
                            .into(),
                    });
                }
                "password_file="
            }
            PASSWORD_ENV => {
                if value.is_empty() {
                    return Err(UriError::PasswordReference {
                        reason: "password_env must name an environment variable".into(),
                    });
                }
                "password_env="
            }
            _ => continue,
        };
        forms.push(form);
    }
    if forms.len() > 1 {
        return Err(UriError::PasswordReference {
            reason: format!(
                "the password is given more than once ({}); give it one way",
                forms.join(", ")
            ),
        });
    }
    Ok(())
}

/// Reads a `password_file`: its content without one trailing line break (`\n` or `\r\n`).
pub(super) fn read_password_file(path: &Path) -> Result<String, PasswordError> {
    let text = std::fs::read_to_string(path).map_err(|source| PasswordError::FileUnreadable {
        path: path.to_path_buf(),
        source,
    })?;
    let password = text
        .strip_suffix('\n')
        .map(|t| t.strip_suffix('\r').unwrap_or(t))
        .unwrap_or(&text);
    if password.is_empty() {
        return Err(PasswordError::FileEmpty {
            path: path.to_path_buf(),
        });
    }
    Ok(password.to_string())
}

/// Reads a `password_env` variable of this process.
pub(super) fn read_password_env(var: &str) -> Result<String, PasswordError> {
    match std::env::var(var) {
        Ok(value) if !value.is_empty() => Ok(value),
        Ok(_) | Err(std::env::VarError::NotPresent) => Err(PasswordError::EnvUnset {
            var: var.to_string(),
        }),
        Err(std::env::VarError::NotUnicode(_)) => Err(PasswordError::EnvNotUnicode {
            var: var.to_string(),
        }),
    }
}
