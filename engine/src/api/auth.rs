//! Who may answer an approval, and how they prove it.
//!
//! Approving a step lets Salve do what its policy would not do alone, so every answer is
//! authenticated and records who gave it. [`Approvers`] is the one place that decides: today a
//! token file (outside a cluster); a Kubernetes variant (TokenReview, then a
//! SubjectAccessReview on a `salve.dev` verb) slots in beside it. With nothing configured,
//! every answer is refused: the API is never open by default.

use std::fmt;
use std::path::Path;

use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

/// Tokens shorter than this are refused when the file is read: they could be guessed.
pub const MIN_TOKEN_LEN: usize = 16;

/// Who may answer approvals.
#[derive(Debug, Default)]
pub enum Approvers {
    /// No way to authenticate is configured: every answer gets 403, saying how to configure one.
    #[default]
    Unconfigured,
    /// `Authorization: Bearer <token>` with a token from a token file; the approver is the
    /// token's name.
    Tokens(Tokens),
}

/// A person (or system) whose answer counts, as authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Approver {
    /// The name recorded with the answer.
    pub name: String,
}

/// Why a request may not answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No way to authenticate is configured (403).
    Unconfigured,
    /// No bearer token was given (401).
    Missing,
    /// The token is not one of the configured ones (401).
    Wrong,
}

impl Approvers {
    /// Who `headers` prove to be, or why they prove nothing.
    pub async fn authenticate(&self, headers: &HeaderMap) -> Result<Approver, Refusal> {
        match self {
            Approvers::Unconfigured => Err(Refusal::Unconfigured),
            Approvers::Tokens(tokens) => {
                let token = bearer(headers).ok_or(Refusal::Missing)?;
                tokens
                    .find(token)
                    .map(|name| Approver {
                        name: name.to_string(),
                    })
                    .ok_or(Refusal::Wrong)
            }
        }
    }
}

impl Refusal {
    /// The HTTP status it answers with.
    pub fn status(self) -> StatusCode {
        match self {
            Refusal::Unconfigured => StatusCode::FORBIDDEN,
            Refusal::Missing | Refusal::Wrong => StatusCode::UNAUTHORIZED,
        }
    }

    /// What it says.
    pub fn message(self) -> &'static str {
        match self {
            Refusal::Unconfigured => {
                "answering approvals over the API is not configured: start salve with \
                 --api-token-file FILE (lines `TOKEN NAME`) and send `Authorization: Bearer TOKEN`"
            }
            Refusal::Missing => "a bearer token is required (Authorization: Bearer ...)",
            Refusal::Wrong => "the bearer token is not valid",
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let mut response = super::error(self.status(), self.message());
        if self.status() == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

/// The token in `Authorization: Bearer <token>`.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The tokens of a token file: one `TOKEN NAME` per line (NAME is who answers with it; blank
/// lines and `#` comments are skipped). Only their SHA-256 digests are kept, and a token is
/// looked up by comparing digests in constant time, so neither the time taken nor a memory
/// dump tells a token.
#[derive(Clone)]
pub struct Tokens {
    entries: Vec<([u8; 32], String)>,
}

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.entries.iter().map(|(_, n)| n.as_str()).collect();
        f.debug_struct("Tokens").field("names", &names).finish()
    }
}

impl Tokens {
    /// Reads the token file at `path`.
    pub fn read(path: &Path) -> super::Result<Self> {
        let fail = |reason: String| super::Error::TokenFile {
            path: path.to_path_buf(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
        Tokens::parse(&text).map_err(fail)
    }

    /// Parses a token file's text; the error names the line that is wrong.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut entries: Vec<([u8; 32], String)> = Vec::new();
        for (index, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let number = index + 1;
            let Some((token, name)) = line.split_once(char::is_whitespace) else {
                return Err(format!(
                    "line {number}: expected `TOKEN NAME` (the name is recorded with each answer)"
                ));
            };
            if token.len() < MIN_TOKEN_LEN {
                return Err(format!(
                    "line {number}: the token is shorter than {MIN_TOKEN_LEN} characters"
                ));
            }
            let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
            if entries.iter().any(|(d, _)| *d == digest) {
                return Err(format!("line {number}: the same token is given twice"));
            }
            entries.push((digest, name.trim().to_string()));
        }
        if entries.is_empty() {
            return Err("no tokens: expected lines `TOKEN NAME`".into());
        }
        Ok(Tokens { entries })
    }

    /// The name of `token`, if it is one of these. Every entry is compared, each in constant
    /// time.
    pub fn find(&self, token: &str) -> Option<&str> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let mut found = None;
        for (expected, name) in &self.entries {
            if constant_time_eq(&digest, expected) {
                found = Some(name.as_str());
            }
        }
        found
    }
}

/// Compares without returning early.
fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str =
        "# who may approve\n0123456789abcdef-ana ana\n\nfedcba9876543210-bob  Bob Builder \n";

    fn headers(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            value.parse().expect("a header value"),
        );
        headers
    }

    #[test]
    fn a_token_file_names_who_answers() {
        let tokens = Tokens::parse(FILE).expect("valid");
        assert_eq!(tokens.find("0123456789abcdef-ana"), Some("ana"));
        assert_eq!(tokens.find("fedcba9876543210-bob"), Some("Bob Builder"));
        assert_eq!(tokens.find("0123456789abcdef-an"), None);
        assert!(!format!("{tokens:?}").contains("0123"), "no token in Debug");
    }

    #[test]
    fn a_bad_token_file_says_which_line() {
        let error = |text: &str| Tokens::parse(text).expect_err("invalid");
        assert!(error("").contains("no tokens"));
        assert!(error("# only\n0123456789abcdef\n").starts_with("line 2:"));
        assert!(error("short ana\n").contains("shorter than 16"));
        assert!(error("0123456789abcdef a\n0123456789abcdef b\n").contains("twice"));
    }

    #[tokio::test]
    async fn answers_need_a_configured_way_and_a_valid_token() {
        let unconfigured = Approvers::Unconfigured;
        assert_eq!(
            unconfigured
                .authenticate(&headers("Bearer 0123456789abcdef-ana"))
                .await,
            Err(Refusal::Unconfigured)
        );
        let tokens = Approvers::Tokens(Tokens::parse(FILE).expect("valid"));
        assert_eq!(
            tokens.authenticate(&HeaderMap::new()).await,
            Err(Refusal::Missing)
        );
        assert_eq!(
            tokens.authenticate(&headers("Basic YW5hOnB3")).await,
            Err(Refusal::Missing)
        );
        assert_eq!(
            tokens.authenticate(&headers("Bearer nope")).await,
            Err(Refusal::Wrong)
        );
        assert_eq!(
            tokens
                .authenticate(&headers("bearer 0123456789abcdef-ana"))
                .await,
            Ok(Approver { name: "ana".into() })
        );
        assert_eq!(Refusal::Unconfigured.status(), StatusCode::FORBIDDEN);
        assert_eq!(Refusal::Wrong.status(), StatusCode::UNAUTHORIZED);
    }
}
