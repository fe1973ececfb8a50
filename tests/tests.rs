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
mod failover;
mod journal;
mod kube_fake;
mod lease;
mod metrics;
mod monitoring;
mod prometheus;
mod reload;
mod remediation;
mod resources;
mod scope;
mod signals;
mod state;
mod validate;
mod wasm;

/// Set to a kubeconfig's path, the Kubernetes tests run against that cluster instead of the
/// in-process fake API server.
const KUBECONFIG: &str = "SALVE_TEST_KUBECONFIG";

/// The client configuration of the kubeconfig at `path` (from [`KUBECONFIG`]), without kube's
/// default retries (as `salve run` builds its own).
async fn real_config(path: &str) -> kube::Config {
    let kubeconfig = kube::config::Kubeconfig::read_from(path)
        .unwrap_or_else(|e| panic!("{KUBECONFIG}={path}: {e}"));
    let options = kube::config::KubeConfigOptions::default();
    let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &options)
        .await
        .unwrap_or_else(|e| panic!("{KUBECONFIG}={path}: {e}"));
    config.default_retry = false;
    config
}

/// A `salve` process under test, killed when dropped, so a failing test leaves no daemon
/// behind.
struct Daemon(std::process::Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A free loopback port (free when asked: bind it soon).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Sends SIGTERM to `child` (a `salve` process) and waits for it to exit (10 s at most): how it
/// exited.
async fn terminate(child: &mut std::process::Child) -> std::process::ExitStatus {
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(sent.success(), "kill -TERM {}", child.id());
    let began = std::time::Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        assert!(
            began.elapsed() < std::time::Duration::from_secs(10),
            "salve did not stop within 10 s of SIGTERM"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

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
