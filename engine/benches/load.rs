//! Load and hot-reload benchmarks over 1,000 generated playbooks.
//!
//! Run with `cargo bench --bench load` (release profile). What it measures:
//!
//! 1. `load_paths` + `PlaybookSet::from_loaded` over the whole directory, and the same work
//!    split into phases (read, YAML parse, schema check, deserialize, compile);
//! 2. `Reloader::reload()` called directly (warm cache: only changed files are compiled again),
//!    with nothing changed and with one file changed;
//! 3. change-to-active latency under `watch()` with the default options: from just before one
//!    file is rewritten until the active set (polled every 1 ms) holds the new digest, split
//!    into the reload's own work (the outcome's `took`) and the rest (file events, debounce).
//!
//! Options (after `--`): `--playbooks N` (default 1000), `--reps N` (default 10), `--edits N`
//! (default 50), and `--write DIR`, which only writes the generated playbooks into `DIR` and
//! exits, so that they can be checked with `salve validate DIR`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use salve::check::Checker;
use salve::playbook::PlaybookSet;
use salve::playbook::compile;
use salve::playbook::load::{Loaded, load_paths, load_text};
use salve::playbook::spec::PlaybookDocument;
use salve::playbook::watch::{ReloadOutcome, Reloader, WatchOptions, watch};
use salve::schema::{self, DocumentKind};
use salve::yaml;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

#[path = "common/playbooks.rs"]
mod playbooks;
#[path = "common/stats.rs"]
mod stats;

use stats::Stats;

use playbooks::{file_name, generate, playbook_name, playbook_yaml};

/// The playbook rewritten by the reload benchmarks (a `promql` trigger, which takes `for:`).
const EDITED: usize = 0;

struct Options {
    playbooks: usize,
    reps: usize,
    edits: usize,
    write: Option<PathBuf>,
}

fn options() -> Options {
    let mut options = Options {
        playbooks: 1000,
        reps: 10,
        edits: 50,
        write: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut number = |what: &str| -> usize {
            args.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{what} needs a number"))
        };
        match arg.as_str() {
            "--playbooks" => options.playbooks = number("--playbooks"),
            "--reps" => options.reps = number("--reps").max(1),
            "--edits" => options.edits = number("--edits").max(1),
            "--write" => options.write = Some(PathBuf::from(args.next().expect("--write DIR"))),
            // `cargo bench` passes `--bench`; anything else is ignored as well.
            _ => {}
        }
    }
    options
}

fn main() {
    let options = options();
    if let Some(dir) = &options.write {
        std::fs::create_dir_all(dir).expect("create the output directory");
        generate(dir, options.playbooks);
        println!("wrote {} playbooks to {}", options.playbooks, dir.display());
        return;
    }

    let tmp = tempfile::tempdir().expect("create a temporary directory");
    let dir = tmp.path().to_path_buf();
    let bytes = generate(&dir, options.playbooks);
    let paths = vec![dir.clone()];
    println!(
        "{} playbooks, {:.1} KiB of YAML in {}",
        options.playbooks,
        bytes as f64 / 1024.0,
        dir.display()
    );

    // Sanity: the generated set is valid and complete.
    let loaded = load_paths(&paths);
    let warnings = loaded.diagnostics.len() - loaded.error_count();
    assert!(
        !loaded.has_errors(),
        "generated playbooks are invalid: {}",
        loaded.diagnostics[0]
    );
    assert_eq!(loaded.playbooks.len(), options.playbooks);
    println!(
        "valid: {} playbooks, {warnings} warning(s)",
        loaded.playbooks.len()
    );
    drop(loaded);

    println!();
    println!("| measurement | n | min | p50 | p99 | mean | max |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    let row = |name: &str, stats: &Stats| println!("{}", stats.row(name));
    row(
        "load_paths + from_loaded",
        &bench_full_load(&paths, &options),
    );
    for (name, stats) in bench_phases(&dir, &options) {
        row(name, &stats);
    }
    let (unchanged, applied) = bench_reload(&dir, &paths, &options);
    row("reload() alone, nothing changed", &unchanged);
    row("reload() alone, one file changed", &applied);
    let watched = bench_watch(&dir, &paths, &options);
    row("change-to-active under watch()", &watched.total);
    row("  of which reload() work (took)", &watched.reload);
    row("  of which events + debounce + wake-up", &watched.wait);
    if watched.extra_reloads > 0 {
        println!(
            "\nnote: {} extra reload(s) ran during the watch benchmark (trailing file events)",
            watched.extra_reloads
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Benchmarks

fn bench_full_load(paths: &[PathBuf], options: &Options) -> Stats {
    // One untimed pass warms the page cache and the lazily built schema validators.
    let _ = PlaybookSet::from_loaded(load_paths(paths)).expect("valid set");
    let mut samples = Vec::with_capacity(options.reps);
    for _ in 0..options.reps {
        let started = Instant::now();
        let set = PlaybookSet::from_loaded(load_paths(paths)).expect("valid set");
        samples.push(started.elapsed());
        assert_eq!(set.playbooks().len(), options.playbooks);
    }
    Stats::new(samples)
}

/// The loader's work split into its phases, each summed over every file, once per repetition.
/// This mirrors what `load_text` does for a playbook document, with the public pieces.
fn bench_phases(dir: &Path, options: &Options) -> Vec<(&'static str, Stats)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("list the playbook directory")
        .map(|e| e.expect("directory entry").path())
        .collect();
    files.sort();
    let mut read = Vec::new();
    let mut parse = Vec::new();
    let mut shape = Vec::new();
    let mut deserialize = Vec::new();
    let mut compiling = Vec::new();
    for _ in 0..options.reps {
        let mut t = [Duration::ZERO; 5];
        for file in &files {
            let started = Instant::now();
            let text = std::fs::read_to_string(file).expect("read a playbook");
            t[0] += started.elapsed();

            let started = Instant::now();
            let documents = yaml::parse_documents(&text).expect("valid YAML");
            t[1] += started.elapsed();

            for document in documents {
                let started = Instant::now();
                let report = schema::check(DocumentKind::Playbook, &document, file);
                t[2] += started.elapsed();
                assert!(report.diagnostics.is_empty(), "{}", report.diagnostics[0]);

                let started = Instant::now();
                let spec: PlaybookDocument =
                    serde_json::from_value(document.value).expect("deserializes");
                t[3] += started.elapsed();

                let started = Instant::now();
                let mut checker = Checker::new(file, &document.spans);
                let playbook = compile::compile(spec, document.index, &mut checker);
                t[4] += started.elapsed();
                assert!(playbook.is_some(), "compiles");
            }
        }
        read.push(t[0]);
        parse.push(t[1]);
        shape.push(t[2]);
        deserialize.push(t[3]);
        compiling.push(t[4]);
    }
    vec![
        ("  phase: read files", Stats::new(read)),
        ("  phase: YAML parse (+ span index)", Stats::new(parse)),
        ("  phase: schema check", Stats::new(shape)),
        ("  phase: deserialize", Stats::new(deserialize)),
        (
            "  phase: compile (CEL, PromQL, templates, digest)",
            Stats::new(compiling),
        ),
    ]
}

fn bench_reload(dir: &Path, paths: &[PathBuf], options: &Options) -> (Stats, Stats) {
    let (reloader, _) = Reloader::from_paths(paths.to_vec()).expect("valid set");
    let mut unchanged = Vec::with_capacity(options.reps);
    for _ in 0..options.reps {
        let started = Instant::now();
        let outcome = reloader.reload();
        unchanged.push(started.elapsed());
        assert!(
            matches!(outcome, ReloadOutcome::Unchanged { .. }),
            "{outcome:?}"
        );
    }
    let mut applied = Vec::with_capacity(options.reps);
    for rep in 0..options.reps {
        edit(dir, &format!("{}m", 100 + rep));
        let started = Instant::now();
        let outcome = reloader.reload();
        applied.push(started.elapsed());
        assert!(
            matches!(outcome, ReloadOutcome::Applied { .. }),
            "{outcome:?}"
        );
    }
    edit(dir, "2m");
    (Stats::new(unchanged), Stats::new(applied))
}

struct Watched {
    total: Stats,
    reload: Stats,
    wait: Stats,
    extra_reloads: usize,
}

fn bench_watch(dir: &Path, paths: &[PathBuf], options: &Options) -> Watched {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let (reloader, _) = Reloader::from_paths(paths.to_vec()).expect("valid set");
    let reloader = Arc::new(reloader);
    let cancel = CancellationToken::new();
    let (tx, mut rx) = mpsc::channel(1024);
    let task = runtime.spawn(watch(
        Arc::clone(&reloader),
        WatchOptions::default(),
        cancel.clone(),
        tx,
    ));

    // `watch` has no readiness signal: edit until a change shows, then let things settle.
    let name = playbook_name(EDITED);
    let mut ready = false;
    for attempt in 0..5 {
        let expected = edit(dir, &format!("{}m", 500 + attempt));
        if wait_for_digest(&reloader, &name, &expected, Duration::from_secs(10)).is_some() {
            ready = true;
            break;
        }
    }
    assert!(ready, "the watcher never applied a change");
    std::thread::sleep(Duration::from_millis(300));
    while rx.try_recv().is_ok() {}

    let mut total = Vec::with_capacity(options.edits);
    let mut reload = Vec::with_capacity(options.edits);
    let mut wait = Vec::with_capacity(options.edits);
    let mut extra_reloads = 0;
    for i in 0..options.edits {
        let text = playbook_yaml(EDITED, &format!("{}m", 1 + i));
        let expected = digest_of(dir, &text);
        let started = Instant::now();
        std::fs::write(dir.join(file_name(EDITED)), &text).expect("rewrite the playbook");
        let latency = wait_for_digest(&reloader, &name, &expected, Duration::from_secs(10))
            .expect("the change became active within 10 s");
        let elapsed = started.elapsed();
        debug_assert!(elapsed >= latency);
        // The outcome that applied this change says how long the reload itself took.
        let deadline = Instant::now() + Duration::from_secs(5);
        let took = loop {
            match rx.try_recv() {
                Ok(ReloadOutcome::Applied { took, .. }) => break took,
                Ok(_) => extra_reloads += 1,
                Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(1)),
                Err(e) => panic!("no reload outcome: {e}"),
            }
        };
        total.push(latency);
        reload.push(took);
        wait.push(latency.saturating_sub(took));
        // Let trailing events play out so that the next edit starts from a quiet watcher.
        std::thread::sleep(Duration::from_millis(150) + took);
        while let Ok(outcome) = rx.try_recv() {
            if !matches!(outcome, ReloadOutcome::Unchanged { .. }) {
                panic!("unexpected outcome after the change: {outcome:?}");
            }
            extra_reloads += 1;
        }
    }
    cancel.cancel();
    runtime
        .block_on(task)
        .expect("watch task joins")
        .expect("watch ran");
    Watched {
        total: Stats::new(total),
        reload: Stats::new(reload),
        wait: Stats::new(wait),
        extra_reloads,
    }
}

/// Polls the active set every millisecond until `name` has `digest`; how long that took.
fn wait_for_digest(
    reloader: &Reloader,
    name: &str,
    digest: &str,
    limit: Duration,
) -> Option<Duration> {
    let started = Instant::now();
    loop {
        if reloader
            .active()
            .load()
            .playbook(name)
            .is_some_and(|p| p.digest == digest)
        {
            return Some(started.elapsed());
        }
        if started.elapsed() > limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Rewrites the edited playbook with `for: <for_>`; returns its new digest.
fn edit(dir: &Path, for_: &str) -> String {
    let text = playbook_yaml(EDITED, for_);
    let digest = digest_of(dir, &text);
    std::fs::write(dir.join(file_name(EDITED)), text).expect("rewrite the playbook");
    digest
}

/// The digest the loader will give the playbook in `text`.
fn digest_of(dir: &Path, text: &str) -> String {
    let mut loaded = Loaded::default();
    load_text(&dir.join(file_name(EDITED)), text, &mut loaded);
    assert!(!loaded.has_errors(), "{}", loaded.diagnostics[0]);
    loaded.playbooks[0].digest.clone()
}
