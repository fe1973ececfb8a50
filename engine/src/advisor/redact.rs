//! Redaction of everything the advisor is sent: secrets and personal data in text become typed
//! placeholders such as `[REDACTED:bearer]`, `[REDACTED:email]` or `[REDACTED:policy-1]`, and
//! what was redacted is counted by [`Kind`] for the journal.
//!
//! A [`Redactor`] applies, in this order:
//!
//! 1. the policy's own patterns (`advisor.redact`), on the text as it came, each match replaced
//!    whole by `[REDACTED:policy-N]` (N counts from 1 in the policy's list);
//! 2. PEM private key blocks (an unterminated one, as a cut log leaves it, up to the end);
//! 3. credentials in URLs (`scheme://user:pass@host`: the user info goes, the host stays);
//! 4. `Authorization:`/`Proxy-Authorization:` and `Cookie:`/`Set-Cookie:` header values;
//! 5. `aws_secret_access_key=...`, JWTs, GitHub (`ghp_`, `github_pat_`...), Slack (`xoxb-`,
//!    `xoxp-`..., webhook URLs) and API keys (`sk-`, `sk_live_`, `AIza`), AWS access key ids
//!    (`AKIA...`), `Bearer` tokens;
//! 6. assignments whose key names a password, API key, secret or token — `password=...`,
//!    `db_passwd: ...`, `"apiKey": "..."`, `client_secret='...'`, `?access_token=...&`, also
//!    inside escaped JSON (`\"token\": \"...\"`): the key stays, the value goes;
//! 7. email addresses, then IPv6 and IPv4 addresses.
//!
//! Each step sees the text as the steps before left it, so a more specific step names the
//! kind (`token: [REDACTED:jwt]`, not `token: [REDACTED:token]`) and no placeholder is
//! redacted twice.
//!
//! Decisions worth knowing:
//!
//! - **Over-redaction is the safe side.** A key that merely looks secret (`max_tokens: 1000`,
//!   `secretName: db-creds`) loses its value; a header written as prose (`authorization:
//!   denied`) loses the rest of its line. The advisor reasons without those; a leaked
//!   credential cannot be taken back.
//! - **A dotted quad is an address.** `1.2.3.4` is redacted even when it is really a version,
//!   since the two cannot be told apart. Left alone: `v1.2.3.4` (part of a word), `1.2.3.4.5`
//!   (a fifth part), `1.2.3.256` (an octet over 255), `10.0.1` (three parts). Loopback and
//!   private addresses are redacted too. For IPv6, a candidate must parse as an address and
//!   stand apart from words: `std::io::Error` and `12:34:56` are left alone, and so is a bare
//!   `::`.
//! - **A word without a value stays.** `password`, `the password is wrong`, `token expired`,
//!   `a bearer token` and `password: ""` have nothing to redact; neither do `null`, `true` or
//!   `false` values, `***`, or a placeholder.
//! - **Not recognised:** a secret with nothing around it that says so (a bare 40-character AWS
//!   secret key, an opaque token outside a header or assignment), and `--password value`
//!   written with a space. Name such shapes in the policy's `redact:` list.
//!
//! [`Redactor::redact_json`] walks a JSON value: every string at any depth (object keys too) is
//! redacted as text, and the value under a secret-looking key (`password`, `apiKey`,
//! `client_secret`, `token`, `authorization`, `cookie`, `auth`...) is replaced whole by its
//! placeholder, whatever it is, except `null`, booleans and empty strings.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv6Addr;
use std::ops::Range;
use std::sync::LazyLock;

use regex::{Captures, Regex, RegexBuilder};
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::Value;

/// The longest pattern a policy may name, in bytes.
pub const MAX_PATTERN_BYTES: usize = 1024;

/// The most memory one compiled policy pattern may take, in bytes (the `regex` crate's size
/// limit), so that a pattern such as `\w{1000}{1000}` is refused at load time.
pub const MAX_COMPILED_BYTES: usize = 1 << 20;

/// Why a policy pattern was refused. Messages never quote the pattern: a policy may list a
/// literal secret to redact, and the message would show it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Longer than [`MAX_PATTERN_BYTES`].
    #[error("the pattern is {len} bytes long, more than the {MAX_PATTERN_BYTES} allowed")]
    TooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// Not a valid regular expression, or larger than [`MAX_COMPILED_BYTES`] once compiled.
    /// The `regex` crate's error is kept as its reason and position only: the crate's full
    /// message quotes the pattern.
    #[error("not a valid regular expression: {reason}")]
    Invalid {
        /// The `regex` crate's reason, with the character it points at when it names one.
        reason: String,
    },
    /// Matches the empty text (such as `\d*` or `a|`), which would redact nothing.
    #[error("the pattern matches empty text")]
    MatchesEmpty,
}

/// The result of compiling a policy pattern.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What a placeholder stands for: `[REDACTED:<kind>]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// A PEM private key block: `private-key`.
    PrivateKey,
    /// The user info of a URL (`user:pass@`): `url-credentials`.
    UrlCredentials,
    /// An `Authorization:` or `Proxy-Authorization:` header value: `authorization`.
    Authorization,
    /// A `Cookie:` or `Set-Cookie:` header value: `cookie`.
    Cookie,
    /// A `Bearer` token outside an `Authorization:` header: `bearer`.
    Bearer,
    /// A JSON Web Token: `jwt`.
    Jwt,
    /// An AWS access key id (`AKIA...`): `aws-key`.
    AwsKey,
    /// An `aws_secret_access_key` value: `aws-secret`.
    AwsSecret,
    /// A GitHub token (`ghp_`, `gho_`, `ghu_`, `ghs_`, `ghr_`, `github_pat_`): `github-token`.
    GithubToken,
    /// A Slack token (`xoxb-`, `xoxp-`...) or webhook URL: `slack-token`.
    SlackToken,
    /// An API key: a known shape (`sk-`, `sk_live_`, `AIza`) or an `api_key`/`access_key`
    /// value: `api-key`.
    ApiKey,
    /// A `password`, `passwd`, `pwd` or `passphrase` value: `password`.
    Password,
    /// A `secret`, `private_key` or `credentials` value: `secret`.
    Secret,
    /// A `token` value: `token`.
    Token,
    /// An email address: `email`.
    Email,
    /// An IPv4 or IPv6 address: `ip`.
    Ip,
    /// A match of the policy's N-th pattern, from 1: `policy-N`.
    Policy(usize),
}

impl Kind {
    /// The placeholder that replaces a secret of this kind: `[REDACTED:email]`.
    pub fn placeholder(self) -> String {
        format!("[REDACTED:{self}]")
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let label = match self {
            Kind::PrivateKey => "private-key",
            Kind::UrlCredentials => "url-credentials",
            Kind::Authorization => "authorization",
            Kind::Cookie => "cookie",
            Kind::Bearer => "bearer",
            Kind::Jwt => "jwt",
            Kind::AwsKey => "aws-key",
            Kind::AwsSecret => "aws-secret",
            Kind::GithubToken => "github-token",
            Kind::SlackToken => "slack-token",
            Kind::ApiKey => "api-key",
            Kind::Password => "password",
            Kind::Secret => "secret",
            Kind::Token => "token",
            Kind::Email => "email",
            Kind::Ip => "ip",
            Kind::Policy(n) => return write!(f, "policy-{n}"),
        };
        f.write_str(label)
    }
}

/// How many secrets of each kind were redacted. Shown as `2 email, 1 bearer` (`nothing` when
/// empty); serialized as a map from kind to count (`{"email": 2, "bearer": 1}`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Redactions(BTreeMap<Kind, usize>);

impl Redactions {
    /// How many of `kind` were redacted.
    pub fn count(&self, kind: Kind) -> usize {
        self.0.get(&kind).copied().unwrap_or(0)
    }

    /// How many were redacted in all.
    pub fn total(&self) -> usize {
        self.0.values().sum()
    }

    /// Whether nothing was redacted.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Each kind redacted, with its count, in [`Kind`]'s order.
    pub fn iter(&self) -> impl Iterator<Item = (Kind, usize)> + '_ {
        self.0.iter().map(|(kind, n)| (*kind, *n))
    }

    /// Adds `other`'s counts to these.
    pub fn merge(&mut self, other: &Redactions) {
        for (kind, n) in other.iter() {
            *self.0.entry(kind).or_default() += n;
        }
    }

    fn add(&mut self, kind: Kind) {
        *self.0.entry(kind).or_default() += 1;
    }
}

impl fmt::Display for Redactions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("nothing");
        }
        for (i, (kind, n)) in self.iter().enumerate() {
            let sep = if i == 0 { "" } else { ", " };
            write!(f, "{sep}{n} {kind}")?;
        }
        Ok(())
    }
}

impl Serialize for Redactions {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (kind, n) in self.iter() {
            map.serialize_entry(&kind.to_string(), &n)?;
        }
        map.end()
    }
}

/// A regular expression from a policy's `redact:` list, checked and compiled. Its `Debug`
/// does not show it (it may be a literal secret).
#[derive(Clone)]
pub struct Pattern {
    regex: Regex,
}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Pattern(<hidden>)")
    }
}

impl Pattern {
    /// Compiles `source` (the `regex` crate's syntax; `(?i)` for case-insensitive). Refused:
    /// longer than [`MAX_PATTERN_BYTES`], larger than [`MAX_COMPILED_BYTES`] once compiled,
    /// invalid, or matching empty text.
    pub fn new(source: &str) -> Result<Pattern> {
        if source.len() > MAX_PATTERN_BYTES {
            return Err(Error::TooLong { len: source.len() });
        }
        let regex = RegexBuilder::new(source)
            .size_limit(MAX_COMPILED_BYTES)
            .dfa_size_limit(MAX_COMPILED_BYTES)
            .build()
            .map_err(|e| Error::Invalid {
                reason: describe(&e, source),
            })?;
        if regex.is_match("") {
            return Err(Error::MatchesEmpty);
        }
        Ok(Pattern { regex })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        self.regex.as_str()
    }
}

/// The reason of a `regex` error, without the pattern it quotes: `unclosed group (at
/// character 1)`.
fn describe(error: &regex::Error, source: &str) -> String {
    let regex::Error::Syntax(rendered) = error else {
        // `CompiledTooBig` and whatever later versions add: one line, no pattern.
        return error.to_string().trim_end_matches('.').to_lowercase();
    };
    let reason = rendered
        .lines()
        .rev()
        .find_map(|line| line.strip_prefix("error: "))
        .unwrap_or("syntax error")
        .trim_end_matches('.');
    // A one-line pattern is rendered as `regex parse error:`, the pattern indented by four
    // spaces, then carets under the characters at fault.
    let at = (!source.contains('\n'))
        .then(|| rendered.lines().nth(2))
        .flatten()
        .filter(|carets| carets.trim_start().starts_with('^'))
        .and_then(|carets| carets.find('^'))
        .and_then(|column| column.checked_sub(3));
    match at {
        Some(character) => format!("{reason} (at character {character})"),
        None => reason.to_string(),
    }
}

/// Replaces secrets and personal data with typed placeholders; see the [module
/// documentation](self) for what it finds. Cheap to clone; the built-in patterns are compiled
/// once per process. Its `Debug` shows how many policy patterns it has, not the patterns (a
/// policy may list a literal secret).
#[derive(Clone, Default)]
pub struct Redactor {
    policy: Vec<Pattern>,
}

impl fmt::Debug for Redactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Redactor")
            .field("policy_patterns", &self.policy.len())
            .finish()
    }
}

impl PartialEq for Redactor {
    fn eq(&self, other: &Self) -> bool {
        self.policy
            .iter()
            .map(Pattern::as_str)
            .eq(other.policy.iter().map(Pattern::as_str))
    }
}

impl Redactor {
    /// A redactor with the built-in patterns and `policy`'s, the first being `policy-1`.
    /// [`Redactor::default`] has the built-in patterns only.
    pub fn new(policy: Vec<Pattern>) -> Self {
        Redactor { policy }
    }

    /// The policy's patterns, in order.
    pub fn policy_patterns(&self) -> &[Pattern] {
        &self.policy
    }

    /// `text` with every secret replaced by its placeholder (borrowed when there was none).
    pub fn redact<'t>(&self, text: &'t str) -> Cow<'t, str> {
        self.redact_counting(text, &mut Redactions::default())
    }

    /// [`Redactor::redact`], adding what it replaced to `counts`.
    pub fn redact_counting<'t>(&self, text: &'t str, counts: &mut Redactions) -> Cow<'t, str> {
        let mut out = Cow::Borrowed(text);
        for (i, pattern) in self.policy.iter().enumerate() {
            replace(&pattern.regex, Kind::Policy(i + 1), whole, &mut out, counts);
        }
        for builtin in BUILTINS.iter() {
            replace(&builtin.regex, builtin.kind, builtin.span, &mut out, counts);
        }
        out
    }

    /// Redacts `value` in place: every string at any depth, object keys included, as text;
    /// the value under a secret-looking key whole (unless `null`, a boolean or empty).
    /// Returns what it replaced. Two keys redacted to the same text are told apart by a
    /// suffix (`[REDACTED:email] #2`), so no entry is lost.
    pub fn redact_json(&self, value: &mut Value) -> Redactions {
        let mut counts = Redactions::default();
        self.walk(value, &mut counts);
        counts
    }

    fn walk(&self, value: &mut Value, counts: &mut Redactions) {
        match value {
            Value::String(text) => {
                if let Cow::Owned(redacted) = self.redact_counting(text, counts) {
                    *text = redacted;
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|v| self.walk(v, counts)),
            Value::Object(map) => {
                for (key, mut v) in std::mem::take(map) {
                    match secret_key(&key) {
                        Some(kind) if worth_hiding(&v) => {
                            v = Value::String(kind.placeholder());
                            counts.add(kind);
                        }
                        _ => self.walk(&mut v, counts),
                    }
                    let mut key = self.redact_counting(&key, counts).into_owned();
                    if map.contains_key(&key) {
                        let n = (2..)
                            .find(|n| !map.contains_key(&format!("{key} #{n}")))
                            .unwrap_or_default();
                        key = format!("{key} #{n}");
                    }
                    map.insert(key, v);
                }
            }
            Value::Null | Value::Bool(_) | Value::Number(_) => {}
        }
    }
}

/// Finds the part of a match to replace (absolute byte offsets in the haystack), or `None`
/// to leave the match as it is.
type Span = fn(&Captures<'_>, &str) -> Option<Range<usize>>;

/// Replaces, in `text`, the part `span` picks of each match of `regex`.
fn replace(
    regex: &Regex,
    kind: Kind,
    span: Span,
    text: &mut Cow<'_, str>,
    counts: &mut Redactions,
) {
    let haystack: &str = text;
    let mut changed = false;
    let replaced = regex.replace_all(haystack, |caps: &Captures<'_>| {
        let m = caps.get_match();
        match span(caps, haystack) {
            Some(secret) if !secret.is_empty() => {
                changed = true;
                counts.add(kind);
                format!(
                    "{}{}{}",
                    &haystack[m.start()..secret.start],
                    kind.placeholder(),
                    &haystack[secret.end..m.end()]
                )
            }
            _ => m.as_str().to_owned(),
        }
    });
    if changed && let Cow::Owned(replaced) = replaced {
        *text = Cow::Owned(replaced);
    }
}

/// One built-in pattern.
struct Builtin {
    kind: Kind,
    regex: Regex,
    span: Span,
}

/// Key names that say their value is secret, by kind (also used for JSON keys), in the order
/// they are tried: `client_secret_token` is a secret, not a token.
const SECRET_KEYS: &[(Kind, &str)] = &[
    (Kind::AwsSecret, r"aws_?secret_?access_?key"),
    (Kind::Password, r"passw(?:or)?d|pwd|passphrase"),
    (Kind::ApiKey, r"api[_-]?key|access[_-]?key"),
    (Kind::Secret, r"secret|private[_-]?key|credentials?"),
    (Kind::Token, r"token"),
];

/// After a key: its closing quote (plain or escaped, as in JSON inside a JSON string), then
/// `:`, `=`, `:=` or `=>`.
const SEPARATOR: &str = r#"(?:\\?["'])?[ \t]*(?::=|=>|[:=])[ \t]*"#;

/// A value: double-quoted (with escapes), escaped-quoted (`\"...\"`), single-quoted, or bare
/// (up to a space, quote, `,`, `;`, `&` or `}`; after a quote that is never closed, too).
/// Each form captures the value alone, in groups 1 to 4.
const VALUE: &str =
    r#"(?:"((?:[^"\\\r\n]|\\.)*)"|\\"(.*?)\\"|'([^'\r\n]*)'|(?:\\?["'])?([^\s"'`,;&}]+))"#;

static BUILTINS: LazyLock<Vec<Builtin>> = LazyLock::new(|| {
    let quoted = r#""((?:[^"\\\r\n]|\\.)*)"|\\"(.*?)\\"|'([^'\r\n]*)'"#;
    let mut builtins = vec![
        (
            Kind::PrivateKey,
            r"-----BEGIN[A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----(?s:.*?-----END[A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----|.*)".to_string(),
            whole as Span,
        ),
        (
            Kind::UrlCredentials,
            r#"\b[A-Za-z][A-Za-z0-9+.-]*://([^\s/?#@\[\]"'<>]+)@"#.to_string(),
            group,
        ),
        (
            Kind::Authorization,
            format!(
                r#"(?i)\b(?:proxy-)?authorization{SEPARATOR}(?:{quoted}|((?:bearer|basic|token|bot)[ \t]+[^\s"',;]+|[^\r\n]+))"#
            ),
            value,
        ),
        (
            Kind::Cookie,
            format!(r"(?i)\b(?:set-)?cookie{SEPARATOR}(?:{quoted}|([^\r\n]+))"),
            value,
        ),
        (
            Kind::AwsSecret,
            format!(r"(?i)aws_?secret_?access_?key[\w.-]*{SEPARATOR}{VALUE}"),
            value,
        ),
        (
            Kind::Jwt,
            r"\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}(?:\.[A-Za-z0-9_-]+){0,3}".to_string(),
            whole,
        ),
        (
            Kind::GithubToken,
            r"\b(?:gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,})".to_string(),
            whole,
        ),
        (
            Kind::SlackToken,
            r"\bxox[abposre]-[A-Za-z0-9-]{10,}|\bhttps://hooks\.slack\.com/services/[A-Za-z0-9/_-]+"
                .to_string(),
            whole,
        ),
        (
            Kind::ApiKey,
            r"\b(?:sk-(?:proj-|svcacct-|admin-|ant-)?[A-Za-z0-9_-]{20,}|[rs]k_(?:live|test)_[A-Za-z0-9]{16,}|AIza[0-9A-Za-z_-]{35})"
                .to_string(),
            whole,
        ),
        (
            Kind::AwsKey,
            r"\b(?:AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AIPA|ANPA|ANVA|AROA|APKA)[A-Z0-9]{16}\b"
                .to_string(),
            whole,
        ),
        (
            Kind::Bearer,
            r"(?i)\bbearer[ \t]+([A-Za-z0-9._~+/-]+=*)".to_string(),
            bearer,
        ),
    ];
    for (kind, keys) in &SECRET_KEYS[1..] {
        builtins.push((
            *kind,
            format!(r"(?i)(?:{keys})[\w.-]*{SEPARATOR}{VALUE}"),
            value,
        ));
    }
    builtins.extend([
        (
            Kind::Email,
            r"\b[A-Za-z0-9._%+-]+@(?:[A-Za-z0-9-]+\.)+[A-Za-z]{2,}\b".to_string(),
            whole as Span,
        ),
        (
            Kind::Ip,
            r"(?:[0-9A-Fa-f]{1,4})?(?::[0-9A-Fa-f]{0,4}){2,7}(?:\.[0-9]{1,3}){0,3}".to_string(),
            ipv6,
        ),
        (
            Kind::Ip,
            r"\b(?:[0-9]{1,3}\.){3}[0-9]{1,3}\b".to_string(),
            ipv4,
        ),
    ]);
    builtins
        .into_iter()
        .map(|(kind, pattern, span)| Builtin {
            kind,
            regex: Regex::new(&pattern)
                .unwrap_or_else(|e| panic!("built-in pattern for {kind} compiles: {e}")),
            span,
        })
        .collect()
});

/// The JSON keys whose value is hidden whole, in the order tried.
static SECRET_KEY_NAMES: LazyLock<Vec<(Kind, Regex)>> = LazyLock::new(|| {
    SECRET_KEYS
        .iter()
        .map(|(kind, keys)| (*kind, format!("(?i)(?:{keys})")))
        .chain([
            (
                Kind::Authorization,
                r"(?i)^(?:proxy-)?authorization$".to_string(),
            ),
            (Kind::Cookie, r"(?i)^(?:set-)?cookie$".to_string()),
            (Kind::Secret, r"(?i)^(?:.*[_.-])?auths?$".to_string()),
        ])
        .map(|(kind, pattern)| {
            let regex = Regex::new(&pattern)
                .unwrap_or_else(|e| panic!("secret key pattern for {kind} compiles: {e}"));
            (kind, regex)
        })
        .collect()
});

/// The kind of secret a JSON key's value is, if the key says it is one.
fn secret_key(key: &str) -> Option<Kind> {
    SECRET_KEY_NAMES
        .iter()
        .find(|(_, regex)| regex.is_match(key))
        .map(|(kind, _)| *kind)
}

/// Whether a value under a secret-looking key may hold a secret.
fn worth_hiding(value: &Value) -> bool {
    match value {
        Value::Null | Value::Bool(_) => false,
        Value::String(s) => is_secret_value(s),
        Value::Number(_) | Value::Array(_) | Value::Object(_) => true,
    }
}

/// Whether a value found after a secret-looking key is worth redacting: not empty, not a
/// placeholder, not `null`/`true`/`false`, not already masked (`***`).
fn is_secret_value(value: &str) -> bool {
    let value = value.trim();
    !value.is_empty()
        && !value.starts_with("[REDACTED:")
        && !value.bytes().all(|b| b == b'*')
        && !["null", "nil", "none", "true", "false"]
            .iter()
            .any(|word| value.eq_ignore_ascii_case(word))
}

/// The whole match.
fn whole(caps: &Captures<'_>, _: &str) -> Option<Range<usize>> {
    Some(caps.get_match().range())
}

/// The first capture group that took part in the match.
fn group(caps: &Captures<'_>, _: &str) -> Option<Range<usize>> {
    caps.iter().skip(1).flatten().next().map(|m| m.range())
}

/// The first capture group that took part, if it holds a secret value.
fn value(caps: &Captures<'_>, haystack: &str) -> Option<Range<usize>> {
    group(caps, haystack).filter(|r| is_secret_value(&haystack[r.clone()]))
}

/// A bearer token: at least 8 characters, not all letters (`Bearer authentication` is prose),
/// unless 16 or more.
fn bearer(caps: &Captures<'_>, haystack: &str) -> Option<Range<usize>> {
    let token = caps.get(1)?;
    let text = token.as_str();
    let letters_only = text.bytes().all(|b| b.is_ascii_alphabetic());
    (text.len() >= 16 || (text.len() >= 8 && !letters_only))
        .then(|| token.range())
        .filter(|r| is_secret_value(&haystack[r.clone()]))
}

/// An IPv4 address: four octets of at most 255, not part of a longer dotted run
/// (`1.2.3.4.5`).
fn ipv4(caps: &Captures<'_>, haystack: &str) -> Option<Range<usize>> {
    let m = caps.get_match();
    let octets_ok = m
        .as_str()
        .split('.')
        .all(|octet| octet.parse::<u16>().is_ok_and(|n| n <= 255));
    let dotted_digit = |s: &[u8]| s.len() == 2 && s[0] == b'.' && s[1].is_ascii_digit();
    let after = haystack.as_bytes().get(m.end()..m.end() + 2).unwrap_or(&[]);
    let before = haystack
        .as_bytes()
        .get(m.start().saturating_sub(2)..m.start())
        .unwrap_or(&[]);
    let before_is_part = before.len() == 2 && before[1] == b'.' && before[0].is_ascii_digit();
    (octets_ok && !dotted_digit(after) && !before_is_part).then(|| m.range())
}

/// An IPv6 address: the candidate, less a stray leading or trailing `:` (`addr:fe80::1`),
/// must parse as one, must not touch a word (`std::io`), and must not be a bare `::`.
fn ipv6(caps: &Captures<'_>, haystack: &str) -> Option<Range<usize>> {
    let m = caps.get_match();
    let (mut start, mut end) = (m.start(), m.end());
    let text = m.as_str();
    if text.starts_with(':') && !text.starts_with("::") {
        start += 1;
    }
    if text.ends_with(':') && !text.ends_with("::") && end > start {
        end -= 1;
    }
    let candidate = &haystack[start..end];
    let is_word = |c: char| c.is_alphanumeric() || c == '_';
    let touches_word = haystack[..start].chars().next_back().is_some_and(is_word)
        || haystack[end..].chars().next().is_some_and(is_word);
    (candidate != "::" && !touches_word && candidate.parse::<Ipv6Addr>().is_ok())
        .then_some(start..end)
}

#[cfg(test)]
mod tests {
    use rstest::rstest;
    use serde_json::json;

    use super::*;

    fn redact(text: &str) -> (String, Redactions) {
        let mut counts = Redactions::default();
        let out = Redactor::default()
            .redact_counting(text, &mut counts)
            .into_owned();
        (out, counts)
    }

    #[test]
    fn every_builtin_pattern_compiles() {
        assert!(BUILTINS.len() > 10);
        assert!(SECRET_KEY_NAMES.len() > 5);
    }

    #[rstest]
    #[case::bearer_header(
        "GET /api Authorization: Bearer abc123def456ghi",
        "GET /api Authorization: [REDACTED:authorization]"
    )]
    #[case::basic_header_keeps_the_rest_of_a_logfmt_line(
        "authorization=Basic dXNlcjpwYXNz status=401",
        "authorization=[REDACTED:authorization] status=401"
    )]
    #[case::digest_header_to_the_end_of_the_line(
        "Authorization: Digest username=\"bob\", response=\"6629fae4\"\nnext",
        "Authorization: [REDACTED:authorization]\nnext"
    )]
    #[case::json_header(
        r#"{"Authorization": "Bearer abc.def-123", "Host": "api"}"#,
        r#"{"Authorization": "[REDACTED:authorization]", "Host": "api"}"#
    )]
    #[case::python_dict_header(
        "{'authorization': 'Token 0123456789'}",
        "{'authorization': '[REDACTED:authorization]'}"
    )]
    #[case::cookie("Cookie: session=abcdef; theme=dark", "Cookie: [REDACTED:cookie]")]
    #[case::bearer_in_prose(
        "retrying with bearer 4f6a2c9e81b7d035 after 401",
        "retrying with bearer [REDACTED:bearer] after 401"
    )]
    #[case::jwt(
        "token eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U seen",
        "token [REDACTED:jwt] seen"
    )]
    #[case::jwt_after_bearer(
        "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl",
        "Bearer [REDACTED:jwt]"
    )]
    #[case::aws_access_key_id("key AKIAIOSFODNN7EXAMPLE used", "key [REDACTED:aws-key] used")]
    #[case::aws_secret(
        "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        "aws_secret_access_key = [REDACTED:aws-secret]"
    )]
    #[case::aws_secret_env(
        "AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        "AWS_SECRET_ACCESS_KEY=[REDACTED:aws-secret]"
    )]
    #[case::password_kv(
        "connect password=hunter2 db=orders",
        "connect password=[REDACTED:password] db=orders"
    )]
    #[case::password_yaml("  db_passwd: 'hunter2'", "  db_passwd: '[REDACTED:password]'")]
    #[case::pwd_json(
        r#"{"pwd":"hunter2","user":"x"}"#,
        r#"{"pwd":"[REDACTED:password]","user":"x"}"#
    )]
    #[case::password_json_with_escapes(
        r#""password": "a\"b c", next"#,
        r#""password": "[REDACTED:password]", next"#
    )]
    #[case::password_escaped_json(
        r#"body="{\"password\": \"hunter 2\", \"user\": \"bob\"}""#,
        r#"body="{\"password\": \"[REDACTED:password]\", \"user\": \"bob\"}""#
    )]
    #[case::password_unterminated_quote("password=\"hunter2", "password=\"[REDACTED:password]")]
    #[case::secret_kv(
        "client_secret=s3cr3t&grant=x",
        "client_secret=[REDACTED:secret]&grant=x"
    )]
    #[case::token_in_query(
        "GET /cb?access_token=abc123&state=ok",
        "GET /cb?access_token=[REDACTED:token]&state=ok"
    )]
    #[case::api_key_forms(
        "api_key=k1 API-KEY: k2 apikey:=k3 \"apiKey\": \"k4\"",
        "api_key=[REDACTED:api-key] API-KEY: [REDACTED:api-key] apikey:=[REDACTED:api-key] \"apiKey\": \"[REDACTED:api-key]\""
    )]
    #[case::pem(
        "key:\n-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA\nabcdef==\n-----END RSA PRIVATE KEY-----\nafter",
        "key:\n[REDACTED:private-key]\nafter"
    )]
    #[case::pem_cut_short(
        "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC",
        "[REDACTED:private-key]"
    )]
    #[case::pem_in_escaped_json(
        r#"{"key": "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIB\n-----END EC PRIVATE KEY-----\n"}"#,
        r#"{"key": "[REDACTED:private-key]\n"}"#
    )]
    #[case::url_credentials(
        "dial postgres://app:hunter2@db.prod.svc:5432/orders failed",
        "dial postgres://[REDACTED:url-credentials]@db.prod.svc:5432/orders failed"
    )]
    #[case::url_token_as_user(
        "clone https://ghp_abcdefghij0123456789ABCDEFGHIJ@github.com/org/repo",
        "clone https://[REDACTED:url-credentials]@github.com/org/repo"
    )]
    #[case::github(
        "GITHUB ghp_abcdefghij0123456789ABCDEFGHIJ and github_pat_11ABCDEFG0123456789_abcdefghij",
        "GITHUB [REDACTED:github-token] and [REDACTED:github-token]"
    )]
    #[case::slack(
        "xoxb-1234567890-abcdefghij posted to https://hooks.slack.com/services/T000/B000/XXXXXXXX",
        "[REDACTED:slack-token] posted to [REDACTED:slack-token]"
    )]
    #[case::openai_key(
        "OPENAI sk-proj-abcdefghij0123456789ABCD_ef",
        "OPENAI [REDACTED:api-key]"
    )]
    #[case::stripe_and_google(
        "sk_live_abcdefghij0123456789 AIzaSyA1234567890abcdefghijklmnopqrstuv",
        "[REDACTED:api-key] [REDACTED:api-key]"
    )]
    #[case::email(
        "paged alice.smith+oncall@example.co.uk about it",
        "paged [REDACTED:email] about it"
    )]
    #[case::ipv4(
        "from 10.0.12.7:8080 via 192.168.001.010, and 255.255.255.255.",
        "from [REDACTED:ip]:8080 via [REDACTED:ip], and [REDACTED:ip]."
    )]
    #[case::version_looking_dotted_quad_is_an_ip("image app:1.2.3.4", "image app:[REDACTED:ip]")]
    #[case::ipv6(
        "peer [2001:db8::8a2e:370:7334]:443 and fe80::1 and ::1",
        "peer [[REDACTED:ip]]:443 and [REDACTED:ip] and [REDACTED:ip]"
    )]
    #[case::ipv6_after_a_key("addr:fe80::1%eth0", "addr:[REDACTED:ip]%eth0")]
    #[case::ipv4_mapped_ipv6("client ::ffff:10.1.2.3 closed", "client [REDACTED:ip] closed")]
    fn each_pattern_is_redacted(#[case] input: &str, #[case] expected: &str) {
        let (out, counts) = redact(input);
        assert_eq!(out, expected, "{input}");
        assert_eq!(
            counts.total(),
            expected.matches("[REDACTED:").count(),
            "{counts}"
        );
    }

    #[rstest]
    #[case::word_password("the password is wrong; reset your password")]
    #[case::password_without_value("password: \"\" token: null secret=*** passwordless: true")]
    #[case::token_expired("token expired: log in again")]
    #[case::bearer_prose("a bearer token is required; use Bearer authentication")]
    #[case::bearer_realm("WWW-Authenticate: Bearer realm=\"api\"")]
    #[case::version_with_a_prefix("kubelet v1.2.3.4 started")]
    #[case::five_parts("build 1.2.3.4.5 and 10.1.2.3.4")]
    #[case::octet_over_255("1.2.3.256 and 300.1.1.1")]
    #[case::three_parts("chart 10.0.1")]
    #[case::rust_paths("std::io::Error in Foo::bar")]
    #[case::times_and_macs("at 12:34:56 nic 00:1a:2b:3c:4d:5e")]
    #[case::bare_double_colon("a :: b")]
    #[case::digest_image("nginx@sha256:0123abcd and git@localhost")]
    #[case::task_names("task-abcdefghijklmnopqrstuvwxyz0123 risk-0123456789abcdefghijklmn")]
    #[case::short_sk("sk-learn")]
    #[case::url_without_credentials("https://api.example.com/v1?q=a@b")]
    #[case::placeholders_are_left_alone("token: [REDACTED:jwt] password=[REDACTED:policy-1]")]
    fn near_misses_are_left_alone(#[case] input: &str) {
        let (out, counts) = redact(input);
        assert_eq!(out, input);
        assert!(counts.is_empty(), "{counts}");
        assert!(matches!(
            Redactor::default().redact(input),
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn a_range_like_a_b_c_is_an_address_when_it_parses() {
        // `a::b:c` stands apart from words and parses: an address, like a dotted quad that
        // might be a version.
        assert_eq!(redact("x a::b:c y").0, "x [REDACTED:ip] y");
    }

    #[test]
    fn policy_patterns_see_the_original_text_and_are_numbered_from_one() {
        let redactor = Redactor::new(vec![
            Pattern::new(r"cust-\d{6}").expect("valid"),
            Pattern::new(r"(?i)project (?:apollo|gemini)").expect("valid"),
        ]);
        let mut counts = Redactions::default();
        let out = redactor.redact_counting(
            "cust-123456 of Project Apollo wrote from bob@example.com; cust-654321 too",
            &mut counts,
        );
        assert_eq!(
            out,
            "[REDACTED:policy-1] of [REDACTED:policy-2] wrote from [REDACTED:email]; [REDACTED:policy-1] too"
        );
        assert_eq!(counts.count(Kind::Policy(1)), 2);
        assert_eq!(counts.count(Kind::Policy(2)), 1);
        assert_eq!(counts.to_string(), "1 email, 2 policy-1, 1 policy-2");
        assert_eq!(
            serde_json::to_value(&counts).expect("serializes"),
            json!({"email": 1, "policy-1": 2, "policy-2": 1})
        );
        assert_eq!(Redactions::default().to_string(), "nothing");
    }

    #[test]
    fn policy_patterns_are_bounded_and_checked() {
        assert_eq!(
            Pattern::new(&"a".repeat(MAX_PATTERN_BYTES + 1)).err(),
            Some(Error::TooLong {
                len: MAX_PATTERN_BYTES + 1
            })
        );
        assert_eq!(Pattern::new(r"\d*").err(), Some(Error::MatchesEmpty));
        let invalid = Pattern::new("(hunter2").expect_err("refused");
        assert_eq!(
            invalid.to_string(),
            "not a valid regular expression: unclosed group (at character 1)"
        );
        let invalid = Pattern::new(r"ab\q").expect_err("refused");
        assert_eq!(
            invalid.to_string(),
            "not a valid regular expression: unrecognized escape sequence (at character 3)"
        );
        let huge = Pattern::new(r"(?:\w{100}){100}").expect_err("refused");
        assert!(
            huge.to_string()
                .starts_with("not a valid regular expression: compiled regex exceeds size limit"),
            "{huge}"
        );
        assert!(!format!("{invalid} {invalid:?}").contains("hunter2"));
    }

    #[test]
    fn json_is_redacted_at_any_depth_and_under_secret_keys_whole() {
        let mut value = json!({
            "metadata": {"annotations": {"owner": "bob@example.com"}},
            "spec": {"containers": [{"env": [
                {"name": "DB_HOST", "value": "10.0.0.5"},
                {"name": "url", "value": "redis://:hunter2@redis:6379"},
            ]}]},
            "credentials": {"user": "app", "pass": "hunter2"},
            "apiKey": 12345,
            "client_secret": ["a", "b"],
            "headers": {"Authorization": "Basic dXNlcg==", "Cookie": "sid=1"},
            "auths": {"registry.example.com": {"auth": "dXNlcjpwYXNz"}},
            "token": null,
            "password": "",
            "passwordSet": true,
            "alice@example.com": 1,
            "bob@example.com": 2,
        });
        let counts = Redactor::default().redact_json(&mut value);
        assert_eq!(
            value,
            json!({
                "metadata": {"annotations": {"owner": "[REDACTED:email]"}},
                "spec": {"containers": [{"env": [
                    {"name": "DB_HOST", "value": "[REDACTED:ip]"},
                    {"name": "url", "value": "redis://[REDACTED:url-credentials]@redis:6379"},
                ]}]},
                "credentials": "[REDACTED:secret]",
                "apiKey": "[REDACTED:api-key]",
                "client_secret": "[REDACTED:secret]",
                "headers": {"Authorization": "[REDACTED:authorization]", "Cookie": "[REDACTED:cookie]"},
                "auths": "[REDACTED:secret]",
                "token": null,
                "password": "",
                "passwordSet": true,
                "[REDACTED:email]": 1,
                "[REDACTED:email] #2": 2,
            })
        );
        assert_eq!(counts.count(Kind::Email), 3);
        assert_eq!(counts.count(Kind::Secret), 3);
        assert_eq!(counts.total(), 11, "{counts}");
    }

    #[test]
    fn redactors_compare_and_show_by_their_policy_patterns_only() {
        let a = Redactor::new(vec![Pattern::new("hunter2").expect("valid")]);
        let b = Redactor::new(vec![Pattern::new("hunter2").expect("valid")]);
        assert_eq!(a, b);
        assert_ne!(a, Redactor::default());
        assert_eq!(format!("{a:?}"), "Redactor { policy_patterns: 1 }");
        assert_eq!(a.policy_patterns()[0].as_str(), "hunter2");
        assert_eq!(format!("{:?}", a.policy_patterns()[0]), "Pattern(<hidden>)");
    }
}
