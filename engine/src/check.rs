//! The checks every compiler shares: durations, cron, PromQL, label selectors, templates and
//! conditions, each reporting at the exact place in the file and carrying on, so one pass finds
//! every problem.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use promql_parser::parser::Expr;
use sha2::Digest;

use crate::condition::{self, Condition};
use crate::diagnostic::{Diagnostic, did_you_mean};
use crate::schema::field_path;
use crate::template::{Template, Variable};
use crate::yaml::SpanIndex;

/// Parses PromQL, turning a panic inside `promql-parser` into an error.
///
/// promql-parser 0.11 panics on a number where its grammar wants a duration when the number is
/// NaN, infinite or too large (`x offset NaN`, `rate(x[1e400])`, `x[5m:1e300]`): it calls
/// `Duration::from_secs_f64` unchecked. A bad playbook must be a diagnostic, never a crash.
pub fn parse_promql(text: &str) -> Result<Expr, String> {
    PARSING.with(|p| p.set(true));
    let parsed = std::panic::catch_unwind(|| promql_parser::parser::parse(text));
    PARSING.with(|p| p.set(false));
    parsed.unwrap_or_else(|_| {
        Err("a number used as a duration is out of range (NaN, infinite or too large)".into())
    })
}

thread_local! {
    /// Whether this thread is inside [`parse_promql`], whose panics are caught and reported.
    static PARSING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Installs a panic hook that keeps the panics [`parse_promql`] catches off stderr (they
/// become diagnostics); every other panic goes to the hook installed before. For binaries:
/// a library should not own the process's panic hook.
pub fn quiet_caught_parser_panics() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !PARSING.with(std::cell::Cell::get) {
            previous(info);
        }
    }));
}

/// A duration as people write it: `0s`, `250ms`, `45s`, `10m`, `12m30s`, `2h`, `3h05m` (whole
/// seconds below an hour, whole minutes above).
pub fn format_duration(duration: Duration) -> String {
    let secs = duration.as_secs();
    match secs {
        0 if duration.is_zero() => "0s".to_string(),
        0 => format!("{}ms", duration.as_millis()),
        1..60 => format!("{secs}s"),
        60..3600 if secs.is_multiple_of(60) => format!("{}m", secs / 60),
        60..3600 => format!("{}m{:02}s", secs / 60, secs % 60),
        _ if secs.is_multiple_of(3600) => format!("{}h", secs / 3600),
        _ => format!("{}h{:02}m", secs / 3600, secs % 3600 / 60),
    }
}

/// A Prometheus-style duration (`30s`, `5m`, `1h30m`, `0s`), or `None`. Every duration Salve
/// reads, in files or on the command line, goes through here.
pub fn parse_duration(text: &str) -> Option<Duration> {
    // promql-parser 0.11 reads a bare number as seconds with `Duration::from_secs_f64`, which
    // panics on a negative, NaN, infinite or too large value ("-1", "nan", "1e400"): refuse
    // those before it sees them.
    if text
        .parse::<f64>()
        .is_ok_and(|secs| Duration::try_from_secs_f64(secs).is_err())
    {
        return None;
    }
    // The parser refuses zero, but `for: 0s` is a natural way to write the default.
    if is_zero_duration(text) {
        return Some(Duration::ZERO);
    }
    promql_parser::util::parse_duration(text).ok()
}

/// `0`, `0s`, `0m`, `00h`...: zero in any of Prometheus's units.
fn is_zero_duration(text: &str) -> bool {
    let digits = text.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let unit = &text[digits.len()..];
    !digits.is_empty()
        && digits.bytes().all(|b| b == b'0')
        && ["", "ms", "s", "m", "h", "d", "w", "y"].contains(&unit)
}

/// Collects the diagnostics of one document.
pub struct Checker<'a> {
    file: &'a Path,
    spans: &'a SpanIndex,
    diagnostics: Vec<Diagnostic>,
    files_checked: Vec<(PathBuf, FileCheck)>,
}

/// What a document's checks found of a file they depend on (a runbook, a module): a cached
/// result stands only while the file is still so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileCheck {
    /// Whether it existed.
    Exists(bool),
    /// The SHA-256 of its content, or `None` when it could not be read.
    Content(Option<[u8; 32]>),
}

impl FileCheck {
    /// Whether `path` is still as found.
    pub fn holds(&self, path: &Path) -> bool {
        match self {
            FileCheck::Exists(existed) => path.is_file() == *existed,
            FileCheck::Content(digest) => {
                std::fs::read(path)
                    .ok()
                    .map(|b| sha2::Sha256::digest(&b).into())
                    == *digest
            }
        }
    }
}

/// The labels a trigger's signals carry, for checking `${labels.x}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Labels {
    /// Unknown statically (a raw PromQL expression, an alert): any label name is accepted.
    Any,
    /// Exactly these.
    Known(BTreeSet<String>),
    /// None at all (a schedule).
    Nothing,
}

/// What a template may reference.
#[derive(Debug, Clone)]
pub struct Scope {
    /// The labels of the trigger's signals.
    pub labels: Labels,
    /// Whether `target.*` is resolved already (not inside the target itself).
    pub target: bool,
}

const ROOTS: &[(&str, &[&str])] = &[
    ("labels", &[]),
    ("owner", &["kind", "name", "namespace"]),
    ("target", &["kind", "name", "namespace"]),
    ("playbook", &["name"]),
    ("incident", &["id", "fingerprint"]),
    ("signal", &["kind", "value"]),
];

impl<'a> Checker<'a> {
    /// A checker for one document of `file`.
    pub fn new(file: &'a Path, spans: &'a SpanIndex) -> Self {
        Checker {
            file,
            spans,
            diagnostics: Vec::new(),
            files_checked: Vec::new(),
        }
    }

    /// The file being checked.
    pub fn file(&self) -> &Path {
        self.file
    }

    /// An error about the value at `pointer`, to finish with the builder methods and
    /// [`Checker::push`].
    pub fn at(&self, pointer: &str, message: impl Into<String>) -> Diagnostic {
        Diagnostic::error(self.file, self.spans.value_pos(pointer), message)
            .field(field_path(pointer))
    }

    /// An error about the key of the entry at `pointer` (a duplicate name, say).
    pub fn at_key(&self, pointer: &str, message: impl Into<String>) -> Diagnostic {
        Diagnostic::error(self.file, self.spans.key_pos(pointer), message)
            .field(field_path(pointer))
    }

    /// Records a diagnostic.
    pub fn push(&mut self, diagnostic: Diagnostic) {
        self.diagnostics.push(diagnostic);
    }

    /// Records a plain error at `pointer`.
    pub fn error(&mut self, pointer: &str, message: impl Into<String>) {
        let d = self.at(pointer, message);
        self.push(d);
    }

    /// Whether any error was recorded.
    pub fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(Diagnostic::is_error)
    }

    /// Everything recorded.
    pub fn into_diagnostics(self) -> Vec<Diagnostic> {
        self.diagnostics
    }

    /// Everything recorded, and every file the checks depended on (with what they found), so
    /// a cached result can be invalidated when one appears, goes or changes.
    pub fn into_parts(self) -> (Vec<Diagnostic>, Vec<(PathBuf, FileCheck)>) {
        (self.diagnostics, self.files_checked)
    }

    /// Whether `path` is a file, remembered as a dependency of this document.
    pub fn file_exists(&mut self, path: &Path) -> bool {
        let exists = path.is_file();
        self.files_checked
            .push((path.to_path_buf(), FileCheck::Exists(exists)));
        exists
    }

    /// The content of `path` (at most `limit` bytes), remembered as a dependency of this
    /// document: a change to it recompiles the document.
    pub fn read_file(&mut self, path: &Path, limit: usize) -> std::io::Result<Vec<u8>> {
        let read = std::fs::metadata(path).and_then(|meta| {
            if meta.len() > limit as u64 {
                Err(std::io::Error::other(format!(
                    "{} bytes, more than the {limit} allowed",
                    meta.len()
                )))
            } else {
                std::fs::read(path)
            }
        });
        let digest = read.as_ref().ok().map(|b| sha2::Sha256::digest(b).into());
        self.files_checked
            .push((path.to_path_buf(), FileCheck::Content(digest)));
        read
    }

    /// A Prometheus-style duration (`30s`, `5m`, `1h30m`).
    pub fn duration(&mut self, pointer: &str, text: &str) -> Option<Duration> {
        let parsed = parse_duration(text);
        if parsed.is_none() {
            let d = self
                .at(pointer, format!("`{text}` is not a duration"))
                .expected("a duration such as 30s, 5m, 1h30m or 2d (units ms, s, m, h, d, w, y)");
            self.push(d);
        }
        parsed
    }

    /// An optional duration with a default; `positive` refuses zero.
    pub fn duration_or(
        &mut self,
        pointer: &str,
        text: Option<&String>,
        default: Duration,
        positive: bool,
    ) -> Duration {
        let Some(text) = text else {
            return default;
        };
        let parsed = self.duration(pointer, text).unwrap_or(default);
        if positive && parsed.is_zero() {
            let d = self
                .at(pointer, "must be longer than zero")
                .expected("a positive duration");
            self.push(d);
        }
        parsed
    }

    /// A cron expression: 5 fields as in a CronJob, or 6-7 with seconds first.
    pub fn cron(&mut self, pointer: &str, text: &str) -> Option<cron::Schedule> {
        let fields = text.split_whitespace().count();
        let normalized = if fields == 5 {
            format!("0 {text}")
        } else {
            text.to_string()
        };
        match cron::Schedule::from_str(&normalized) {
            Ok(schedule) => Some(schedule),
            Err(e) => {
                // The cron crate renders the input and a caret above its reason; keep the reason.
                let rendered = e.to_string();
                let reason = rendered
                    .lines()
                    .map(str::trim)
                    .rfind(|l| !l.is_empty() && *l != normalized && !l.starts_with('^'))
                    .unwrap_or("wrong number or shape of fields")
                    .trim_end_matches('.')
                    .to_string();
                let d = self
                    .at(
                        pointer,
                        format!("`{text}` is not a cron schedule: {reason}"),
                    )
                    .expected(
                        "5 fields `min hour day month weekday`, or 6-7 fields with seconds first \
                         and an optional year",
                    );
                self.push(d);
                None
            }
        }
    }

    /// A PromQL expression.
    pub fn promql(&mut self, pointer: &str, text: &str) -> Option<Expr> {
        match parse_promql(text) {
            Ok(expr) => Some(expr),
            Err(e) => {
                let reason = e.trim().trim_end_matches('.').to_string();
                let d = self.at(pointer, format!("invalid PromQL: {reason}"));
                self.push(d);
                None
            }
        }
    }

    /// PromQL with `${...}` templates: the templates are checked against `scope`, and the
    /// expression's syntax with each template replaced by a placeholder name.
    pub fn templated_promql(
        &mut self,
        pointer: &str,
        text: &str,
        scope: &Scope,
    ) -> Option<Template> {
        let template = self.template(pointer, text, scope)?;
        self.promql(pointer, &template.with_placeholders("salve_template"))?;
        Some(template)
    }

    /// Label matchers such as `{namespace="prod", pod=~"api-.*"}`; returns the labels matched
    /// with `=` (which the signals will carry with that value).
    pub fn selector(&mut self, pointer: &str, text: &str) -> Option<BTreeSet<String>> {
        let wrapped = format!("salve_selector{text}");
        let parsed = parse_promql(&wrapped);
        match parsed {
            Ok(Expr::VectorSelector(vs)) if text.trim_start().starts_with('{') => Some(
                vs.matchers
                    .matchers
                    .iter()
                    .map(|m| m.name.clone())
                    .collect(),
            ),
            _ => {
                let d = self
                    .at(pointer, format!("`{text}` is not a label selector"))
                    .expected(r#"label matchers such as {namespace="prod", pod=~"api-.*"}"#);
                self.push(d);
                None
            }
        }
    }

    /// A string with `${...}` templates, every reference checked against `scope`.
    pub fn template(&mut self, pointer: &str, text: &str, scope: &Scope) -> Option<Template> {
        let template = match Template::parse(text) {
            Ok(t) => t,
            Err(e) => {
                self.error(pointer, format!("bad template: {e}"));
                return None;
            }
        };
        let before = self.diagnostics.len();
        for variable in template.variables() {
            self.variable(pointer, variable, scope);
        }
        (self.diagnostics.len() == before).then_some(template)
    }

    fn variable(&mut self, pointer: &str, variable: &Variable, scope: &Scope) {
        let path: Vec<&str> = variable.path.iter().map(String::as_str).collect();
        let unknown = |this: &Self, help: Option<String>, why: String| {
            this.at(
                pointer,
                format!("unknown template variable `${{{variable}}}`: {why}"),
            )
            .help(help)
        };
        let Some((root, fields)) = ROOTS.iter().find(|(r, _)| *r == path[0]) else {
            let d = unknown(
                self,
                did_you_mean(path[0], ROOTS.iter().map(|(r, _)| *r)),
                format!(
                    "templates may use {}",
                    ROOTS
                        .iter()
                        .map(|(r, _)| format!("`{r}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            );
            return self.push(d);
        };
        if *root == "labels" {
            let [_, name] = path[..] else {
                let d = unknown(self, None, "expected `labels.<name>`".into());
                return self.push(d);
            };
            match &scope.labels {
                Labels::Any => {}
                Labels::Nothing => {
                    let d = unknown(self, None, "this trigger's signals carry no labels".into());
                    self.push(d);
                }
                Labels::Known(known) if !known.contains(name) => {
                    let list: Vec<String> = known.iter().map(|l| format!("`{l}`")).collect();
                    let d = unknown(
                        self,
                        did_you_mean(name, known.iter().map(String::as_str)),
                        format!("this trigger's signals carry only {}", list.join(", ")),
                    );
                    self.push(d);
                }
                Labels::Known(_) => {}
            }
            return;
        }
        if *root == "target" && !scope.target {
            let d = unknown(self, None, "the target cannot refer to itself".into());
            return self.push(d);
        }
        let known = match path[1..] {
            [field] => fields.contains(&field),
            _ => false,
        };
        if !known {
            let help = path
                .get(1)
                .and_then(|f| did_you_mean(f, fields.iter().copied()));
            let list: Vec<String> = fields.iter().map(|f| format!("`{root}.{f}`")).collect();
            let d = unknown(self, help, format!("expected one of {}", list.join(", ")));
            self.push(d);
        }
    }

    /// A CEL condition, checked against the step context.
    pub fn condition(&mut self, pointer: &str, text: &str) -> Option<Condition> {
        match Condition::compile(text) {
            Ok(c) => Some(c),
            Err(errors) => {
                for error in errors {
                    let help = match &error {
                        condition::Error::UnknownName { help, .. } => help.clone(),
                        condition::Error::Syntax(_) => None,
                    };
                    let d = self.at(pointer, error.to_string()).help(help);
                    self.push(d);
                }
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_checker<T>(f: impl FnOnce(&mut Checker<'_>) -> T) -> (T, Vec<String>) {
        let spans = SpanIndex::default();
        let mut checker = Checker::new(Path::new("t.yaml"), &spans);
        let out = f(&mut checker);
        let messages = checker
            .into_diagnostics()
            .into_iter()
            .map(|d| d.message)
            .collect();
        (out, messages)
    }

    #[test]
    fn durations_use_prometheus_units() {
        let (d, errors) = with_checker(|c| c.duration("/x", "1h30m"));
        assert_eq!(d, Some(Duration::from_secs(5400)));
        assert!(errors.is_empty());
        for zero in ["0", "0s", "0m", "00h"] {
            let (d, errors) = with_checker(|c| c.duration("/x", zero));
            assert_eq!(d, Some(Duration::ZERO), "{zero}: {errors:?}");
        }
        let (d, _) = with_checker(|c| c.duration("/x", "0x"));
        assert_eq!(d, None);
        let (d, errors) = with_checker(|c| c.duration("/x", "10 minutes"));
        assert_eq!(d, None);
        assert_eq!(errors, ["`10 minutes` is not a duration"]);
    }

    #[test]
    fn out_of_range_numbers_are_errors_not_panics() {
        for text in ["-1", "nan", "inf", "1e400", "1e20"] {
            let (d, errors) = with_checker(|c| c.duration("/x", text));
            assert_eq!(d, None, "{text}");
            assert_eq!(errors.len(), 1, "{text}");
        }
        for text in [
            "x offset NaN",
            "rate(x[1e400])",
            "x[5m:1e300]",
            "x offset -Inf",
        ] {
            let (expr, errors) = with_checker(|c| c.promql("/x", text));
            assert!(expr.is_none(), "{text}");
            assert!(errors[0].starts_with("invalid PromQL"), "{errors:?}");
        }
        let (labels, _) = with_checker(|c| c.selector("/x", r#"{a="b"} offset NaN"#));
        assert!(labels.is_none());
    }

    #[test]
    fn cron_accepts_five_and_six_fields() {
        let (five, e1) = with_checker(|c| c.cron("/x", "*/5 * * * *"));
        let (six, e2) = with_checker(|c| c.cron("/x", "0 0 17 * * FRI"));
        assert!(five.is_some() && six.is_some(), "{e1:?} {e2:?}");
        let (bad, errors) = with_checker(|c| c.cron("/x", "61 * * * *"));
        assert!(bad.is_none());
        assert_eq!(errors.len(), 1);
    }

    #[test]
    fn selectors_return_their_equality_labels() {
        let (labels, errors) =
            with_checker(|c| c.selector("/x", r#"{namespace="prod", pod=~"a.*"}"#));
        assert!(errors.is_empty(), "{errors:?}");
        let labels: Vec<String> = labels.expect("parses").into_iter().collect();
        assert_eq!(labels, ["namespace", "pod"]);
        let (none, _) = with_checker(|c| c.selector("/x", "namespace=prod"));
        assert!(none.is_none());
    }

    #[test]
    fn templates_are_checked_against_the_trigger_labels() {
        let scope = Scope {
            labels: Labels::Known(["namespace".to_string(), "pod".to_string()].into()),
            target: false,
        };
        let (_, errors) = with_checker(|c| {
            c.template(
                "/x",
                "${labels.namespace}/${labels.nodee}/${target.name}/${ownr.name}",
                &scope,
            )
        });
        assert_eq!(errors.len(), 3, "{errors:#?}");
        assert!(errors[0].contains("`${labels.nodee}`"));
        assert!(errors[1].contains("cannot refer to itself"));
        assert!(errors[2].contains("`${ownr.name}`"));
    }

    #[test]
    fn templated_promql_is_parsed_with_placeholders() {
        let scope = Scope {
            labels: Labels::Any,
            target: true,
        };
        let (ok, errors) = with_checker(|c| {
            c.templated_promql(
                "/x",
                r#"deriv(mem{pod=~"${target.name}-.*"}[10m]) <= 0"#,
                &scope,
            )
        });
        assert!(ok.is_some(), "{errors:?}");
        let (bad, errors) = with_checker(|c| c.templated_promql("/x", "rate(x[5m]", &scope));
        assert!(bad.is_none());
        assert!(errors[0].starts_with("invalid PromQL"), "{errors:?}");
    }
}
