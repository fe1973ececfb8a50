//! WASM steps: what one evaluation costs, against wasmtime's floor on this machine, and what
//! loading a module costs with and without the disk cache.
//!
//! 1. **Per step**: `Host::evaluate` of the `memory-leak-guard` example (built by
//!    `wasm-sdk/build.sh`) — a fresh `Store`, instantiation from the cached `InstancePre`
//!    with the pooling allocator, the call with the incident context crossing the boundary both
//!    ways, the guest's `log` call, and the host's checks of its answer — `--runs N` times
//!    (2000).
//! 2. **Floor**: a fresh `Store` and the instantiation of an empty component, on an engine
//!    configured as the host's (component model, epoch interruption, pooling allocator).
//! 3. **Load**: `Host::load` of the guard with an empty disk cache (a compile) and by a new
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
use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store};

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
    let mut step = Vec::with_capacity(runs);
    runtime.block_on(async {
        for _ in 0..runs {
            let began = Instant::now();
            let result = again
                .evaluate(&guard, &grants, &limits, input.clone(), &services)
                .await
                .expect("the guard decides");
            step.push(began.elapsed());
            std::hint::black_box(result);
        }
    });

    let floor = floor(runs);
    println!("| measure | n | min | p50 | p99 | mean | max |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    println!(
        "{}",
        Stats::new(step).row("memory-leak-guard: fresh instance + evaluate")
    );
    println!(
        "{}",
        Stats::new(floor).row("floor: fresh store + empty component")
    );
    println!("\nload memory-leak-guard: compile {compiled:.1?}; from the disk cache {cached:.1?}");
}

/// wasmtime's floor: a fresh store and an empty component instantiated, `runs` times, on an
/// engine configured as the host's.
fn floor(runs: usize) -> Vec<Duration> {
    let mut config = Config::new();
    config.wasm_component_model(true);
    config.epoch_interruption(true);
    config.memory_reservation(64 << 20);
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(16)
        .total_core_instances(128)
        .total_memories(32)
        .total_tables(64)
        .total_stacks(16)
        .max_memory_size(64 << 20);
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    let engine = Engine::new(&config).expect("engine");
    let component = Component::new(&engine, "(component)").expect("the empty component");
    let linker: Linker<()> = Linker::new(&engine);
    let pre = linker.instantiate_pre(&component).expect("pre");
    (0..runs)
        .map(|_| {
            let began = Instant::now();
            let mut store = Store::new(&engine, ());
            store.set_epoch_deadline(100);
            let instance = pre.instantiate(&mut store).expect("instantiate");
            std::hint::black_box(instance);
            drop(store);
            began.elapsed()
        })
        .collect()
}
