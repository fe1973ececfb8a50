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

/// The API server a test talks to: the in-process fake (with Salve's `SalveIncident` kind), or
/// with [`KUBECONFIG`] a real cluster, in a fresh namespace `salve-test-…` deleted when this is
/// dropped (Salve's CRDs must be installed there: `salve crds | kubectl apply -f -`).
struct TestCluster {
    /// The fake, or `None` on a real cluster.
    fake: Option<salve::kube_fake::FakeApiServer>,
    client: kube::Client,
    /// The fake's `fake_namespace`, or the real cluster's fresh one.
    namespace: String,
    /// The real cluster's kubeconfig.
    kubeconfig: Option<std::path::PathBuf>,
}

impl TestCluster {
    /// Starts the fake (its objects in `fake_namespace`) or opens the real cluster.
    async fn start(fake_namespace: &str) -> TestCluster {
        use kube::Api;
        use salve::state::{KIND, PLURAL};
        let Some(path) = std::env::var(KUBECONFIG).ok().filter(|p| !p.is_empty()) else {
            let (fake, client) = salve::kube_fake::FakeApiServer::start()
                .await
                .expect("the fake starts");
            fake.register(salve::kube_fake::ResourceType::custom(
                "salve.dev/v1",
                KIND,
                PLURAL,
                true,
            ));
            return TestCluster {
                fake: Some(fake),
                client,
                namespace: fake_namespace.into(),
                kubeconfig: None,
            };
        };
        let client = kube::Client::try_from(real_config(&path).await).expect("a client");
        let crd = format!("{PLURAL}.salve.dev");
        use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
        Api::<CustomResourceDefinition>::all(client.clone())
            .get_opt(&crd)
            .await
            .expect("read the CRDs")
            .unwrap_or_else(|| panic!("{crd} is not installed: salve crds | kubectl apply -f -"));
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let namespace = format!("salve-test-{}-{nanos:x}", std::process::id());
        let object: k8s_openapi::api::core::v1::Namespace = serde_json::from_value(
            serde_json::json!({"metadata": {"name": namespace, "labels": {"salve.dev/test": "true"}}}),
        )
        .expect("a namespace");
        Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone())
            .create(&Default::default(), &object)
            .await
            .expect("create the test namespace");
        TestCluster {
            fake: None,
            client,
            namespace,
            kubeconfig: Some(path.into()),
        }
    }

    /// A kubeconfig for a `salve` process: the real cluster's, or one for the fake written in
    /// `dir`.
    fn kubeconfig(&self, dir: &std::path::Path) -> std::path::PathBuf {
        match (&self.fake, &self.kubeconfig) {
            (Some(fake), _) => {
                let path = dir.join("kubeconfig");
                fake.write_kubeconfig(&path).expect("write the kubeconfig");
                path
            }
            (None, Some(path)) => path.clone(),
            (None, None) => unreachable!("a real cluster has its kubeconfig"),
        }
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        let Some(path) = self.kubeconfig.clone() else {
            return;
        };
        let namespace = self.namespace.clone();
        clean_up(
            path.to_string_lossy().into_owned(),
            &format!("the test namespace {namespace}"),
            move |client| async move {
                kube::Api::<k8s_openapi::api::core::v1::Namespace>::all(client)
                    .delete(&namespace, &kube::api::DeleteParams::background())
                    .await?;
                Ok(())
            },
        );
    }
}

/// Runs `cleanup` with a client of the real cluster whose kubeconfig is at `path`, from a
/// `Drop`: on a fresh runtime on a thread of its own (`Drop` cannot await, may run during a
/// panic, and a client belongs to the runtime it was made on). Says so when `what` could not
/// be deleted.
fn clean_up<F, Fut>(path: String, what: &str, cleanup: F)
where
    F: FnOnce(kube::Client) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let done = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        runtime.block_on(async {
            let client = kube::Client::try_from(real_config(&path).await)?;
            cleanup(client).await
        })
    })
    .join();
    match done {
        Ok(Ok(())) => {}
        Ok(Err(e)) => eprintln!("could not delete {what}: {e}; delete it by hand"),
        Err(_) => eprintln!("could not delete {what}; delete it by hand"),
    }
}
