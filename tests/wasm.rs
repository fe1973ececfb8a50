//! The WASM step host against tiny components written in WAT: the sandbox's limits (a guest
//! that loops, one that eats memory, one that traps), the capability grants, the checks on a
//! guest's answer, contract versions, the disk cache, and `salve step run|inspect`.
//!
//! The components are generated here (see [`Guest`]): the contract's types imported exactly
//! as wit-bindgen declares them, a core module whose `evaluate` returns a fixed answer laid
//! out in linear memory by the canonical ABI (or never returns), and the `handler` export.
//! `tests/fixtures/wasm/skip.wat` is one of them, written out for the CLI and for people;
//! `tests/remediation.rs` runs them as playbook steps.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use salve::action::Action;
use salve::clock::Clock;
use salve::kube_fake::FakeApiServer;
use salve::playbook::spec::Capability;
use salve::prometheus::{self, Scenario};
use salve::risk::Risk;
use salve::signal::evaluate::Evaluator;
use salve::wasm::{
    CacheDir, Decision, Grants, Host, HostOptions, Limits, Module, Readable, Services, StepError,
    StepInput,
};
use serde_json::json;

/// The contract's types, as a guest built by wit-bindgen imports them.
fn types_import(version: &str) -> String {
    format!(
        r#"(import "salve:step/types@{version}" (instance $types
    (type $label' (record (field "name" string) (field "value" string)))
    (export "label" (type $label (eq $label')))
    (type $named-value' (record (field "name" string) (field "value" f64)))
    (export "named-value" (type $named-value (eq $named-value')))
    (type $signal' (record (field "labels" (list $label)) (field "value" (option f64))
      (field "values" (list $named-value)) (field "active-since-ms" (option s64))))
    (export "signal" (type $signal (eq $signal')))
    (type $target' (record (field "kind" string) (field "name" string)
      (field "namespace" (option string)) (field "revision" (option s64))
      (field "revision-age-seconds" (option f64)) (field "replicas" (option s64))
      (field "ready-replicas" (option s64)) (field "node" (option string))
      (field "labels" (list $label)) (field "annotations" (list $label))))
    (export "target" (type $target (eq $target')))
    (type $step-output' (record (field "step" string) (field "json" string)))
    (export "step-output" (type $step-output (eq $step-output')))
    (type $context' (record (field "incident" string) (field "playbook" string)
      (field "step" string) (field "signals" (list $signal)) (field "target" $target)
      (field "config" string) (field "outputs" (list $step-output))))
    (export "context" (type $context (eq $context')))
    (type $risk' (enum "none" "low" "medium" "high" "critical"))
    (export "risk" (type $risk (eq $risk')))
    (type $action-kind' (enum "scale" "rollout-restart" "rollout-undo" "patch-resources"
      "cordon" "uncordon" "evict" "delete-pod" "annotate" "capture-logs" "notify" "wait-for"))
    (export "action-kind" (type $action-kind (eq $action-kind')))
    (type $action' (record (field "kind" $action-kind) (field "params" string)
      (field "risk" (option $risk))))
    (export "action" (type $action (eq $action')))
    (type $decision' (variant (case "proceed" (list $action)) (case "skip" string)
      (case "escalate" string)))
    (export "decision" (type $decision (eq $decision')))
    (type $outcome' (record (field "decision" $decision) (field "output" (option string))))
    (export "outcome" (type $outcome (eq $outcome')))
  ))
  (alias export $types "context" (type $context))
  (alias export $types "outcome" (type $outcome))"#
    )
}

/// `action-kind` cases, in the contract's order.
pub(crate) const SCALE: u8 = 0;
pub(crate) const ROLLOUT_UNDO: u8 = 2;
const NOTIFY: u8 = 10;
/// `risk` cases.
const RISK_NONE: u8 = 0;
const RISK_HIGH: u8 = 3;

/// What a generated guest's `evaluate` does.
pub(crate) enum Body {
    /// Returns this answer.
    Answer(Answer),
    /// Runs this core code (it must not return normally: the answer is not laid out).
    Code(&'static str),
    /// Runs this core code, then returns the answer.
    CodeThen(&'static str, Answer),
}

/// An answer of `evaluate`, laid out in memory by [`image`].
pub(crate) enum Answer {
    /// `ok(outcome { decision: proceed([...]), output })`: (kind, params, risk).
    Proceed(Vec<(u8, &'static str, Option<u8>)>, Option<&'static str>),
    /// `ok(outcome { decision: skip(reason), output: none })`.
    Skip(&'static str),
    /// `err(message)`.
    Error(&'static str),
}

/// A generated guest component.
pub(crate) struct Guest {
    pub(crate) version: &'static str,
    pub(crate) body: Body,
    /// Import and call `now` / `log` / an unknown (WASI) function.
    pub(crate) imports: Vec<&'static str>,
}

impl Guest {
    pub(crate) fn answering(answer: Answer) -> Self {
        Guest {
            version: "0.1.0",
            body: Body::Answer(answer),
            imports: Vec::new(),
        }
    }

    pub(crate) fn running(code: &'static str) -> Self {
        Guest {
            version: "0.1.0",
            body: Body::Code(code),
            imports: Vec::new(),
        }
    }

    pub(crate) fn wat(&self) -> String {
        let version = self.version;
        let mut component_imports = String::new();
        let mut lowered = String::new();
        let mut host_exports = String::new();
        let mut core_imports = String::new();
        for import in &self.imports {
            match *import {
                "now" => {
                    component_imports.push_str(&format!(
                        r#"(import "salve:step/now@{version}" (instance $now (export "unix-ms" (func (result s64)))))"#
                    ));
                    lowered.push_str(r#"(core func $now (canon lower (func $now "unix-ms")))"#);
                    host_exports.push_str(r#"(export "now" (func $now))"#);
                    core_imports.push_str(r#"(import "host" "now" (func $now (result i64)))"#);
                }
                "log" => {
                    component_imports.push_str(&format!(
                        r#"(import "salve:step/log@{version}" (instance $log
                          (type $level' (enum "debug" "info" "warn" "error"))
                          (export "level" (type $level (eq $level')))
                          (export "log" (func (param "level" $level) (param "message" string)))))"#
                    ));
                    lowered.push_str(
                        r#"(core func $log (canon lower (func $log "log") (memory (core memory $memory "memory"))))"#,
                    );
                    host_exports.push_str(r#"(export "log" (func $log))"#);
                    core_imports
                        .push_str(r#"(import "host" "log" (func $log (param i32 i32 i32)))"#);
                }
                "wasi" => {
                    component_imports.push_str(
                        r#"(import "wasi:random/insecure@0.2.0" (instance $wasi (export "get-insecure-random-u64" (func (result u64)))))"#,
                    );
                    lowered.push_str(
                        r#"(core func $wasi (canon lower (func $wasi "get-insecure-random-u64")))"#,
                    );
                    host_exports.push_str(r#"(export "wasi" (func $wasi))"#);
                    core_imports.push_str(r#"(import "host" "wasi" (func $wasi (result i64)))"#);
                }
                other => panic!("no such import {other}"),
            }
        }
        let (code, answer) = match &self.body {
            Body::Answer(answer) => ("", Some(answer)),
            Body::Code(code) => (*code, None),
            Body::CodeThen(code, answer) => (*code, Some(answer)),
        };
        let data = answer
            .map(image)
            .map(|bytes| escape(&bytes))
            .unwrap_or_default();
        format!(
            r#"(component
  {types}
  {component_imports}
  (core module $memory (memory (export "memory") 1))
  (core instance $memory (instantiate $memory))
  {lowered}
  (core instance $host {host_exports})
  (core module $main
    (import "env" "memory" (memory 1))
    {core_imports}
    (global $bump (mut i32) (i32.const 4096))
    (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32)
      (local $ptr i32)
      (local.set $ptr (i32.and
        (i32.add (global.get $bump) (i32.sub (local.get 2) (i32.const 1)))
        (i32.sub (i32.const 0) (local.get 2))))
      (global.set $bump (i32.add (local.get $ptr) (local.get 3)))
      (block $fits
        (br_if $fits (i32.le_u (global.get $bump) (i32.shl (memory.size) (i32.const 16))))
        (drop (memory.grow (i32.add (i32.const 1)
          (i32.shr_u (i32.sub (global.get $bump) (i32.shl (memory.size) (i32.const 16)))
            (i32.const 16))))))
      (local.get $ptr))
    (func (export "evaluate") (param $context i32) (result i32)
      {code}
      (i32.const 0))
    (data (i32.const 0) "{data}"))
  (core instance $main (instantiate $main
    (with "env" (instance $memory))
    (with "host" (instance $host))))
  (func $evaluate (param "context" $context) (result (result $outcome (error string)))
    (canon lift (core func $main "evaluate") (memory (core memory $memory "memory"))
      (realloc (core func $main "cabi_realloc"))))
  (instance $handler (export "evaluate" (func $evaluate)))
  (export "salve:step/handler@{version}" (instance $handler))
)
"#,
            types = types_import(version),
        )
    }
}

/// The canonical ABI layout of `result<outcome, string>` at address 0, strings after it.
fn image(answer: &Answer) -> Vec<u8> {
    fn put(memory: &mut [u8], at: usize, value: u32) {
        memory[at..at + 4].copy_from_slice(&value.to_le_bytes());
    }
    fn string(memory: &mut Vec<u8>, text: &str) -> (u32, u32) {
        let at = memory.len() as u32;
        memory.extend_from_slice(text.as_bytes());
        (at, text.len() as u32)
    }
    fn align(memory: &mut Vec<u8>) {
        while !memory.len().is_multiple_of(4) {
            memory.push(0);
        }
    }
    // result: tag at 0, payload at 4; outcome: decision (tag 4, payload 8..16), output
    // (tag 16, payload 20..28).
    let mut memory = vec![0u8; 28];
    match answer {
        Answer::Error(message) => {
            memory[0] = 1;
            let (at, len) = string(&mut memory, message);
            put(&mut memory, 4, at);
            put(&mut memory, 8, len);
        }
        Answer::Skip(reason) => {
            memory[4] = 1;
            let (at, len) = string(&mut memory, reason);
            put(&mut memory, 8, at);
            put(&mut memory, 12, len);
        }
        Answer::Proceed(actions, output) => {
            align(&mut memory);
            // action: kind at 0, params at 4..12, risk option at 12 (tag) and 13; 16 bytes.
            let list = memory.len();
            memory.resize(list + 16 * actions.len(), 0);
            for (i, (kind, params, risk)) in actions.iter().enumerate() {
                let at = list + 16 * i;
                memory[at] = *kind;
                let (p, len) = string(&mut memory, params);
                put(&mut memory, at + 4, p);
                put(&mut memory, at + 8, len);
                if let Some(risk) = risk {
                    memory[at + 12] = 1;
                    memory[at + 13] = *risk;
                }
            }
            put(&mut memory, 8, list as u32);
            put(&mut memory, 12, actions.len() as u32);
            if let Some(output) = output {
                memory[16] = 1;
                let (at, len) = string(&mut memory, output);
                put(&mut memory, 20, at);
                put(&mut memory, 24, len);
            }
        }
    }
    assert!(
        memory.len() < 4096,
        "the answer must fit below the allocator's heap"
    );
    memory
}

fn escape(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("\\{b:02x}")).collect()
}

/// A host with its own cache directory.
fn host(cache: &Path) -> Host {
    Host::new(HostOptions {
        cache: CacheDir::At(cache.to_path_buf()),
        ..HostOptions::default()
    })
    .expect("host")
}

fn load(host: &Host, guest: &Guest) -> Module {
    host.load_bytes("guest.wat", guest.wat().as_bytes())
        .unwrap_or_else(|e| panic!("loads: {e}\n{}", guest.wat()))
}

fn input() -> StepInput {
    StepInput::from_json(
        r#"{"incident": "inc-1", "playbook": "memory-leak", "step": "guard",
            "signals": [{"labels": {"namespace": "prod"}, "value": 3.0}],
            "target": {"kind": "Deployment", "namespace": "prod", "name": "api"},
            "config": {"max": 20}}"#,
    )
    .expect("input")
}

fn grants(capabilities: &[Capability], actions: &[Action]) -> Grants {
    Grants::new(capabilities.to_vec(), actions.to_vec(), Risk::Low)
}

fn limits() -> Limits {
    Limits {
        timeout: Duration::from_millis(300),
        memory: 4 << 20,
        ..Limits::default()
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// Evaluates `guest` with `grants`.
fn evaluate(
    host: &Host,
    module: &Module,
    grants: &Grants,
) -> Result<salve::wasm::StepResult, salve::wasm::StepFailure> {
    runtime().block_on(host.evaluate(module, grants, &limits(), input(), &Services::default()))
}

/// Evaluates a well-behaved guest: the host still serves after whatever came before.
fn still_serves(host: &Host) {
    let module = load(host, &Guest::answering(Answer::Skip("nothing to do")));
    let result = evaluate(host, &module, &grants(&[], &[])).expect("a good guest still runs");
    assert_eq!(result.decision, Decision::Skip("nothing to do".into()));
}

#[test]
fn an_answer_is_checked_and_a_guest_cannot_lower_risk() {
    let dir = tempfile::tempdir().expect("tempdir");
    let host = host(dir.path());
    let guest = Guest::answering(Answer::Proceed(
        vec![
            (ROLLOUT_UNDO, r#"{"toRevision": 3}"#, Some(RISK_NONE)),
            (NOTIFY, r#"{"url": "http://hooks/x"}"#, Some(RISK_HIGH)),
        ],
        Some(r#"{"growth": 12.5}"#),
    ));
    let module = load(&host, &guest);
    let result = evaluate(
        &host,
        &module,
        &grants(&[], &[Action::RolloutUndo, Action::Notify]),
    )
    .expect("evaluates");
    let Decision::Proceed(actions) = result.decision else {
        panic!("proceeds: {:?}", result.decision);
    };
    assert_eq!(actions.len(), 2);
    assert_eq!(actions[0].action, Action::RolloutUndo);
    // Asked for `none`; the action's own risk (medium) is above the step's (low).
    assert_eq!(actions[0].risk, Risk::Medium);
    assert_eq!(actions[0].params["toRevision"], 3);
    assert_eq!(actions[1].risk, Risk::High, "a guest may raise risk");
    assert_eq!(result.output, Some(serde_json::json!({"growth": 12.5})));
}

#[test]
fn a_guest_that_loops_forever_is_stopped_at_its_deadline() {
    let dir = tempfile::tempdir().expect("tempdir");
    let host = host(dir.path());
    let module = load(&host, &Guest::running("(loop $forever (br $forever))"));
    let started = Instant::now();
    let error = evaluate(&host, &module, &grants(&[], &[])).expect_err("times out");
    let took = started.elapsed();
    assert!(
        matches!(error.error, StepError::Timeout { .. }),
        "{error:?}"
    );
    assert!(took >= Duration::from_millis(290), "{took:?}");
    assert!(took < Duration::from_secs(2), "{took:?}");
    still_serves(&host);
}

#[test]
fn a_guest_that_grows_memory_without_end_is_stopped_at_its_limit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let host = host(dir.path());
    let module = load(
        &host,
        &Guest::running(
            "(loop $more (br_if $more (i32.ne (memory.grow (i32.const 1)) (i32.const -1)))) unreachable",
        ),
    );
    let error = evaluate(&host, &module, &grants(&[], &[])).expect_err("stopped");
    assert!(matches!(error.error, StepError::Limit(_)), "{error:?}");
    assert!(error.to_string().contains("memory"), "{error}");
    still_serves(&host);
}

#[test]
fn a_guest_that_traps_fails_its_step_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let host = host(dir.path());
    // Bounds and the stack are checked by the compiled code (the host runs without guard
    // pages and signal handlers): each is still a trap of the step's own.
    for (code, trap) in [
        ("unreachable", "unreachable"),
        (
            "(drop (i32.load (i32.const -8)))",
            "out of bounds memory access",
        ),
        // `evaluate` (function 1, after `cabi_realloc`) calling itself without end.
        ("(drop (call 1 (local.get 0)))", "call stack exhausted"),
    ] {
        let module = load(&host, &Guest::running(code));
        let error = evaluate(&host, &module, &grants(&[], &[])).expect_err("traps");
        assert!(
            matches!(error.error, StepError::Trap(_)),
            "{code}: {error:?}"
        );
        assert!(error.to_string().contains(trap), "{code}: {error}");
        still_serves(&host);
    }
}

#[test]
fn a_guest_error_fails_its_step() {
    let dir = tempfile::tempdir().expect("tempdir");
    let host = host(dir.path());
    let module = load(&host, &Guest::answering(Answer::Error("no data")));
    let error = evaluate(&host, &module, &grants(&[], &[])).expect_err("fails");
    assert_eq!(error.error, StepError::Failed("no data".into()));
}

#[test]
fn malformed_params_refuse_the_answer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let host = host(dir.path());
    let module = load(
        &host,
        &Guest::answering(Answer::Proceed(vec![(SCALE, "[3]", None)], None)),
    );
    let error = evaluate(&host, &module, &grants(&[], &[Action::Scale])).expect_err("refused");
    assert!(
        matches!(error.error, StepError::InvalidOutcome(_)),
        "{error:?}"
    );
    assert!(
        error.to_string().contains("must be a JSON object"),
        "{error}"
    );
    still_serves(&host);
}

#[test]
fn an_action_outside_the_allowed_list_refuses_the_answer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let host = host(dir.path());
    let module = load(
        &host,
        &Guest::answering(Answer::Proceed(
            vec![(NOTIFY, r#"{"url":"http://x"}"#, None), (SCALE, "{}", None)],
            None,
        )),
    );
    let error = evaluate(&host, &module, &grants(&[], &[Action::Notify])).expect_err("refused");
    assert_eq!(
        error.error,
        StepError::ActionNotAllowed {
            action: Action::Scale,
            allowed: vec![Action::Notify]
        }
    );
    assert!(error.to_string().contains("`scale`"), "{error}");
}

#[test]
fn an_ungranted_capability_traps_and_a_granted_one_works() {
    let dir = tempfile::tempdir().expect("tempdir");
    let host = host(dir.path());
    let guest = Guest {
        version: "0.1.0",
        body: Body::CodeThen("(drop (call $now))", Answer::Skip("checked the time")),
        imports: vec!["now"],
    };
    let module = load(&host, &guest);
    let error = evaluate(&host, &module, &grants(&[Capability::Log], &[])).expect_err("traps");
    assert_eq!(
        error.to_string(),
        "capability `now` is not granted to step `guard`"
    );
    let result = evaluate(&host, &module, &grants(&[Capability::Now], &[])).expect("granted");
    assert_eq!(result.decision, Decision::Skip("checked the time".into()));
    still_serves(&host);
}

#[test]
fn log_lines_are_collected_for_the_journal() {
    let dir = tempfile::tempdir().expect("tempdir");
    let host = host(dir.path());
    // The skip reason's bytes double as the message: "looked" at 28..34.
    let guest = Guest {
        version: "0.1.0",
        body: Body::CodeThen(
            "(call $log (i32.const 2) (i32.const 28) (i32.const 6))",
            Answer::Skip("looked"),
        ),
        imports: vec!["log"],
    };
    let module = load(&host, &guest);
    let result = evaluate(&host, &module, &grants(&[Capability::Log], &[])).expect("runs");
    assert_eq!(result.logs.len(), 1);
    assert_eq!(result.logs[0].level, "warn");
    assert_eq!(result.logs[0].message, "looked");
    // Logs survive a failure too.
    let failing = Guest {
        version: "0.1.0",
        body: Body::Code("(call $log (i32.const 1) (i32.const 0) (i32.const 0)) unreachable"),
        imports: vec!["log"],
    };
    let module = load(&host, &failing);
    let error = evaluate(&host, &module, &grants(&[Capability::Log], &[])).expect_err("traps");
    assert_eq!(error.logs.len(), 1);
}

#[test]
fn wasi_imports_load_but_trap_when_called() {
    let dir = tempfile::tempdir().expect("tempdir");
    let host = host(dir.path());
    let guest = Guest {
        version: "0.1.0",
        body: Body::Code("(drop (call $wasi)) unreachable"),
        imports: vec!["wasi"],
    };
    let module = load(&host, &guest);
    assert!(
        module
            .inspection()
            .imports
            .iter()
            .any(|i| i.to_string().starts_with("wasi:random/insecure@0.2.0"))
    );
    let error = evaluate(&host, &module, &grants(&[], &[])).expect_err("traps");
    assert!(matches!(error.error, StepError::Trap(_)), "{error:?}");
    still_serves(&host);
}

#[test]
fn a_guest_built_against_another_contract_version_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let host = host(dir.path());
    let guest = Guest {
        version: "0.2.0",
        body: Body::Answer(Answer::Skip("x")),
        imports: Vec::new(),
    };
    let error = host
        .load_bytes("future.wasm", guest.wat().as_bytes())
        .expect_err("refused")
        .to_string();
    assert_eq!(
        error,
        "future.wasm: built against salve:step@0.2.0; this Salve supports 0.1.0"
    );
}

#[test]
fn a_guest_whose_types_differ_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let host = host(dir.path());
    let wat = Guest::answering(Answer::Skip("x")).wat().replace(
        r#"(field "decision" $decision) (field "output" (option string))"#,
        r#"(field "decision" $decision) (field "output" (option string)) (field "extra" u32)"#,
    );
    let error = host
        .load_bytes("odd.wasm", wat.as_bytes())
        .expect_err("refused")
        .to_string();
    assert!(
        error.starts_with("odd.wasm does not match the salve:step@0.1.0 contract"),
        "{error}"
    );
}

#[test]
fn a_second_host_loads_from_the_disk_cache_without_compiling() {
    let dir = tempfile::tempdir().expect("tempdir");
    let guest = Guest::answering(Answer::Skip("cached"));
    let first = host(dir.path());
    load(&first, &guest);
    assert_eq!(first.cache_stats().compiled, 1);
    load(&first, &guest);
    assert_eq!(first.cache_stats().memory_hits, 1);
    drop(first);

    let second = host(dir.path());
    let module = load(&second, &guest);
    let stats = second.cache_stats();
    assert_eq!((stats.compiled, stats.disk_hits), (0, 1), "{stats:?}");
    let result = evaluate(&second, &module, &grants(&[], &[])).expect("runs");
    assert_eq!(result.decision, Decision::Skip("cached".into()));

    // A corrupt cache file is recompiled, not trusted.
    for entry in walk(dir.path()) {
        std::fs::write(&entry, b"garbage").expect("corrupt");
    }
    let third = host(dir.path());
    let module = load(&third, &guest);
    assert_eq!(third.cache_stats().compiled, 1);
    evaluate(&third, &module, &grants(&[], &[])).expect("runs");
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read dir").flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else if path.extension().is_none_or(|e| e != "toml") {
            files.push(path);
        }
    }
    files
}

#[test]
fn the_skip_fixture_is_a_generated_guest() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/wasm/skip.wat");
    let expected = Guest::answering(Answer::Skip("nothing to do")).wat();
    if std::env::var_os("SALVE_BLESS").is_some() {
        std::fs::write(&fixture, &expected).expect("write the fixture");
    }
    let actual = std::fs::read_to_string(&fixture).expect("read the fixture");
    assert_eq!(
        actual, expected,
        "stale fixture: rerun with SALVE_BLESS=1 to rewrite it"
    );
}

fn salve(args: &[&str]) -> (Option<i32>, String, String) {
    let cache = tempfile::tempdir().expect("tempdir");
    crate::run(
        Command::new(env!("CARGO_BIN_EXE_salve"))
            .args(args)
            .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
            .env("XDG_CACHE_HOME", cache.path()),
    )
}

#[test]
fn salve_step_run_prints_the_decision_and_inspect_the_contract() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("incident.json");
    std::fs::write(
        &input,
        r#"{"incident": "inc-1", "playbook": "p", "step": "guard"}"#,
    )
    .expect("write");
    let input = input.to_str().expect("utf-8");
    let (code, stdout, stderr) = salve(&[
        "step",
        "run",
        "tests/fixtures/wasm/skip.wat",
        "--input",
        input,
        "--grant",
        "log",
        "--timeout",
        "500ms",
    ]);
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    let decision: serde_json::Value = serde_json::from_str(&stdout).expect("JSON");
    assert_eq!(decision["decision"], "skip");
    assert_eq!(decision["reason"], "nothing to do");

    let (code, stdout, stderr) = salve(&["step", "inspect", "tests/fixtures/wasm/skip.wat"]);
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("salve:step@0.1.0"), "{stdout}");

    let looping = dir.path().join("loop.wat");
    std::fs::write(&looping, Guest::running("(loop $l (br $l))").wat()).expect("write");
    let (code, stdout, stderr) = salve(&[
        "step",
        "run",
        looping.to_str().expect("utf-8"),
        "--input",
        input,
        "--timeout",
        "100ms",
    ]);
    assert_eq!(code, Some(1), "{stdout}\n{stderr}");
    assert!(stderr.contains("timeout"), "{stderr}");
}

// The example steps built by `wasm-sdk/build.sh`, against real services: the in-process fake
// Kubernetes API (over HTTP, through `kube::Client`) for `get`, a real Prometheus for `query`.

/// `capabilities` and the actions a crash-triage step asks for, reading each of `kinds` in
/// `namespaces`.
fn triage_grants(capabilities: &[Capability], kinds: &[&str], namespaces: &[&str]) -> Grants {
    let mut grants = Grants::new(
        capabilities.to_vec(),
        vec![Action::RolloutUndo, Action::PatchResources],
        Risk::Medium,
    );
    grants.readable = Readable::each_in(
        kinds.iter().map(|k| k.to_string()),
        namespaces.iter().map(|n| n.to_string()),
    );
    grants
}

#[tokio::test(flavor = "multi_thread")]
async fn get_outside_the_readable_set_is_refused_and_crash_triage_escalates() {
    let (fake, client) = FakeApiServer::start().await.expect("the fake starts");
    // A pod of another team's namespace, OOMKilled: readable, it would raise a limit.
    fake.insert(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "pay-1", "namespace": "payments"},
        "spec": {"containers": [{"name": "app", "image": "pay:3",
                                 "resources": {"limits": {"memory": "1Gi"}}}]},
        "status": {"containerStatuses": [{
            "name": "app", "image": "pay:3", "imageID": "", "ready": false, "restartCount": 3,
            "state": {"waiting": {"reason": "CrashLoopBackOff"}},
            "lastState": {"terminated": {"reason": "OOMKilled", "exitCode": 137}},
        }]},
    }))
    .expect("seed the pod");
    let dir = tempfile::tempdir().expect("tempdir");
    let host = host(dir.path());
    let module = host
        .load(&crate::built_step("crash-triage"))
        .expect("loads");
    // The target is in `shop`; the signal names the pod in `payments`.
    let input = StepInput::from_json(
        r#"{"incident": "inc-1", "playbook": "crash-loop", "step": "triage",
            "signals": [{"labels": {"namespace": "payments", "pod": "pay-1", "container": "app"}}],
            "target": {"kind": "Deployment", "namespace": "shop", "name": "api"}}"#,
    )
    .expect("input");
    let services = Services {
        kube: Some(client),
        ..Services::default()
    };
    let limits = Limits {
        timeout: Duration::from_secs(5),
        ..Limits::default()
    };
    let pod_reads = || {
        fake.requests()
            .iter()
            .filter(|r| r.path.contains("/pods/"))
            .count()
    };
    use Capability::{Get, Log};

    for (grants, refusal) in [
        // As the executor grants it for a Deployment in `shop`.
        (
            triage_grants(&[Log, Get], &["Deployment", "Pod"], &["shop"]),
            "kind `Pod` is not readable in namespace `payments` by this step (readable: Pod in \
             shop)",
        ),
        (
            triage_grants(&[Log, Get], &["Deployment"], &["shop", "payments"]),
            "kind `Pod` is not readable by this step (readable: Deployment in payments, shop)",
        ),
    ] {
        let result = host
            .evaluate(&module, &grants, &limits, input.clone(), &services)
            .await
            .expect("the step decides");
        assert_eq!(
            result.decision,
            Decision::Escalate(format!("cannot read pod payments/pay-1: {refusal}"))
        );
        assert_eq!(
            result.output,
            Some(
                json!({"verdict": "escalate", "reason": null, "exitCode": null,
                        "restarts": null})
            )
        );
        assert!(
            result
                .logs
                .iter()
                .any(|l| l.level == "warn" && l.message.contains(refusal)),
            "{:?}",
            result.logs
        );
    }
    assert_eq!(pod_reads(), 0, "refused before anything reached the API");

    // Readable, the same pod is read and decided on.
    let grants = triage_grants(&[Log, Get], &["Deployment", "Pod"], &["shop", "payments"]);
    let result = host
        .evaluate(&module, &grants, &limits, input.clone(), &services)
        .await
        .expect("the step decides");
    assert_eq!(
        result.output,
        Some(
            json!({"verdict": "raise-limit", "reason": "OOMKilled", "exitCode": 137,
                    "restarts": 3})
        )
    );
    assert_eq!(pod_reads(), 1);

    // Without the `get` capability the call traps: the step fails (and its plan rolls back).
    let grants = triage_grants(&[Log], &["Pod"], &["payments"]);
    let failure = host
        .evaluate(&module, &grants, &limits, input, &services)
        .await
        .expect_err("the step fails");
    assert_eq!(
        failure.error,
        StepError::NotGranted {
            capability: Get,
            step: "triage".into()
        }
    );
    assert_eq!(pod_reads(), 1);
}

/// Whether `value` is a number within 0.001 of `expected`.
fn near(value: &serde_json::Value, expected: f64) -> bool {
    value.as_f64().is_some_and(|v| (v - expected).abs() < 1e-3)
}

/// Evaluates latency-judge for a canary Deployment in `namespace`.
async fn judge(
    host: &Host,
    module: &Module,
    services: &Services,
    namespace: &str,
) -> salve::wasm::StepResult {
    let input = StepInput::from_json(&format!(
        r#"{{"incident": "inc-1", "playbook": "canary", "step": "judge",
            "target": {{"kind": "Deployment", "namespace": "{namespace}", "name": "api-canary"}}}}"#
    ))
    .expect("input");
    let grants = Grants::new(
        vec![Capability::Log, Capability::Query],
        vec![Action::RolloutUndo],
        Risk::Medium,
    );
    let limits = Limits {
        timeout: Duration::from_secs(10),
        ..Limits::default()
    };
    host.evaluate(module, &grants, &limits, input, services)
        .await
        .expect("the step decides")
}

#[tokio::test(flavor = "multi_thread")]
async fn latency_judge_compares_canary_and_stable_p99_from_a_real_prometheus() {
    // Requests per minute at or below each bucket of `http_request_duration_seconds`, per
    // namespace and track. The stable tracks answer within 0.1 s (p99 0.099 s); the canary in
    // `slow` takes 0.5-1 s (p99 0.995 s), the one in `similar` is as fast as its stable track,
    // and `no-canary` has no canary series at all.
    let fast = [100, 100, 100, 100, 100];
    let slow = [0, 0, 0, 100, 100];
    let mut scenario = Scenario::new(Duration::from_secs(60)).expect("scenario");
    for (namespace, track, per_minute) in [
        ("slow", "stable", fast),
        ("slow", "canary", slow),
        ("similar", "stable", fast),
        ("similar", "canary", fast),
        ("no-canary", "stable", fast),
    ] {
        for (le, n) in ["0.1", "0.25", "0.5", "1", "+Inf"]
            .into_iter()
            .zip(per_minute)
        {
            scenario = scenario
                .series(
                    &format!(
                        r#"http_request_duration_seconds_bucket{{namespace="{namespace}",track="{track}",le="{le}"}}"#
                    ),
                    &format!("0+{n}x30"),
                )
                .expect("a series");
        }
    }
    let prometheus = prometheus::start(&scenario).expect("backfill and start prometheus");
    let dir = tempfile::tempdir().expect("tempdir");
    let host = host(dir.path());
    let module = host
        .load(&crate::built_step("latency-judge"))
        .expect("loads");
    // The engine's clock at minute 20 of the backfilled half hour: queries run at that time.
    let services_at = |step: usize| Services {
        prometheus: Some(
            Evaluator::new(prometheus.url(), Duration::from_secs(5)).expect("a client"),
        ),
        kube: None,
        clock: Clock::scaled(
            chrono::DateTime::from_timestamp(prometheus.time_at(step), 0).expect("a time"),
            1.0,
        ),
    };
    let services = services_at(20);

    let slow = judge(&host, &module, &services, "slow").await;
    let Decision::Proceed(actions) = &slow.decision else {
        panic!("a clearly slower canary is rolled back: {slow:?}");
    };
    assert_eq!(
        actions.iter().map(|a| a.action).collect::<Vec<_>>(),
        [Action::RolloutUndo]
    );
    let output = slow.output.expect("an output");
    assert_eq!(output["verdict"], "rollback");
    assert!(near(&output["canaryP99"], 0.995), "{output}");
    assert!(near(&output["stableP99"], 0.099), "{output}");

    let similar = judge(&host, &module, &services, "similar").await;
    assert!(matches!(similar.decision, Decision::Skip(_)), "{similar:?}");
    let output = similar.output.expect("an output");
    assert_eq!(output["verdict"], "pass");
    assert!(near(&output["canaryP99"], 0.099), "{output}");

    let missing = judge(&host, &module, &services, "no-canary").await;
    assert_eq!(
        missing.decision,
        Decision::Escalate("no latency data for the canary: cannot judge the canary".into())
    );
    let output = missing.output.expect("an output");
    assert_eq!(output["verdict"], "no-data");
    assert!(output["canaryP99"].is_null(), "{output}");
    assert!(near(&output["stableP99"], 0.099), "{output}");

    // At the first sample there is no rate yet: nothing to judge, slow canary or not.
    let before = judge(&host, &module, &services_at(0), "slow").await;
    assert!(
        matches!(before.decision, Decision::Escalate(_)),
        "{before:?}"
    );
}
