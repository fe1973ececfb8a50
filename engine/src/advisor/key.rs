//! The advisor's API key: where it is read from, and the key itself, which is never shown.
//!
//! A policy names a file (a mounted Secret) or an environment variable, never the key. The key
//! is read when a call is made, so a rotated Secret is picked up without a restart; it goes
//! into the `Authorization` header (marked sensitive) and nowhere else. [`ApiKey`]'s `Debug`
//! prints `<redacted>`, it has no `Display`, and [`ApiKey::redact`] scrubs it from any text the
//! endpoint sends back before that text can reach an error or a log.

use std::fmt;
use std::io::Read;
use std::path::PathBuf;

/// The largest key file read (a key is a few hundred bytes; this refuses a wrong path to a
/// big file).
const MAX_KEY_FILE: u64 = 16 * 1024;

/// Where the API key is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiKeySource {
    /// A file holding the key (surrounding whitespace and newlines are trimmed).
    File(PathBuf),
    /// An environment variable holding the key.
    Env(String),
}

impl fmt::Display for ApiKeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApiKeySource::File(path) => write!(f, "file {}", path.display()),
            ApiKeySource::Env(name) => write!(f, "environment variable {name}"),
        }
    }
}

/// Why the key could not be read. No variant carries any of the key's text.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The file could not be read.
    #[error("cannot read the API key file {}", path.display())]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The variable is not set, or not valid Unicode.
    #[error("the API key variable {0} is not set")]
    Unset(String),
    /// The source holds nothing but whitespace.
    #[error("the API key in the {0} is empty")]
    Empty(ApiKeySource),
    /// The key has characters an HTTP header cannot carry.
    #[error("the API key in the {0} has characters an HTTP header cannot carry")]
    NotHeaderSafe(ApiKeySource),
}

impl ApiKeySource {
    /// Reads the key now.
    pub fn read(&self) -> Result<ApiKey, KeyError> {
        let text = match self {
            ApiKeySource::File(path) => {
                read_limited(path).map_err(|source| KeyError::Unreadable {
                    path: path.clone(),
                    source,
                })?
            }
            ApiKeySource::Env(name) => {
                std::env::var(name).map_err(|_| KeyError::Unset(name.clone()))?
            }
        };
        let key = text.trim();
        if key.is_empty() {
            return Err(KeyError::Empty(self.clone()));
        }
        if !key.bytes().all(|b| b.is_ascii_graphic() || b == b' ') {
            return Err(KeyError::NotHeaderSafe(self.clone()));
        }
        Ok(ApiKey(key.to_string()))
    }
}

fn read_limited(path: &std::path::Path) -> std::io::Result<String> {
    let file = std::fs::File::open(path)?;
    let mut text = String::new();
    file.take(MAX_KEY_FILE + 1).read_to_string(&mut text)?;
    if text.len() as u64 > MAX_KEY_FILE {
        return Err(std::io::Error::other(format!(
            "more than {MAX_KEY_FILE} bytes: not a key file"
        )));
    }
    Ok(text)
}

/// An API key. Its `Debug` is `ApiKey(<redacted>)`; it has no `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    /// The key's text, for the one place that sends it: the `Authorization` header.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// `text` with every occurrence of the key replaced by `<redacted>` (an endpoint that
    /// echoes the request, or a proxy's error page, must not leak it into an error).
    pub fn redact(&self, text: &str) -> String {
        text.replace(&self.0, "<redacted>")
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_file_is_trimmed_and_the_key_never_shown() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("key");
        std::fs::write(&path, "  sk-secret-123\n").expect("write");
        let key = ApiKeySource::File(path).read().expect("read");
        assert_eq!(key.expose(), "sk-secret-123");
        assert_eq!(format!("{key:?}"), "ApiKey(<redacted>)");
        assert_eq!(
            key.redact("invalid key sk-secret-123 (sk-secret-123)"),
            "invalid key <redacted> (<redacted>)"
        );
    }

    #[test]
    fn missing_empty_and_unsendable_keys_are_errors_that_do_not_show_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = ApiKeySource::File(dir.path().join("nope")).read();
        assert!(
            matches!(missing, Err(KeyError::Unreadable { .. })),
            "{missing:?}"
        );
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "\n \n").expect("write");
        let error = ApiKeySource::File(empty).read().expect_err("empty");
        assert!(
            error.to_string().starts_with("the API key in the file "),
            "{error}"
        );
        let bad = dir.path().join("bad");
        std::fs::write(&bad, "sk-\u{7}bell").expect("write");
        let error = ApiKeySource::File(bad).read().expect_err("not header-safe");
        assert!(!format!("{error} {error:?}").contains("bell"), "{error:?}");
        let unset = ApiKeySource::Env("SALVE_TEST_NO_SUCH_VARIABLE_5c1d".into()).read();
        assert_eq!(
            unset.expect_err("unset").to_string(),
            "the API key variable SALVE_TEST_NO_SUCH_VARIABLE_5c1d is not set"
        );
    }

    #[test]
    fn a_huge_file_is_not_taken_for_a_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("big");
        std::fs::write(&path, "x".repeat(20_000)).expect("write");
        let error = ApiKeySource::File(path).read().expect_err("too big");
        assert!(
            crate::diagnostic::chain(&error).contains("not a key file"),
            "{error}"
        );
    }
}
