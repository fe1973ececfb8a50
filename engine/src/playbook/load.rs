//! Loading: files and directories into compiled playbooks and policies, with every problem
//! found in one pass.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::spec::PlaybookDocument;
use super::{Playbook, compile};
use crate::check::Checker;
use crate::diagnostic::{self, Diagnostic, Pos, did_you_mean};
use crate::policy::spec::PolicyDocument;
use crate::policy::{self, Policy};
use crate::risk::Risk;
use crate::schema::{self, DocumentKind};
use crate::yaml::{self, Document};

/// What loading a set of paths produced.
#[derive(Debug, Default)]
pub struct Loaded {
    /// The playbooks that compiled.
    pub playbooks: Vec<Playbook>,
    /// The policies that compiled.
    pub policies: Vec<Policy>,
    /// Every problem found, sorted by file and position.
    pub diagnostics: Vec<Diagnostic>,
    /// How many files were read.
    pub files: usize,
    /// How many documents they held.
    pub documents: usize,
    names: BTreeMap<(DocumentKind, String), (PathBuf, Pos)>,
    ceilings: Vec<(Risk, PathBuf, Pos)>,
}

impl Loaded {
    /// Whether any diagnostic is an error (so the set must not be used).
    pub fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(Diagnostic::is_error)
    }

    /// How many errors were found.
    pub fn error_count(&self) -> usize {
        self.diagnostics.iter().filter(|d| d.is_error()).count()
    }
}

/// Loads every YAML file under `paths` (files, or directories searched recursively).
///
/// In directories, only `*.yaml` and `*.yml` files are read, and entries whose name starts with
/// `.` are skipped: editor swap files, and the `..data` / `..2024_...` entries of a Kubernetes
/// ConfigMap mount, whose files are reached through the top-level symlinks instead.
pub fn load_paths(paths: &[PathBuf]) -> Loaded {
    let mut loaded = Loaded::default();
    let mut files = Vec::new();
    for path in paths {
        collect(
            path,
            true,
            &mut files,
            &mut HashSet::new(),
            &mut loaded.diagnostics,
        );
    }
    files.sort();
    files.dedup();
    for file in files {
        match fs::read(&file) {
            Ok(bytes) => match String::from_utf8(bytes) {
                Ok(text) => load_text(&file, &text, &mut loaded),
                Err(e) => loaded.diagnostics.push(Diagnostic::error(
                    &file,
                    Pos::new(1, 1),
                    format!(
                        "file is not UTF-8 (invalid byte at offset {})",
                        e.utf8_error().valid_up_to()
                    ),
                )),
            },
            Err(e) => loaded.diagnostics.push(Diagnostic::error(
                &file,
                Pos::new(1, 1),
                format!("cannot read file: {e}"),
            )),
        }
    }
    check_ceilings(&mut loaded);
    diagnostic::sort(&mut loaded.diagnostics);
    loaded
}

/// A playbook's `maxAutonomousRisk` can only lower the policy's ceiling: one above every
/// loaded policy's ceiling has no effect, which is worth a warning (its author may believe it
/// raises the ceiling).
fn check_ceilings(loaded: &mut Loaded) {
    let Some(highest) = loaded.policies.iter().map(|p| p.max_autonomous_risk).max() else {
        return;
    };
    for (risk, file, pos) in &loaded.ceilings {
        if *risk > highest {
            loaded.diagnostics.push(
                Diagnostic::error(
                    file,
                    *pos,
                    format!(
                        "`maxAutonomousRisk: {risk}` has no effect: a playbook can only lower the \
                         policy's ceiling, and no policy allows more than `{highest}`"
                    ),
                )
                .field("spec.maxAutonomousRisk")
                .warning(),
            );
        }
    }
}

fn collect(
    path: &Path,
    explicit: bool,
    files: &mut Vec<PathBuf>,
    seen_dirs: &mut HashSet<PathBuf>,
    diagnostics: &mut Vec<Diagnostic>,
) {
    let metadata = match fs::metadata(path) {
        Ok(m) => m,
        Err(e) => {
            // A dangling symlink inside a directory is a file being swapped: skip it quietly.
            if explicit {
                diagnostics.push(Diagnostic::error(
                    path,
                    Pos::new(1, 1),
                    format!("cannot read: {e}"),
                ));
            }
            return;
        }
    };
    if metadata.is_file() {
        let is_yaml = matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml")
        );
        if explicit || is_yaml {
            files.push(path.to_path_buf());
        }
        return;
    }
    if !metadata.is_dir() {
        return;
    }
    // Symlinked directories can form loops; visit each real directory once.
    let Ok(real) = fs::canonicalize(path) else {
        return;
    };
    if !seen_dirs.insert(real) {
        return;
    }
    let entries = match fs::read_dir(path) {
        Ok(entries) => entries,
        Err(e) => {
            diagnostics.push(Diagnostic::error(
                path,
                Pos::new(1, 1),
                format!("cannot list directory: {e}"),
            ));
            return;
        }
    };
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        collect(&entry.path(), false, files, seen_dirs, diagnostics);
    }
}

/// Loads the documents of one file's text into `loaded`.
pub fn load_text(file: &Path, text: &str, loaded: &mut Loaded) {
    loaded.files += 1;
    let documents = match yaml::parse_documents(text) {
        Ok(documents) => documents,
        Err(e) => {
            loaded.diagnostics.push(
                Diagnostic::error(file, e.pos, format!("invalid YAML: {}", e.message))
                    .expected("a YAML document (or several, separated by `---`)"),
            );
            return;
        }
    };
    for document in documents {
        loaded.documents += 1;
        load_document(file, document, loaded);
    }
}

fn load_document(file: &Path, mut document: Document, loaded: &mut Loaded) {
    let Some(kind) = document_kind(file, &document, &mut loaded.diagnostics) else {
        return;
    };
    let shape = schema::check(kind, &document, file);
    let compile_anyway = shape.only_unknown_fields();
    if !shape.diagnostics.is_empty() {
        // Unknown fields alone do not stop the semantic checks: drop them and carry on, so one
        // pass reports a typo'd field *and* a bad duration elsewhere. Other shape errors leave
        // no typed document to check.
        schema::remove_fields(&mut document.value, &shape.unknown_fields);
        loaded.diagnostics.extend(shape.diagnostics);
        if !compile_anyway {
            return;
        }
    }
    let mut checker = Checker::new(file, &document.spans);
    let root = document.spans.value_pos("");
    let name_pos = document.spans.value_pos("/metadata/name");
    let name = document.value["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    // Names are registered before compiling, so a duplicate is reported even when either copy
    // has other errors.
    let unique = register(loaded, kind, &name, file, name_pos, &mut checker);
    match kind {
        DocumentKind::Playbook => {
            match serde_json::from_value::<PlaybookDocument>(document.value) {
                Ok(spec) => {
                    if let Some(risk) = spec.spec.max_autonomous_risk {
                        let pos = document.spans.value_pos("/spec/maxAutonomousRisk");
                        loaded.ceilings.push((risk, file.to_path_buf(), pos));
                    }
                    let playbook = compile::compile(spec, document.index, &mut checker);
                    loaded.playbooks.extend(playbook.filter(|_| unique));
                }
                Err(e) => checker.push(Diagnostic::error(
                    file,
                    root,
                    format!("cannot read playbook: {e}"),
                )),
            }
        }
        DocumentKind::AutonomyPolicy => {
            match serde_json::from_value::<PolicyDocument>(document.value) {
                Ok(spec) => {
                    let policy = policy::compile::compile(spec, document.index, &mut checker);
                    loaded.policies.extend(policy.filter(|_| unique));
                }
                Err(e) => checker.push(Diagnostic::error(
                    file,
                    root,
                    format!("cannot read policy: {e}"),
                )),
            }
        }
    }
    loaded.diagnostics.extend(checker.into_diagnostics());
}

/// Records a name; a second document of the same kind and name is an error.
fn register(
    loaded: &mut Loaded,
    kind: DocumentKind,
    name: &str,
    file: &Path,
    pos: Pos,
    checker: &mut Checker<'_>,
) -> bool {
    let key = (kind, name.to_string());
    if let Some((first_file, first_pos)) = loaded.names.get(&key) {
        let d = checker
            .at(
                "/metadata/name",
                format!(
                    "duplicate {} name `{name}`, first defined at {}:{}:{}",
                    kind.as_str(),
                    first_file.display(),
                    first_pos.line,
                    first_pos.column
                ),
            )
            .expected("names unique across the whole set");
        checker.push(d);
        return false;
    }
    loaded.names.insert(key, (file.to_path_buf(), pos));
    true
}

fn document_kind(
    file: &Path,
    document: &Document,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<DocumentKind> {
    let kinds: Vec<&str> = DocumentKind::ALL.iter().map(|k| k.as_str()).collect();
    let expected = format!("`kind: {}`", kinds.join("` or `kind: "));
    match document.value.get("kind") {
        Some(Value::String(kind)) => match DocumentKind::parse(kind) {
            Some(k) => Some(k),
            None => {
                diagnostics.push(
                    Diagnostic::error(
                        file,
                        document.spans.value_pos("/kind"),
                        format!("unknown kind `{kind}`"),
                    )
                    .field("kind")
                    .expected(expected)
                    .help(did_you_mean(kind, kinds.iter().copied())),
                );
                None
            }
        },
        _ if !document.value.is_object() => {
            diagnostics.push(
                Diagnostic::error(
                    file,
                    document.spans.value_pos(""),
                    "a document must be a mapping",
                )
                .expected(format!("a mapping with {expected}")),
            );
            None
        }
        _ => {
            diagnostics.push(
                Diagnostic::error(file, document.spans.value_pos(""), "missing `kind`")
                    .expected(expected),
            );
            None
        }
    }
}
