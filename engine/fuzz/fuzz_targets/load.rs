//! Fuzzes the playbook loader: arbitrary bytes through YAML parsing, the schema check and the
//! playbook/policy compilers, then every diagnostic rendered and the set built. Any panic,
//! abort, hang or out-of-memory is a bug: the loader must turn every input into diagnostics.

#![no_main]

use std::cell::RefCell;
use std::panic::{self, AssertUnwindSafe};
use std::path::Path;
use std::sync::Once;

use libfuzzer_sys::fuzz_target;
use salve::diagnostic;
use salve::playbook::PlaybookSet;
use salve::playbook::load::{Loaded, load_text};

thread_local! {
    /// The message of the last panic the hook let unwind, in case nothing caught it.
    static LET_THROUGH: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// libfuzzer-sys's panic hook aborts on every panic, before unwinding. One known panic must be
/// allowed to unwind: promql-parser 0.11 calls `Duration::from_secs_f64` on numbers such as
/// `NaN` or `1e400` where it wants a duration, and `salve::check::parse_promql` catches that
/// and reports a diagnostic. Every other panic still aborts at once, and if the let-through
/// one is not caught by the engine, the target aborts below with its message.
fn let_the_known_dependency_panic_unwind() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let abort = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            let message = info.payload_as_str().unwrap_or_default();
            if message.starts_with("cannot convert float seconds to Duration") {
                let at = info.location().map(ToString::to_string).unwrap_or_default();
                LET_THROUGH.with(|m| *m.borrow_mut() = Some(format!("{message} at {at}")));
                return;
            }
            abort(info);
        }));
    });
}

fn load(data: &[u8]) {
    // `load_paths` refuses non-UTF-8 files before parsing; converting lossily instead keeps
    // every mutation useful to the parser rather than discarding it.
    let text = String::from_utf8_lossy(data);
    let mut loaded = Loaded::default();
    load_text(Path::new("fuzz.yaml"), &text, &mut loaded);
    diagnostic::sort(&mut loaded.diagnostics);
    for diagnostic in &loaded.diagnostics {
        let _ = diagnostic.to_string();
    }
    let _ = PlaybookSet::from_loaded(loaded);
}

fuzz_target!(|data: &[u8]| {
    let_the_known_dependency_panic_unwind();
    if panic::catch_unwind(AssertUnwindSafe(|| load(data))).is_err() {
        let message = LET_THROUGH
            .with(|m| m.borrow_mut().take())
            .unwrap_or_default();
        eprintln!("uncaught panic: {message}");
        std::process::abort();
    }
});
