//! The WASM step host: custom remediation logic, compiled to a WebAssembly component against
//! the `salve:step@0.1.0` contract (`wasm-sdk/wit/step.wit`), run in a closed sandbox.
//!
//! A step is asked once per incident: it gets a [`StepInput`] (the incident, its signals, the
//! target, its config, earlier steps' outputs) and answers with a [`Decision`] — actions to run,
//! skip, or escalate — which the host checks like any untrusted input before the gate sees it.
//!
//! - **Compile once.** [`Host::load`] compiles a component (35–80 ms) into an `InstancePre`,
//!   kept in memory by the SHA-256 of its bytes, and its machine code on disk (wasmtime's
//!   cache, keyed by the bytes and the engine's compilation settings), so a restart does not
//!   recompile. A corrupt cache file is recompiled, never trusted.
//! - **Refuse what does not fit.** A component built against another version of the contract
//!   is refused at load, naming both versions; one whose types do not match is refused with
//!   wasmtime's reason; [`check_module`] also refuses a module that imports a capability its
//!   playbook does not grant.
//! - **A fresh sandbox per call.** [`Host::evaluate`] makes a new Store per evaluation with a
//!   memory limit (growth beyond it traps), an epoch deadline (a background ticker advances
//!   the epoch), and only the contract's four capabilities linked — each checked against the
//!   step's [`Grants`] on every call. There is no WASI: a guest built for `wasm32-wasip2`
//!   loads, but any WASI function it calls traps (linking them as traps rather than refusing
//!   such guests lets a step that never touches WASI at run time work unchanged).
//! - **Every failure is the step's.** A trap, a timeout, a memory bomb, an ungranted call, a
//!   malformed answer: each is a [`StepError`] for that step; the engine carries on.
//!
//! Host calls that do I/O (`query`, `get`) are async, each bounded by what is left of the
//! step's deadline (epochs do not interrupt host code).

mod bindings;
mod contract;
mod input;
mod output;
mod sandbox;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use sha2::{Digest, Sha256};
use wasmtime::component::{Component, Linker};
use wasmtime::{
    Cache, CacheConfig, Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store,
};

pub use contract::{Import, Inspection, Mismatch, VERSION, capability_name};
pub use input::{SignalInput, StepInput};
pub use output::{Decision, PlannedAction};
pub use sandbox::{Grants, Limits, LogLine, Readable, Services};

use crate::action::Action;
use crate::playbook::spec::Capability;
use bindings::{Step, StepPre};
use sandbox::{LimitExceeded, Misuse, NotGranted, StepState};

/// The largest module file Salve loads.
pub const MAX_MODULE_BYTES: usize = 32 << 20;

/// Why a module cannot be loaded, or the host cannot start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The module file cannot be read.
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The module file is too large.
    #[error("{path} is {size} bytes; a step module may be at most {MAX_MODULE_BYTES}")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size.
        size: u64,
    },
    /// It is not a valid component.
    #[error("{path} is not a valid WebAssembly component: {message}")]
    Compile {
        /// The file.
        path: PathBuf,
        /// wasmtime's reason.
        message: String,
    },
    /// It does not fit the contract (another version, no handler).
    #[error("{path}: {mismatch}")]
    Contract {
        /// The file.
        path: PathBuf,
        /// How it does not fit.
        #[source]
        mismatch: contract::Mismatch,
    },
    /// Its types do not match the contract's.
    #[error("{path} does not match the salve:step@{VERSION} contract: {message}")]
    Types {
        /// The file.
        path: PathBuf,
        /// wasmtime's reason (`expected record of 4 fields, found 5`).
        message: String,
    },
    /// The engine cannot be set up.
    #[error("cannot set up the WASM engine: {0}")]
    Engine(String),
}

/// `Result` with this module's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why one evaluation of a step failed. It fails that step (and rolls its plan back); the
/// host carries on.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StepError {
    /// It called a capability its playbook does not grant.
    #[error("capability `{}` is not granted to step `{step}`", capability_name(*capability))]
    NotGranted {
        /// The capability.
        capability: Capability,
        /// The step.
        step: String,
    },
    /// It ran past its deadline.
    #[error("the step did not finish within its timeout of {after:?}")]
    Timeout {
        /// The timeout.
        after: Duration,
    },
    /// It tried to grow its memory (or a table) past the limit.
    #[error("the step went over its limit: {0}")]
    Limit(String),
    /// It trapped (an `unreachable`, an out-of-bounds access, a stack overflow...).
    #[error("the step trapped: {0}")]
    Trap(String),
    /// It broke a rule of a host call (a string too long to cross the boundary).
    #[error("the step misused a host call: {0}")]
    HostCall(String),
    /// It could not be instantiated.
    #[error("cannot instantiate the step: {0}")]
    Instantiate(String),
    /// It answered with an error of its own.
    #[error("the step failed: {0}")]
    Failed(String),
    /// Its answer is malformed.
    #[error("the step's answer is refused: {0}")]
    InvalidOutcome(String),
    /// Its answer asks for an action the playbook does not allow it.
    #[error(
        "the step's answer is refused: it asks for action `{action}`, which its playbook does not allow it (allowed: {})",
        if allowed.is_empty() { "none".to_string() } else { allowed.iter().map(|a| a.as_str()).collect::<Vec<_>>().join(", ") }
    )]
    ActionNotAllowed {
        /// The action asked for.
        action: Action,
        /// The actions allowed.
        allowed: Vec<Action>,
    },
}

/// A failed evaluation: why, and what the step logged before it failed (for the journal).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{error}")]
pub struct StepFailure {
    /// Why it failed.
    #[source]
    pub error: StepError,
    /// What it logged.
    pub logs: Vec<LogLine>,
}

/// A step's checked answer.
#[derive(Debug, Clone, PartialEq)]
pub struct StepResult {
    /// What it decided.
    pub decision: Decision,
    /// Its structured output for later steps (a JSON object), if it gave one.
    pub output: Option<serde_json::Value>,
    /// What it logged (through the `log` capability).
    pub logs: Vec<LogLine>,
    /// How long the evaluation took, instantiation included.
    pub took: Duration,
}

/// Where compiled modules are kept between runs.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum CacheDir {
    /// `$XDG_CACHE_HOME/salve/wasm` (or `~/.cache/salve/wasm`).
    #[default]
    Default,
    /// This directory.
    At(PathBuf),
    /// Nowhere: every start compiles.
    Disabled,
}

/// How the host is set up.
#[derive(Debug, Clone)]
pub struct HostOptions {
    /// Where compiled modules are cached on disk.
    pub cache: CacheDir,
    /// How many steps may run at once (the pooling allocator's size).
    pub max_instances: u32,
    /// The most linear memory any step may have, in bytes.
    pub max_memory: usize,
    /// How often the epoch advances: the granularity of deadlines.
    pub epoch_tick: Duration,
    /// Whether to use the pooling allocator (falls back to on-demand if it cannot be set up).
    pub pooling: bool,
}

impl Default for HostOptions {
    fn default() -> Self {
        HostOptions {
            cache: CacheDir::Default,
            max_instances: 16,
            max_memory: 64 << 20,
            epoch_tick: Duration::from_millis(10),
            pooling: true,
        }
    }
}

/// Counters of the host's caches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CacheStats {
    /// Loads answered from memory (same bytes loaded before).
    pub memory_hits: u64,
    /// Compilations answered from the disk cache.
    pub disk_hits: u64,
    /// Modules compiled.
    pub compiled: u64,
}

/// The WASM step host: one engine, its compiled modules, and an epoch ticker. Cheap to
/// clone; share one per process.
#[derive(Clone)]
pub struct Host {
    inner: Arc<HostInner>,
}

struct HostInner {
    engine: Engine,
    linker: Linker<StepState>,
    cache: Option<Cache>,
    modules: Mutex<HashMap<[u8; 32], Module>>,
    memory_hits: AtomicU64,
    compiled_uncached: AtomicU64,
    options: HostOptions,
}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Host")
            .field("options", &self.inner.options)
            .field("stats", &self.cache_stats())
            .finish()
    }
}

/// A loaded step module, compiled and ready to instantiate. Cheap to clone.
#[derive(Clone)]
pub struct Module {
    inner: Arc<ModuleInner>,
}

struct ModuleInner {
    name: String,
    digest: [u8; 32],
    inspection: Inspection,
    pre: StepPre<StepState>,
}

impl std::fmt::Debug for Module {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Module")
            .field("name", &self.inner.name)
            .field("digest", &self.digest())
            .field("inspection", &self.inner.inspection)
            .finish()
    }
}

impl Module {
    /// Where it was loaded from.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The SHA-256 of its bytes, in hex.
    pub fn digest(&self) -> String {
        hex(&self.inner.digest)
    }

    /// What it imports and exports.
    pub fn inspection(&self) -> &Inspection {
        &self.inner.inspection
    }
}

/// The most modules kept in memory; past it the memory cache starts over (the disk cache
/// still answers).
const MAX_CACHED_MODULES: usize = 256;

impl Host {
    /// Sets up the engine (pooling allocator, epoch interruption, Cranelift), the disk cache
    /// and the epoch ticker.
    pub fn new(options: HostOptions) -> Result<Host> {
        let cache = disk_cache(&options.cache);
        let engine = if options.pooling {
            match Engine::new(&config(&options, cache.clone(), true)) {
                Ok(engine) => engine,
                Err(error) => {
                    tracing::warn!(
                        error = %chain(&error),
                        "cannot set up the pooling allocator for WASM steps; allocating instances on demand"
                    );
                    new_engine(&options, cache.clone())?
                }
            }
        } else {
            new_engine(&options, cache.clone())?
        };
        let mut linker = Linker::new(&engine);
        Step::add_to_linker::<StepState, wasmtime::component::HasSelf<StepState>>(
            &mut linker,
            |state| state,
        )
        .map_err(|e| Error::Engine(chain(&e)))?;
        start_ticker(&engine, options.epoch_tick)?;
        Ok(Host {
            inner: Arc::new(HostInner {
                engine,
                linker,
                cache,
                modules: Mutex::new(HashMap::new()),
                memory_hits: AtomicU64::new(0),
                compiled_uncached: AtomicU64::new(0),
                options,
            }),
        })
    }

    /// Loads the component at `path` (binary, or WAT text), compiled or from a cache, and
    /// checks it against the contract. Compiling is CPU work: from async code, call it on a
    /// blocking thread.
    pub fn load(&self, path: &Path) -> Result<Module> {
        let bytes = read_module(path)?;
        self.load_bytes(&path.display().to_string(), &bytes)
    }

    /// Like [`Host::load`], for bytes already read; `name` names them in errors.
    pub fn load_bytes(&self, name: &str, bytes: &[u8]) -> Result<Module> {
        let digest: [u8; 32] = Sha256::digest(bytes).into();
        if let Some(module) = self.cached(&digest) {
            self.inner.memory_hits.fetch_add(1, Ordering::Relaxed);
            return Ok(module);
        }
        let path = PathBuf::from(name);
        let component = self.compile(&path, bytes)?;
        let inspection = contract::check(&self.inner.engine, &component).map_err(|mismatch| {
            Error::Contract {
                path: path.clone(),
                mismatch,
            }
        })?;
        let mut linker = self.inner.linker.clone();
        linker
            .define_unknown_imports_as_traps(&component)
            .map_err(|e| Error::Types {
                path: path.clone(),
                message: chain(&e),
            })?;
        let pre = linker
            .instantiate_pre(&component)
            .and_then(StepPre::new)
            .map_err(|e| Error::Types {
                path: path.clone(),
                message: chain(&e),
            })?;
        self.probe(&pre).map_err(|message| Error::Types {
            path: path.clone(),
            message,
        })?;
        let module = Module {
            inner: Arc::new(ModuleInner {
                name: name.to_string(),
                digest,
                inspection,
                pre,
            }),
        };
        if let Ok(mut modules) = self.inner.modules.lock() {
            if modules.len() >= MAX_CACHED_MODULES {
                modules.clear();
            }
            modules.insert(digest, module.clone());
        }
        Ok(module)
    }

    /// Instantiates `pre` once, with nothing granted, to type-check its exports now rather
    /// than at its first evaluation (wasmtime checks them when an instance is made). Only a
    /// type mismatch is an error: anything else (a trap, a limit, a busy pool) is left for the
    /// evaluations to report.
    fn probe(&self, pre: &StepPre<StepState>) -> std::result::Result<(), String> {
        let limits = Limits::default();
        let grants = Grants::new(Vec::new(), Vec::new(), crate::risk::Risk::None);
        let state = StepState::new(
            "(load)".into(),
            String::new(),
            grants,
            limits,
            Services::default(),
        );
        let mut store = self.store(state);
        let instantiated = pre
            .instance_pre()
            .instantiate_async(&mut store)
            .now_or_never();
        match instantiated {
            Some(Ok(instance)) => Step::new(&mut store, &instance)
                .map(drop)
                .map_err(|e| chain(&e)),
            Some(Err(error)) => {
                tracing::debug!(error = %chain(&error), "cannot instantiate a step module to check it");
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// A fresh Store for `state`: its memory limit, and its epoch deadline from its timeout.
    fn store(&self, state: StepState) -> Store<StepState> {
        let ticks = deadline_ticks(state.limits.timeout, self.inner.options.epoch_tick);
        let mut store = Store::new(&self.inner.engine, state);
        store.limiter(|state| &mut state.limiter);
        store.set_epoch_deadline(ticks);
        store.epoch_deadline_trap();
        store
    }

    /// What the component at `path` imports and exports, and its contract version — without
    /// checking it against the contract (for `salve step inspect`).
    pub fn inspect(&self, path: &Path) -> Result<Inspection> {
        let bytes = read_module(path)?;
        let component = self.compile(path, &bytes)?;
        Ok(contract::inspect(&self.inner.engine, &component))
    }

    /// The wasmtime engine steps run on (for tools that measure it against wasmtime's floor).
    pub fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    /// The counters of the memory and disk caches.
    pub fn cache_stats(&self) -> CacheStats {
        let (disk_hits, disk_misses) = self.inner.cache.as_ref().map_or((0, 0), |cache| {
            (cache.cache_hits() as u64, cache.cache_misses() as u64)
        });
        CacheStats {
            memory_hits: self.inner.memory_hits.load(Ordering::Relaxed),
            disk_hits,
            compiled: disk_misses + self.inner.compiled_uncached.load(Ordering::Relaxed),
        }
    }

    fn cached(&self, digest: &[u8; 32]) -> Option<Module> {
        self.inner.modules.lock().ok()?.get(digest).cloned()
    }

    fn compile(&self, path: &Path, bytes: &[u8]) -> Result<Component> {
        if self.inner.cache.is_none() {
            self.inner.compiled_uncached.fetch_add(1, Ordering::Relaxed);
        }
        Component::new(&self.inner.engine, bytes).map_err(|e| Error::Compile {
            path: path.to_path_buf(),
            message: chain(&e),
        })
    }

    /// Runs `module`'s handler once for `input`, in a fresh sandbox: the step gets the
    /// capabilities in `grants`, within `limits`, served by `services`. Its answer is checked
    /// against `grants` before it is returned. Must run within a Tokio runtime (host calls
    /// and the deadline use its timers).
    pub async fn evaluate(
        &self,
        module: &Module,
        grants: &Grants,
        limits: &Limits,
        input: StepInput,
        services: &Services,
    ) -> Result<StepResult, StepFailure> {
        let started = Instant::now();
        let limits = Limits {
            memory: limits.memory.min(self.inner.options.max_memory),
            ..*limits
        };
        let context = input.to_context(services.clock.now());
        let state = StepState::new(
            input.step,
            input.incident,
            grants.clone(),
            limits,
            services.clone(),
        );
        let mut store = self.store(state);
        let pre = module.inner.pre.clone();
        // Epochs stop the guest; host calls are bounded by the deadline. This bound is a last
        // resort should either ever fail.
        let run = async {
            let step = pre
                .instantiate_async(&mut store)
                .await
                .map_err(|e| classify(&e, &limits, true))?;
            step.salve_step_handler()
                .call_evaluate(&mut store, &context)
                .await
                .map_err(|e| classify(&e, &limits, false))
        };
        let answer = match tokio::time::timeout(limits.timeout + LAST_RESORT, run).await {
            Ok(answer) => answer,
            Err(_) => Err(StepError::Timeout {
                after: limits.timeout,
            }),
        };
        let logs = store.data_mut().take_logs();
        let fail = |error: StepError| StepFailure {
            error,
            logs: logs.clone(),
        };
        let outcome = match answer {
            Err(error) => return Err(fail(error)),
            Ok(Err(message)) => return Err(fail(StepError::Failed(cut(message)))),
            Ok(Ok(outcome)) => outcome,
        };
        let (decision, output) = output::check(outcome, grants, limits.max_string).map_err(fail)?;
        Ok(StepResult {
            decision,
            output,
            logs,
            took: started.elapsed(),
        })
    }
}

/// The SHA-256 of a module's bytes, in hex: what [`Module::digest`] says of it once loaded.
pub fn digest_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes).into())
}

fn hex(digest: &[u8; 32]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// How long past its timeout an evaluation may hang before it is abandoned.
const LAST_RESORT: Duration = Duration::from_secs(1);

/// A guest's own error message, cut to a readable length.
fn cut(mut message: String) -> String {
    const MAX: usize = 4 * 1024;
    if message.len() > MAX {
        let mut end = MAX;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
        message.push_str("… (cut)");
    }
    message
}

/// The epoch deadline, in ticks, for `timeout`: rounded up, at least one.
fn deadline_ticks(timeout: Duration, tick: Duration) -> u64 {
    let tick = tick.as_nanos().max(1);
    u64::try_from(timeout.as_nanos().div_ceil(tick))
        .unwrap_or(u64::MAX)
        .max(1)
}

/// Turns a wasmtime error from instantiating or calling a guest into the step's error.
fn classify(error: &wasmtime::Error, limits: &Limits, instantiating: bool) -> StepError {
    if let Some(e) = error.downcast_ref::<NotGranted>() {
        return StepError::NotGranted {
            capability: e.capability,
            step: e.step.clone(),
        };
    }
    if let Some(e) = error.downcast_ref::<LimitExceeded>() {
        return StepError::Limit(e.to_string());
    }
    if let Some(e) = error.downcast_ref::<Misuse>() {
        return StepError::HostCall(e.0.clone());
    }
    if let Some(trap) = error.downcast_ref::<wasmtime::Trap>() {
        return match trap {
            wasmtime::Trap::Interrupt => StepError::Timeout {
                after: limits.timeout,
            },
            trap => StepError::Trap(trap.to_string()),
        };
    }
    if instantiating {
        StepError::Instantiate(chain(error))
    } else {
        StepError::Trap(chain(error))
    }
}

/// An error and its causes, on one line.
fn chain(error: &wasmtime::Error) -> String {
    error
        .chain()
        .map(|cause| cause.to_string())
        .collect::<Vec<_>>()
        .join(": ")
}

fn read_module(path: &Path) -> Result<Vec<u8>> {
    let read = |source| Error::Read {
        path: path.to_path_buf(),
        source,
    };
    let size = std::fs::metadata(path).map_err(read)?.len();
    if size > MAX_MODULE_BYTES as u64 {
        return Err(Error::TooLarge {
            path: path.to_path_buf(),
            size,
        });
    }
    std::fs::read(path).map_err(read)
}

fn new_engine(options: &HostOptions, cache: Option<Cache>) -> Result<Engine> {
    Engine::new(&config(options, cache, false)).map_err(|e| Error::Engine(chain(&e)))
}

/// The engine's configuration: the component model, Cranelift, epoch interruption, memories
/// reserved to the host's limit, and (when `pooling`) a pool sized to `max_instances`.
///
/// Tuned for a small instance made and thrown away per evaluation (see `cargo bench --bench
/// wasm`): bounds are checked by the compiled code rather than by guard pages and signals, so
/// a recycled memory slot is never `mprotect`ed back and forth; and (where the kernel can say
/// which pages were written) a slot's pages stay mapped between evaluations and are reset in
/// place, so the next evaluation has no page faults and no `madvise` TLB shootdowns.
fn config(options: &HostOptions, cache: Option<Cache>, pooling: bool) -> Config {
    let mut config = Config::new();
    config.wasm_component_model(true);
    config.epoch_interruption(true);
    config.memory_reservation(options.max_memory as u64);
    config.signals_based_traps(false);
    config.memory_guard_size(0);
    config.cache(cache);
    if pooling {
        let instances = options.max_instances.max(1);
        // Without PAGEMAP_SCAN (Linux before 6.7) wasmtime would `memset` all of it on every
        // reset, written or not: slower than unmapping.
        let keep_resident = if PoolingAllocationConfig::is_pagemap_scan_available() {
            KEEP_RESIDENT
        } else {
            0
        };
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(instances)
            .total_core_instances(instances * 8)
            .max_core_instances_per_component(16)
            .total_memories(instances * 2)
            .max_memories_per_component(4)
            .total_tables(instances * 4)
            .max_tables_per_component(16)
            .total_stacks(instances)
            .max_memory_size(options.max_memory)
            .pagemap_scan(wasmtime::Enabled::Auto)
            .linear_memory_keep_resident(keep_resident)
            .table_keep_resident(keep_resident);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    }
    config
}

/// How much of each pooled memory and table may stay mapped between evaluations: about what
/// a step written in Rust touches (its stack top, data, first heap pages), and a bound on the
/// memory the pool keeps resident (16 instances × 2 memories × 1 MiB at most).
const KEEP_RESIDENT: usize = 1 << 20;

/// The disk cache, or `None` (logged) when it cannot be set up.
fn disk_cache(dir: &CacheDir) -> Option<Cache> {
    let dir = match dir {
        CacheDir::Disabled => return None,
        CacheDir::At(dir) => dir.clone(),
        CacheDir::Default => match cache_home().map(|home| home.join("wasm")) {
            Some(dir) => dir,
            None => {
                tracing::warn!(
                    "no cache directory for compiled WASM steps ($XDG_CACHE_HOME and $HOME are unset); every start compiles"
                );
                return None;
            }
        },
    };
    let dir = std::path::absolute(&dir).unwrap_or(dir);
    let mut config = CacheConfig::new();
    config.with_directory(&dir);
    match Cache::new(config) {
        Ok(cache) => Some(cache),
        Err(error) => {
            tracing::warn!(
                dir = %dir.display(),
                error = %chain(&error),
                "cannot use the cache directory for compiled WASM steps; every start compiles"
            );
            None
        }
    }
}

/// Salve's cache directory: `$XDG_CACHE_HOME/salve`, else `~/.cache/salve`; `None` when
/// neither variable is set. Compiled WASM steps go in `wasm/`, the advisor's embeddings in
/// `embeddings/`.
pub fn cache_home() -> Option<PathBuf> {
    let base = match std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var_os("HOME").filter(|v| !v.is_empty())?).join(".cache"),
    };
    Some(base.join("salve"))
}

/// Advances the engine's epoch every `tick` until the engine is dropped. Without it no
/// deadline would ever pass, so failing to start it fails the host.
fn start_ticker(engine: &Engine, tick: Duration) -> Result<()> {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("salve-wasm-epoch".into())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(tick);
            }
        })
        .map(drop)
        .map_err(|e| Error::Engine(format!("cannot start the epoch ticker: {e}")))
}

/// The process's host for steps checked or evaluated outside a running engine (playbooks
/// loading, `salve test`), started when first asked: instances allocated on demand, and the
/// modules it loaded kept in memory, so a module checked at load is not compiled again to be
/// evaluated.
pub fn local_host() -> Result<&'static Host, String> {
    static HOST: OnceLock<Result<Host, String>> = OnceLock::new();
    HOST.get_or_init(|| {
        Host::new(HostOptions {
            pooling: false,
            ..HostOptions::default()
        })
        .map_err(|e| format!("cannot start the WASM host: {e}"))
    })
    .as_ref()
    .map_err(Clone::clone)
}

/// Checks a playbook's module, `bytes` read from `path`, at load time: it must compile, fit
/// the contract, and import only capabilities in `grants`. The error names the module.
///
/// It runs on [`local_host`], which shares the disk cache with the engine's [`Host`], so the
/// module is compiled once.
pub fn check_module(
    path: &Path,
    bytes: &[u8],
    grants: &[Capability],
) -> Result<Inspection, String> {
    let module = local_host()?
        .load_bytes(&path.display().to_string(), bytes)
        .map_err(|e| e.to_string())?;
    let inspection = module.inspection().clone();
    let wanted: Vec<_> = inspection
        .capabilities()
        .filter(|c| !grants.contains(c))
        .map(|c| format!("`{}`", capability_name(c)))
        .collect();
    if !wanted.is_empty() {
        return Err(format!(
            "{}: the module imports capability {}, which the playbook does not grant (add it to `grants`)",
            path.display(),
            wanted.join(", ")
        ));
    }
    Ok(inspection)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_round_up_to_whole_ticks() {
        let tick = Duration::from_millis(10);
        assert_eq!(deadline_ticks(Duration::from_secs(1), tick), 100);
        assert_eq!(deadline_ticks(Duration::from_millis(15), tick), 2);
        assert_eq!(deadline_ticks(Duration::ZERO, tick), 1);
    }

    #[test]
    fn long_guest_messages_are_cut_on_a_character_boundary() {
        let message = cut("é".repeat(5000));
        assert!(message.ends_with("… (cut)"));
        assert!(message.len() < 4200);
    }
}
