//! The journal's cost per decision: how long `Journal::append` takes (a committed, fsynced
//! SQLite transaction in WAL mode) for entries the size the engine writes, and how long reading
//! the incident list back takes.
//!
//! Run with `cargo bench --bench journal`. Options (after `--`): `--entries N` (2000),
//! `--dir DIR` (a temporary directory; pass one on the disk the engine will use).

use std::path::PathBuf;
use std::time::Instant;

use chrono::Utc;
use salve::journal::{Journal, Kind, Record};
use serde_json::json;

#[path = "common/args.rs"]
mod args;
#[path = "common/stats.rs"]
mod stats;

use stats::Stats;

fn main() {
    let entries = usize::try_from(args::number("--entries", 2000)).expect("a count");
    let temp = tempfile::tempdir().expect("tempdir");
    let dir = args::option("--dir").map_or_else(|| temp.path().to_path_buf(), PathBuf::from);
    let path = dir.join(format!("salve-bench-journal-{}.db", std::process::id()));
    let journal = Journal::open(&path).expect("open");

    // A firing signal as the engine journals it, and the incident it opens: about 300 bytes.
    let record = |n: usize| Record {
        at: Utc::now(),
        kind: if n.is_multiple_of(10) {
            Kind::IncidentOpened
        } else {
            Kind::SignalFiring
        },
        playbook: "memory-leak-rollback".into(),
        incident: (n.is_multiple_of(10)).then(|| format!("inc-{n:012x}")),
        detail: json!({
            "labels": {"namespace": "shop", "pod": format!("api-7f9c-{n}"), "container": "app"},
            "values": {"secondsToOOM": 1140.0, "growthMiBPerMinute": 19.07, "percentOfLimit": 82.0},
            "value": 1140.0,
            "activeAt": "2026-11-25T03:15:00Z",
            "target": "Deployment shop/api",
        }),
    };
    let mut samples = Vec::with_capacity(entries);
    let started = Instant::now();
    for n in 0..entries {
        let r = record(n);
        let begun = Instant::now();
        journal.append(&r).expect("append");
        samples.push(begun.elapsed());
    }
    let total = started.elapsed();
    let read = Instant::now();
    let incidents = journal.incidents().expect("incidents");
    let read = read.elapsed();
    let size = std::fs::metadata(&path).map_or(0, |m| m.len())
        + std::fs::metadata(path.with_extension("db-wal")).map_or(0, |m| m.len());

    println!("journal on {}: {entries} entries", dir.display());
    println!("| measurement | n | min | p50 | p99 | mean | max |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    println!("{}", Stats::new(samples).row("append (commit + fsync)"));
    println!(
        "throughput: {:.0} entries/s; incidents() over {} incidents: {:.2} ms; file + WAL: {} KiB",
        entries as f64 / total.as_secs_f64(),
        incidents.len(),
        read.as_secs_f64() * 1e3,
        size / 1024
    );
    drop(journal);
    for suffix in ["db", "db-wal", "db-shm"] {
        let _ = std::fs::remove_file(path.with_extension(suffix));
    }
}
