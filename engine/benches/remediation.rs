//! Remediation: how fast Salve acts once a signal fires, and what the running engine costs.
//!
//! 1. **Signal to first action** in `salve demo` (a real Prometheus, the sandbox API server,
//!    the bundled playbooks): from the incident opening (the signal firing) to the first step
//!    starting — diagnose (two API reads), plan, gate, and the journal writes before the step —
//!    in wall-clock time, over `--runs N` demos (5).
//! 2. **Idle RSS of `salve run`** with the bundled playbooks and the default policy, against an
//!    empty Prometheus and the sandbox API server (so every event trigger's watches run too),
//!    read from `/proc/PID/status` after `--settle SECONDS` (5), in each of the modes the
//!    chart runs: cluster-wide, HA (`--leader-elect`), node-local (`--node-local`) and
//!    sidecar (`--namespace`), each with the API listening, and cluster-wide without it.
//!
//! Run with `cargo bench --bench remediation`; numbers in BENCHMARKS.md.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use salve::demo::{self, Options};
use salve::kube_fake::FakeApiServer;
use salve::prometheus::Harness;

#[path = "common/args.rs"]
mod args;
#[path = "common/stats.rs"]
mod stats;

use stats::Stats;

fn main() {
    let runs = args::number("--runs", 5);
    let settle = Duration::from_secs(args::number("--settle", 5));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let root = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));

    let mut first_action = Vec::new();
    let mut whole = Vec::new();
    for _ in 0..runs {
        let options = Options {
            playbooks: vec![root.join("playbooks")],
            ..Options::default()
        };
        let began = Instant::now();
        let report = runtime
            .block_on(demo::run(options, &mut std::io::sink()))
            .expect("the demo runs");
        whole.push(began.elapsed());
        first_action.push(report.signal_to_first_action.expect("a first action"));
    }
    println!("| measure | n | min | p50 | p99 | mean | max |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    println!("{}", Stats::new(first_action).row("signal → first action"));
    println!("{}", Stats::new(whole).row("whole demo (30x time)"));

    println!("\n| `salve run` mode, bundled playbooks, idle after {settle:?} | VmRSS |");
    println!("|---|---:|");
    for (mode, flags) in [
        (
            "cluster-wide, no API (`salve run` without `--listen`)",
            &[][..],
        ),
        ("cluster-wide", &["--listen", "127.0.0.1:0"][..]),
        ("HA (`--leader-elect`)", &["--leader-elect"][..]),
        (
            "node-local (`--node-local`)",
            &["--node-local", "--node-name", "n1"][..],
        ),
        ("sidecar (`--namespace shop`)", &["--namespace", "shop"][..]),
    ] {
        let rss = runtime.block_on(idle_rss(&root, settle, flags));
        println!("| {mode} | {:.1} MiB |", rss as f64 / 1024.0);
    }
}

/// `salve run`'s resident memory, in KiB, `settle` after it started with `flags`.
async fn idle_rss(root: &std::path::Path, settle: Duration, flags: &[&str]) -> u64 {
    let prometheus = Harness::from_env()
        .and_then(|h| h.start_receiver())
        .expect("prometheus");
    let (fake, _client) = FakeApiServer::start().await.expect("sandbox");
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = dir.path().join("kubeconfig");
    fake.write_kubeconfig(&kubeconfig).expect("kubeconfig");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_salve"))
        .args(["run", "--playbooks"])
        .arg(root.join("playbooks"))
        .arg("--policy")
        .arg(root.join("policies/default.yaml"))
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args(["--prometheus", prometheus.url()])
        .arg("--journal")
        .arg(dir.path().join("journal.db"))
        .args(flags)
        .env("POD_NAMESPACE", "salve-system")
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("salve run");
    tokio::time::sleep(settle).await;
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).expect("status");
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS");
    let _ = child.kill();
    let _ = child.wait();
    rss
}
