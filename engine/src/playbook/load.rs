//! Loading: files and directories into compiled playbooks and policies, with every problem
//! found in one pass.
//!
//! Each file compiles on its own into a [`FileUnit`]; the checks that span files (duplicate
//! names, playbook ceilings against the policies) run when the units are assembled into a
//! [`Loaded`]. A [`LoadCache`] keeps the units by path and content digest, so a reload
//! recompiles only the files whose bytes changed, and compiles those in parallel.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;
use sha2::{Digest, Sha256};

use super::spec::PlaybookDocument;
use super::{Playbook, compile};
use crate::check::{Checker, FileCheck};
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
    pub playbooks: Vec<Arc<Playbook>>,
    /// The policies that compiled.
    pub policies: Vec<Arc<Policy>>,
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

    /// Adds one file's unit: its documents, and the names they define, each checked against
    /// the names already added.
    fn add(&mut self, file: &Path, unit: &FileUnit) {
        self.files += 1;
        self.documents += unit.documents;
        self.diagnostics.extend(unit.diagnostics.iter().cloned());
        for entry in &unit.entries {
            let key = (entry.kind, entry.name.clone());
            if let Some((first_file, first_pos)) = self.names.get(&key) {
                self.diagnostics.push(
                    Diagnostic::error(
                        file,
                        entry.pos,
                        format!(
                            "duplicate {} name `{}`, first defined at {}:{}:{}",
                            entry.kind.as_str(),
                            entry.name,
                            first_file.display(),
                            first_pos.line,
                            first_pos.column
                        ),
                    )
                    .field("metadata.name")
                    .expected("names unique across the whole set"),
                );
                continue;
            }
            self.names.insert(key, (file.to_path_buf(), entry.pos));
            match &entry.compiled {
                Some(Compiled::Playbook(p)) => self.playbooks.push(Arc::clone(p)),
                Some(Compiled::Policy(p)) => self.policies.push(Arc::clone(p)),
                None => {}
            }
        }
        for (risk, pos) in &unit.ceilings {
            self.ceilings.push((*risk, file.to_path_buf(), *pos));
        }
    }

    /// Runs the checks that need every file, and sorts the diagnostics.
    fn finish(mut self) -> Self {
        check_ceilings(&mut self);
        diagnostic::sort(&mut self.diagnostics);
        self
    }
}

/// One file, compiled on its own: everything but the checks that span files.
#[derive(Debug)]
pub struct FileUnit {
    digest: [u8; 32],
    in_memory: bool,
    documents: usize,
    entries: Vec<Entry>,
    diagnostics: Vec<Diagnostic>,
    ceilings: Vec<(Risk, Pos)>,
    files_checked: Vec<(PathBuf, FileCheck)>,
}

/// A named document of a file, compiled if it was valid.
#[derive(Debug)]
struct Entry {
    kind: DocumentKind,
    name: String,
    pos: Pos,
    compiled: Option<Compiled>,
}

#[derive(Debug)]
enum Compiled {
    Playbook(Arc<Playbook>),
    Policy(Arc<Policy>),
}

impl FileUnit {
    /// Compiles the documents of `bytes`, read from `file`.
    pub fn compile(file: &Path, bytes: &[u8]) -> Self {
        Self::compile_as(file, bytes, false)
    }

    /// Compiles an [`InMemoryDocument`]: like a file, but it may name no other file (see
    /// [`load_cached`]).
    pub fn compile_in_memory(name: &Path, text: &str) -> Self {
        Self::compile_as(name, text.as_bytes(), true)
    }

    fn compile_as(file: &Path, bytes: &[u8], in_memory: bool) -> Self {
        let mut unit = FileUnit {
            digest: Sha256::digest(bytes).into(),
            in_memory,
            documents: 0,
            entries: Vec::new(),
            diagnostics: Vec::new(),
            ceilings: Vec::new(),
            files_checked: Vec::new(),
        };
        let text = match std::str::from_utf8(bytes) {
            Ok(text) => text,
            Err(e) => {
                unit.diagnostics.push(Diagnostic::error(
                    file,
                    Pos::new(1, 1),
                    format!(
                        "file is not UTF-8 (invalid byte at offset {})",
                        e.valid_up_to()
                    ),
                ));
                return unit;
            }
        };
        match yaml::parse_documents(text) {
            Ok(documents) => {
                unit.documents = documents.len();
                for document in documents {
                    unit.add_document(file, document);
                }
            }
            Err(e) => unit.diagnostics.push(
                Diagnostic::error(file, e.pos, format!("invalid YAML: {}", e.message))
                    .expected("a YAML document (or several, separated by `---`)"),
            ),
        }
        unit
    }

    /// Whether this unit is still what compiling `bytes` would give: same content, and every
    /// file its checks looked for (runbooks, modules) still there or still missing, and each
    /// module still the same bytes.
    fn is_current(&self, bytes: &[u8]) -> bool {
        self.digest == <[u8; 32]>::from(Sha256::digest(bytes))
            && self
                .files_checked
                .iter()
                .all(|(path, found)| found.holds(path))
    }

    fn add_document(&mut self, file: &Path, mut document: Document) {
        let Some(kind) = document_kind(file, &document, &mut self.diagnostics) else {
            return;
        };
        let blocked = if self.in_memory {
            self.refuse_file_references(file, kind, &mut document)
        } else {
            Vec::new()
        };
        let shape = schema::check(kind, &document, file);
        let compile_anyway = shape.only_unknown_fields();
        if !shape.diagnostics.is_empty() {
            // Unknown fields alone do not stop the semantic checks: drop them and carry on, so
            // one pass reports a typo'd field *and* a bad duration elsewhere. Other shape errors
            // leave no typed document to check.
            schema::remove_fields(&mut document.value, &shape.unknown_fields);
            self.diagnostics.extend(shape.diagnostics);
            if !compile_anyway {
                return;
            }
        }
        let mut checker = Checker::new(file, &document.spans);
        let root = document.spans.value_pos("");
        let name = document.value["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let mut entry = Entry {
            kind,
            name,
            pos: document.spans.value_pos("/metadata/name"),
            compiled: None,
        };
        match kind {
            DocumentKind::Playbook => {
                match serde_json::from_value::<PlaybookDocument>(document.value) {
                    Ok(spec) => {
                        if let Some(risk) = spec.spec.max_autonomous_risk {
                            let pos = document.spans.value_pos("/spec/maxAutonomousRisk");
                            self.ceilings.push((risk, pos));
                        }
                        entry.compiled = compile::compile(spec, document.index, &mut checker)
                            .map(|p| Compiled::Playbook(Arc::new(p)));
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
                        entry.compiled =
                            policy::compile::compile(spec, document.index, &mut checker)
                                .map(|p| Compiled::Policy(Arc::new(p)));
                    }
                    Err(e) => checker.push(Diagnostic::error(
                        file,
                        root,
                        format!("cannot read policy: {e}"),
                    )),
                }
            }
        }
        let (mut diagnostics, files_checked) = checker.into_parts();
        // What the compiler says of a reference refused above repeats the refusal.
        diagnostics.retain(|d| d.field.as_ref().is_none_or(|f| !blocked.contains(f)));
        self.diagnostics.extend(diagnostics);
        self.files_checked.extend(files_checked);
        self.entries.push(entry);
    }

    /// An in-memory document (a custom resource) has no directory to resolve a path against,
    /// and must not make Salve read its own file system (a runbook's text goes to the advisor
    /// and the API): each `runbook` and WASM `module` is an error, and is taken out of the
    /// document so the compiler reads nothing. Returns the fields refused.
    fn refuse_file_references(
        &mut self,
        file: &Path,
        kind: DocumentKind,
        document: &mut Document,
    ) -> Vec<String> {
        if kind != DocumentKind::Playbook {
            return Vec::new();
        }
        let mut pointers = Vec::new();
        if document.value.pointer("/spec/runbook").is_some() {
            pointers.push("/spec/runbook".to_string());
        }
        for list in ["steps", "rollback"] {
            let steps = document.value["spec"][list].as_array().map_or(0, Vec::len);
            for i in 0..steps {
                let pointer = format!("/spec/{list}/{i}/wasm/module");
                if document.value.pointer(&pointer).is_some() {
                    pointers.push(pointer);
                }
            }
        }
        let mut blocked = Vec::new();
        for pointer in pointers {
            let field = schema::field_path(&pointer);
            let what = if pointer.ends_with("runbook") {
                "a runbook"
            } else {
                "a WASM module"
            };
            self.diagnostics.push(
                Diagnostic::error(
                    file,
                    document.spans.value_pos(&pointer),
                    format!(
                        "a playbook kept as a custom resource cannot name {what}: it has no \
                         directory to find it in, and Salve reads no file for a custom resource"
                    ),
                )
                .field(field.clone())
                .expected(format!(
                    "no `{}`: keep a playbook that needs one in a playbook file",
                    pointer.rsplit('/').next().unwrap_or_default()
                )),
            );
            if pointer == "/spec/runbook" {
                if let Some(spec) = document.value["spec"].as_object_mut() {
                    spec.remove("runbook");
                }
            } else if let Some(module) = document.value.pointer_mut(&pointer) {
                // Not a `.wasm` path: the compiler refuses it before looking for a file.
                *module = Value::String(String::new());
            }
            blocked.push(field);
        }
        blocked
    }
}

/// Compiled files kept between loads, by path; see [`load_paths_cached`].
#[derive(Debug, Default)]
pub struct LoadCache {
    units: HashMap<PathBuf, Arc<FileUnit>>,
}

impl LoadCache {
    /// How many files it holds.
    pub fn len(&self) -> usize {
        self.units.len()
    }

    /// Whether it holds no file.
    pub fn is_empty(&self) -> bool {
        self.units.is_empty()
    }
}

/// Loads every YAML file under `paths` (files, or directories searched recursively).
///
/// In directories, only `*.yaml` and `*.yml` files are read, and entries whose name starts with
/// `.` are skipped: editor swap files, and the `..data` / `..2024_...` entries of a Kubernetes
/// ConfigMap mount, whose files are reached through the top-level symlinks instead.
pub fn load_paths(paths: &[PathBuf]) -> Loaded {
    load_paths_cached(paths, &mut LoadCache::default())
}

/// [`load_paths`], reusing the units in `cache` for files whose bytes did not change, and
/// leaving in it exactly the files of this load.
pub fn load_paths_cached(paths: &[PathBuf], cache: &mut LoadCache) -> Loaded {
    load_cached(paths, &[], cache)
}

/// A document that is not a file: a custom resource rendered as YAML, under a name that says
/// where it came from (`cluster:prod/playbook/api-restart`), which diagnostics carry as their
/// file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InMemoryDocument {
    /// Its name, in place of a file's path.
    pub name: PathBuf,
    /// Its YAML text.
    pub text: String,
}

/// [`load_paths_cached`], plus `documents` loaded as if they were files after the files (the
/// same checks, the names unique across both). An in-memory document may not name another
/// file: a `runbook` or a WASM `module` in one is an error, and nothing is read for it.
pub fn load_cached(
    paths: &[PathBuf],
    documents: &[InMemoryDocument],
    cache: &mut LoadCache,
) -> Loaded {
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

    // Read every file (cheap, and the only way to see a ConfigMap's symlink swap), then
    // compile the ones that changed.
    let mut units: Vec<Option<Arc<FileUnit>>> = Vec::with_capacity(files.len());
    let mut stale: Vec<(usize, Vec<u8>)> = Vec::new();
    for (i, file) in files.iter().enumerate() {
        match fs::read(file) {
            Ok(bytes) => match cache.units.get(file) {
                Some(unit) if unit.is_current(&bytes) => units.push(Some(Arc::clone(unit))),
                _ => {
                    units.push(None);
                    stale.push((i, bytes));
                }
            },
            Err(e) => {
                units.push(None);
                loaded.diagnostics.push(Diagnostic::error(
                    file,
                    Pos::new(1, 1),
                    format!("cannot read file: {e}"),
                ));
            }
        }
    }
    for (i, unit) in compile_all(&files, stale) {
        units[i] = Some(Arc::new(unit));
    }

    let mut in_memory = Vec::with_capacity(documents.len());
    for document in documents {
        let unit = match cache.units.get(&document.name) {
            Some(unit) if unit.in_memory && unit.is_current(document.text.as_bytes()) => {
                Arc::clone(unit)
            }
            _ => Arc::new(FileUnit::compile_in_memory(&document.name, &document.text)),
        };
        in_memory.push((document.name.clone(), unit));
    }

    cache.units.clear();
    let files = files
        .into_iter()
        .zip(units)
        .filter_map(|(f, u)| Some((f, u?)));
    for (file, unit) in files.chain(in_memory) {
        loaded.add(&file, &unit);
        cache.units.insert(file, unit);
    }
    loaded.finish()
}

/// Compiles `stale` (index into `files`, bytes) on as many threads as there are cores.
fn compile_all(files: &[PathBuf], stale: Vec<(usize, Vec<u8>)>) -> Vec<(usize, FileUnit)> {
    const MIN_FILES_PER_THREAD: usize = 16;
    let threads = std::thread::available_parallelism()
        .map_or(1, usize::from)
        .min(stale.len().div_ceil(MIN_FILES_PER_THREAD))
        .max(1);
    let compile = |chunk: &[(usize, Vec<u8>)]| -> Vec<(usize, FileUnit)> {
        chunk
            .iter()
            .map(|(i, bytes)| (*i, FileUnit::compile(&files[*i], bytes)))
            .collect()
    };
    if threads == 1 {
        return compile(&stale);
    }
    let chunk_size = stale.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let handles: Vec<_> = stale
            .chunks(chunk_size)
            .map(|chunk| scope.spawn(move || compile(chunk)))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| match h.join() {
                Ok(units) => units,
                // A panic in a compiler is a bug; re-raise it rather than lose files silently.
                Err(panic) => std::panic::resume_unwind(panic),
            })
            .collect()
    })
}

/// Loads the documents of one file's text into `loaded` (for tests and fuzzing: the checks
/// that span files run as it is added, but not the final sort).
pub fn load_text(file: &Path, text: &str, loaded: &mut Loaded) {
    let unit = FileUnit::compile(file, text.as_bytes());
    loaded.add(file, &unit);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn playbook(name: &str, extra: &str) -> String {
        format!(
            "apiVersion: salve.dev/v1\nkind: Playbook\nmetadata: {{name: {name}}}\nspec:\n  trigger:\n    alert: {{alertname: A}}\n  target: {{kind: Deployment, namespace: prod, name: api}}\n{extra}  steps:\n    - {{action: rollout_restart, risk: low}}\n"
        )
    }

    fn by_name(loaded: &Loaded, name: &str) -> Arc<Playbook> {
        let found = loaded.playbooks.iter().find(|p| p.name == name);
        Arc::clone(found.expect("playbook loaded"))
    }

    #[test]
    fn unchanged_files_are_not_compiled_again() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("a.yaml"), playbook("a", "")).expect("write");
        std::fs::write(dir.path().join("b.yaml"), playbook("b", "")).expect("write");
        let paths = [dir.path().to_path_buf()];
        let mut cache = LoadCache::default();
        let first = load_paths_cached(&paths, &mut cache);
        assert!(!first.has_errors(), "{:?}", first.diagnostics);

        std::fs::write(dir.path().join("b.yaml"), playbook("b", "  cooldown: 5m\n"))
            .expect("write");
        let second = load_paths_cached(&paths, &mut cache);
        assert!(Arc::ptr_eq(&by_name(&first, "a"), &by_name(&second, "a")));
        assert!(!Arc::ptr_eq(&by_name(&first, "b"), &by_name(&second, "b")));
        assert_eq!(by_name(&second, "b").cooldown.as_secs(), 300);
        assert_eq!(cache.len(), 2);

        std::fs::remove_file(dir.path().join("b.yaml")).expect("remove");
        let third = load_paths_cached(&paths, &mut cache);
        assert_eq!(third.playbooks.len(), 1);
        assert_eq!(cache.len(), 1, "a deleted file leaves the cache");
    }

    #[test]
    fn a_test_object_without_its_kind_is_an_error_at_its_place() {
        let tests = "  tests:\n    - name: t\n      alerts: [{at: 0m, labels: {alertname: A}}]\n      facts:\n        objects:\n          - {apiVersion: v1, kind: Pod, metadata: {name: p, namespace: prod}}\n          - {apiVersion: v1, metadata: {name: q}}\n      expect: {incident: true}\n";
        let text = playbook("a", "") + tests;
        let mut loaded = Loaded::default();
        load_text(Path::new("a.yaml"), &text, &mut loaded);
        let errors: Vec<String> = loaded.diagnostics.iter().map(|d| d.to_string()).collect();
        assert_eq!(errors.len(), 1, "{errors:#?}");
        assert!(
            errors[0].starts_with("a.yaml:16:")
                && errors[0].contains("spec.tests[0].facts.objects[1]: the object has no `kind`"),
            "{errors:#?}"
        );
    }

    #[test]
    fn a_cached_file_is_checked_again_when_a_file_it_names_appears() {
        let dir = tempfile::tempdir().expect("tempdir");
        let text = playbook("a", "  runbook: a.md\n");
        std::fs::write(dir.path().join("a.yaml"), text).expect("write");
        let paths = [dir.path().to_path_buf()];
        let mut cache = LoadCache::default();
        let before = load_paths_cached(&paths, &mut cache);
        assert_eq!(before.error_count(), 1, "{:?}", before.diagnostics);
        std::fs::write(dir.path().join("a.md"), "# runbook\n").expect("write");
        let after = load_paths_cached(&paths, &mut cache);
        assert!(!after.has_errors(), "{:?}", after.diagnostics);
    }

    #[test]
    fn an_edited_runbook_reloads_its_playbook_with_the_new_text() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("a.yaml"),
            playbook("a", "  runbook: a.md\n"),
        )
        .expect("write");
        std::fs::write(dir.path().join("a.md"), "# Restart it\n").expect("write");
        let paths = [dir.path().to_path_buf()];
        let mut cache = LoadCache::default();
        let before = load_paths_cached(&paths, &mut cache);
        std::fs::write(dir.path().join("a.md"), "# Roll it back\n").expect("write");
        let after = load_paths_cached(&paths, &mut cache);
        let (before, after) = (&before.playbooks[0], &after.playbooks[0]);
        assert_eq!(after.runbook_text.as_deref(), Some("# Roll it back\n"));
        assert_ne!(
            before.digest, after.digest,
            "a new identity: the set is swapped"
        );
    }

    #[test]
    fn a_runbook_that_is_not_text_is_a_warning_and_the_playbook_loads() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("a.yaml"),
            playbook("a", "  runbook: a.md\n"),
        )
        .expect("write");
        std::fs::write(dir.path().join("a.md"), [0xff, 0xfe, 0x00]).expect("write");
        let loaded = load_paths(&[dir.path().to_path_buf()]);
        assert!(!loaded.has_errors(), "{:?}", loaded.diagnostics);
        assert!(
            loaded.diagnostics[0]
                .to_string()
                .contains("is not UTF-8 text"),
            "{:?}",
            loaded.diagnostics
        );
        assert_eq!(loaded.playbooks[0].runbook_text, None);
    }

    #[test]
    fn duplicates_across_cached_files_are_still_reported() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("a.yaml"), playbook("same", "")).expect("write");
        std::fs::write(dir.path().join("b.yaml"), playbook("same", "")).expect("write");
        let paths = [dir.path().to_path_buf()];
        let mut cache = LoadCache::default();
        for _ in 0..2 {
            let loaded = load_paths_cached(&paths, &mut cache);
            assert_eq!(loaded.error_count(), 1, "{:?}", loaded.diagnostics);
            assert!(
                loaded.diagnostics[0]
                    .message
                    .starts_with("duplicate Playbook name `same`")
            );
            assert_eq!(loaded.diagnostics[0].pos, Pos::new(3, 18));
        }
    }

    #[test]
    fn an_in_memory_document_names_no_file_and_reads_none() {
        let dir = tempfile::tempdir().expect("tempdir");
        // Files that a path relative to the working directory or absolute could reach.
        std::fs::write(dir.path().join("a.md"), "# runbook\n").expect("write");
        let runbook = format!("  runbook: {}\n", dir.path().join("a.md").display());
        let text = playbook("a", &runbook).replace(
            "    - {action: rollout_restart, risk: low}\n",
            "    - {action: rollout_restart, risk: low}\n    - {name: g, wasm: {module: steps/g.wasm}, risk: low}\n",
        );
        let document = InMemoryDocument {
            name: PathBuf::from("cluster:prod/playbook/a"),
            text,
        };
        let loaded = load_cached(&[], &[document], &mut LoadCache::default());
        let errors: Vec<(Option<&str>, &str)> = loaded
            .diagnostics
            .iter()
            .map(|d| (d.field.as_deref(), d.message.as_str()))
            .collect();
        assert_eq!(errors.len(), 2, "{errors:#?}");
        assert_eq!(errors[0].0, Some("spec.runbook"));
        assert_eq!(errors[1].0, Some("spec.steps[1].wasm.module"));
        for (_, message) in &errors {
            assert!(
                message.starts_with("a playbook kept as a custom resource cannot name"),
                "{message}"
            );
        }
        assert!(
            loaded.diagnostics[0]
                .to_string()
                .starts_with("cluster:prod/playbook/a:"),
            "{}",
            loaded.diagnostics[0]
        );
    }

    #[test]
    fn many_files_compile_in_parallel_to_the_same_result() {
        let dir = tempfile::tempdir().expect("tempdir");
        for i in 0..100 {
            let name = format!("p-{i:03}");
            std::fs::write(dir.path().join(format!("{name}.yaml")), playbook(&name, ""))
                .expect("write");
        }
        let loaded = load_paths(&[dir.path().to_path_buf()]);
        assert!(!loaded.has_errors());
        let names: Vec<&str> = loaded.playbooks.iter().map(|p| p.name.as_str()).collect();
        let expected: Vec<String> = (0..100).map(|i| format!("p-{i:03}")).collect();
        assert_eq!(names, expected, "files are assembled in path order");
    }
}
