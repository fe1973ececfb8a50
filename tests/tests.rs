//! Salve's integration tests: one binary, one module per area.
//!
//! Every test here drives real components: the real `salve` binary, the real file system
//! (with real inotify events for hot reload), and a real Prometheus (Debian's package) serving
//! backfilled scenarios.

mod actions;
mod advice;
mod advisor;
mod alertmanager;
mod api;
mod approvers;
mod demo;
mod deploy;
mod events;
mod journal;
mod kube_fake;
mod lease;
mod metrics;
mod monitoring;
mod prometheus;
mod reload;
mod remediation;
mod scope;
mod signals;
mod validate;
mod wasm;

/// Runs `command` (the `salve` binary, set up by the caller): exit code, stdout and stderr.
fn run(command: &mut std::process::Command) -> (Option<i32>, String, String) {
    let out = command.output().expect("run salve");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The example step `name` built by `wasm-sdk/build.sh` into `playbooks/steps/` (CI builds
/// them before the tests).
fn built_step(name: &str) -> std::path::PathBuf {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../playbooks/steps")
        .join(format!("{name}.wasm"));
    assert!(
        path.is_file(),
        "{} is missing: run `bash wasm-sdk/build.sh` first",
        path.display()
    );
    path
}
