//! WASM steps: what one evaluation costs, against wasmtime's floor on this machine, and what
//! loading a module costs with and without the disk cache.
//!
//! 1. **Per step**: `Host::evaluate` of the `memory-leak-guard` example (built by
//!    `wasm-sdk/build.sh`) — a fresh `Store`, instantiation from the cached `InstancePre`
//!    with the pooling allocator, the call with the incident context crossing the boundary both
//!    ways, the guest's `log` call, and the host's checks of its answer — `--runs N` times
//!    (2000).
//! 2. **The host's own cost**: the same for the smallest step there is
//!    (`tests/fixtures/wasm/skip.wat`: one memory page, an answer already in it, no work) —
//!    what any step pays before its own code runs.
//! 3. **Floor**: a fresh `Store` and the instantiation of an empty component on the host's
//!    engine (same configuration and pool).
//! 4. **Load**: `Host::load` of the guard with an empty disk cache (a compile) and by a new
//!    host over the filled cache (a disk hit).
//!
//! Run with `cargo bench --bench wasm`; numbers in BENCHMARKS.md.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use salve::action::Action;
use salve::clock::Clock;
use salve::playbook::spec::Capability;
use salve::risk::Risk;
use salve::wasm::{CacheDir, Grants, Host, HostOptions, Limits, Services, StepInput};
use wasmtime::Store;
use wasmtime::component::{Component, Linker};

#[path = "common/stats.rs"]
mod stats;

use stats::Stats;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let runs: usize = args
        .iter()
        .position(|a| a == "--runs")
        .and_then(|i| args.get(i + 1))
        .map_or(2000, |v| v.parse().expect("a number"));
    let module = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../playbooks/steps/memory-leak-guard.wasm"
    ));
    assert!(
        module.is_file(),
        "{} is missing: run `bash wasm-sdk/build.sh`",
        module.display()
    );
    let cache = tempfile::tempdir().expect("tempdir");
    let options = HostOptions {
        cache: CacheDir::At(cache.path().to_path_buf()),
        ..HostOptions::default()
    };

    // Load: compile into an empty cache, then a new host over the filled one.
    let began = Instant::now();
    let host = Host::new(options.clone()).expect("host");
    host.load(&module).expect("load");
    let compiled = began.elapsed();
    let began = Instant::now();
    let again = Host::new(options).expect("host");
    let guard = again.load(&module).expect("load");
    let cached = began.elapsed();
    assert_eq!(
        again.cache_stats().compiled,
        0,
        "the second load came from the disk cache"
    );

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let input = StepInput::from_json(&format!(
        r#"{{"incident": "inc-1", "playbook": "memory-leak-rollback", "step": "guard",
            "signals": [{{"labels": {{"namespace": "prod", "pod": "api-1"}},
                          "values": {{"growthMiBPerMinute": 9, "secondsToOOM": 2700}}}}],
            "target": {{"kind": "Deployment", "name": "api", "namespace": "prod",
                        "revision": 2, "deployedAt": "{}"}}}}"#,
        (chrono::Utc::now() - chrono::TimeDelta::minutes(25)).to_rfc3339()
    ))
    .expect("input");
    let grants = Grants::new(
        vec![Capability::Log],
        vec![Action::RolloutUndo, Action::PatchResources],
        Risk::Low,
    );
    let limits = Limits::default();
    let services = Services {
        prometheus: None,
        kube: None,
        clock: Clock::wall(),
    };
    let skip = again
        .load(&PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/fixtures/wasm/skip.wat"
        )))
        .expect("load the skip fixture");
    let nothing = Grants::new(Vec::new(), Vec::new(), Risk::Low);
    let mut step = Vec::with_capacity(runs);
    let mut smallest = Vec::with_capacity(runs);
    runtime.block_on(async {
        for _ in 0..runs {
            let asked = input.clone();
            let began = Instant::now();
            let result = again
                .evaluate(&guard, &grants, &limits, asked, &services)
                .await
                .expect("the guard decides");
            step.push(began.elapsed());
            std::hint::black_box(result);
            let asked = input.clone();
            let began = Instant::now();
            let result = again
                .evaluate(&skip, &nothing, &limits, asked, &services)
                .await
                .expect("the skip step decides");
            smallest.push(began.elapsed());
            std::hint::black_box(result);
        }
    });

    let floor = floor(&again, runs);
    println!("| measure | n | min | p50 | p99 | mean | max |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    println!(
        "{}",
        Stats::new(step).row("memory-leak-guard: fresh instance + evaluate")
    );
    println!(
        "{}",
        Stats::new(smallest).row("smallest step (skip.wat): fresh instance + evaluate")
    );
    println!(
        "{}",
        Stats::new(floor).row("floor: fresh store + empty component")
    );
    println!("\nload memory-leak-guard: compile {compiled:.1?}; from the disk cache {cached:.1?}");
}

/// wasmtime's floor: a fresh store and an empty component instantiated, `runs` times, on the
/// host's engine.
fn floor(host: &Host, runs: usize) -> Vec<Duration> {
    let engine = host.engine();
    let component = Component::new(engine, "(component)").expect("the empty component");
    let linker: Linker<()> = Linker::new(engine);
    let pre = linker.instantiate_pre(&component).expect("pre");
    (0..runs)
        .map(|_| {
            let began = Instant::now();
            let mut store = Store::new(engine, ());
            store.set_epoch_deadline(100);
            let instance = pre.instantiate(&mut store).expect("instantiate");
            std::hint::black_box(instance);
            drop(store);
            began.elapsed()
        })
        .collect()
}
