//! `salve run`: the daemon.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{Error, Result, read_token, start_reloader};
use crate::advisor::ask::Advisor;
use crate::alertmanager::AlertStore;
use crate::api::{self, ApiState, Approvers, PlaybookStatus, Tokens};
use crate::app::{self, DEFAULT_POLICY, PolicyChoice};
use crate::executor::{Executor, Settings};
use crate::gate::Gate;
use crate::journal::Journal;
use crate::playbook::load::{Loaded, load_text};
use crate::playbook::watch::{self, WatchOptions};
use crate::policy::Policy;
use crate::signal::evaluate::Evaluator;
use crate::signal::evaluation::{Alerts, Sources};
use crate::signal::kube_event::{EventStore, WatchScope};

/// `salve run`'s arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// Playbook files or directories (hot-reloaded).
    #[arg(long, required = true, num_args = 1..)]
    playbooks: Vec<PathBuf>,
    /// The autonomy policy file (hot-reloaded). Without it: the only policy among the
    /// playbook paths, or the built-in default (dry run, ceiling `medium`).
    #[arg(long)]
    policy: Option<PathBuf>,
    /// The Prometheus that PromQL triggers, `verify` and `wait_for` query.
    #[arg(long, env = "SALVE_PROMETHEUS")]
    prometheus: Option<String>,
    /// A kubeconfig file; without it, `KUBECONFIG`, `~/.kube/config` or the in-cluster
    /// service account.
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// The journal (SQLite; created when missing).
    #[arg(long, env = "SALVE_JOURNAL", default_value = "salve-journal.db")]
    journal: PathBuf,
    /// Serve the HTTP API on this address: `/healthz`, `/readyz`, `/metrics`, Alertmanager's
    /// webhook (`alert` triggers) and `/api/v1/` (incidents, approvals, playbooks).
    #[arg(long, env = "SALVE_LISTEN")]
    listen: Option<std::net::SocketAddr>,
    /// Require `Authorization: Bearer <token>` on the webhook, the token read from this file.
    #[arg(long, requires = "listen")]
    webhook_token_file: Option<PathBuf>,
    /// Who may approve, reject or rehearse over the API: a file of lines `TOKEN NAME` (NAME is
    /// recorded with each answer). Without it or `--api-auth`, the API refuses them all.
    #[arg(long, env = "SALVE_API_TOKEN_FILE", requires = "listen")]
    api_token_file: Option<PathBuf>,
    /// Who may approve or reject over the API, in a cluster: `kubernetes` checks the bearer
    /// token with a TokenReview (`kubernetes:AUDIENCE`: only tokens for AUDIENCE) and asks
    /// RBAC with a SubjectAccessReview for verb `approve` or `reject` on `approvals` in API
    /// group `salve.dev`, in the target's namespace; the user name is recorded.
    #[arg(
        long,
        env = "SALVE_API_AUTH",
        value_name = "kubernetes[:AUDIENCE]",
        requires = "listen",
        conflicts_with = "api_token_file"
    )]
    api_auth: Option<api::auth::KubernetesAuth>,
    /// Run every step as a server-side dry run, whatever the policy says.
    #[arg(long)]
    dry_run: bool,
    /// On SIGTERM, how long remediations in flight may take to finish before they are parked
    /// for the next start.
    #[arg(long, default_value = "30s", value_parser = super::parse_duration)]
    grace: Duration,
    /// How often `verify`, `wait_for` and pending approvals are looked at.
    #[arg(long, default_value = "5s", value_parser = super::parse_duration)]
    poll_interval: Duration,
}

/// Runs the daemon until SIGTERM or Ctrl-C.
pub(super) fn run(args: RunArgs) -> Result<ExitCode> {
    let mut paths = args.playbooks.clone();
    if let Some(policy) = &args.policy
        && !paths.iter().any(|p| covers(p, policy))
    {
        paths.push(policy.clone());
    }
    let Some(reloader) = start_reloader(paths) else {
        return Ok(ExitCode::FAILURE);
    };
    let choice = match &args.policy {
        Some(file) => PolicyChoice::File(file.clone()),
        None => PolicyChoice::Default(default_policy()?),
    };
    let Some(policy) = choice.pick(&reloader.active().load()) else {
        eprintln!("salve run: several policies are loaded and none was chosen: pass --policy FILE");
        return Ok(ExitCode::FAILURE);
    };
    let prometheus = args
        .prometheus
        .as_deref()
        .map(|url| Evaluator::new(url, Duration::from_secs(10)))
        .transpose()?;
    let journal = Arc::new(Journal::open(&args.journal)?);
    let webhook_token = args
        .webhook_token_file
        .as_deref()
        .map(read_token)
        .transpose()?;
    let approvers = match args.api_token_file.as_deref().map(Tokens::read).transpose() {
        Ok(Some(tokens)) => Approvers::Tokens(tokens),
        Ok(None) => Approvers::Unconfigured,
        Err(e) => {
            eprintln!("salve run: {e}");
            return Ok(ExitCode::FAILURE);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(Error::Runtime)?;
    runtime.block_on(async move {
        let client = match client(args.kubeconfig.as_deref()).await {
            Ok(client) => client,
            Err(reason) => {
                eprintln!("salve run: cannot reach the Kubernetes API: {reason}");
                return Ok(ExitCode::FAILURE);
            }
        };
        tracing::info!(
            playbooks = reloader.active().load().playbooks().len(),
            policy = policy.name,
            ceiling = %policy.max_autonomous_risk,
            dry_run = policy.dry_run || args.dry_run,
            journal = %args.journal.display(),
            "salve is running"
        );
        let wasm = match crate::wasm::Host::new(crate::wasm::HostOptions::default()) {
            Ok(host) => Some(host),
            Err(error) => {
                tracing::error!(%error, "no WASM host: WASM steps will fail");
                None
            }
        };
        let metrics = crate::metrics::Metrics::default();
        let settings = Settings {
            metrics: metrics.clone(),
            poll: args.poll_interval,
            force_dry_run: args.dry_run,
            wasm,
            advisor: Advisor::new(
                Some(Arc::clone(reloader.active())),
                crate::wasm::cache_home().map(|home| home.join("embeddings")),
            ),
            ..Settings::default()
        };
        let executor = Executor::new(
            client.clone(),
            Arc::clone(&journal),
            Gate::new(policy),
            prometheus.clone(),
            settings,
        );
        let cancel = CancellationToken::new();
        let status = PlaybookStatus::of(Arc::clone(reloader.active()));
        let mut server = None;
        let alerts = match args.listen {
            Some(address) => {
                let listener = tokio::net::TcpListener::bind(address)
                    .await
                    .map_err(|source| Error::Listen { address, source })?;
                let store = AlertStore::new();
                let approvers = match &args.api_auth {
                    Some(auth) => Approvers::Kubernetes(api::auth::Kubernetes::new(
                        client.clone(),
                        auth.audience.clone(),
                    )),
                    None => approvers,
                };
                let state = ApiState::new(
                    Arc::clone(&journal),
                    status.clone(),
                    metrics.clone(),
                    approvers,
                )
                .rehearsing(executor.clone());
                let webhook = api::Webhook {
                    store: store.clone(),
                    token: webhook_token,
                };
                tracing::info!(%address, "serving the API and Alertmanager's webhook");
                let router = api::router(state, Some(webhook));
                server = Some(api::serve(listener, router, cancel.clone()));
                Alerts::Webhook(store)
            }
            None => Alerts::None,
        };
        let reloader = Arc::new(reloader);
        let active = Arc::clone(reloader.active());
        // Event triggers: watchers for the resources and namespaces the playbooks need (fixed
        // at start; a later playbook needing more is inconclusive until a restart).
        let scope = WatchScope::for_playbooks(active.load().playbooks());
        let events = (!scope.is_empty()).then(|| {
            let store = EventStore::new();
            tokio::spawn(store.watch(client.clone(), &scope, cancel.clone()));
            store
        });
        let sources = Sources {
            prometheus,
            alerts,
            events,
        };
        let (reloads_tx, mut reloads) = tokio::sync::mpsc::channel(16);
        let watcher = tokio::spawn(watch::watch(
            reloader,
            WatchOptions {
                reload_on_hangup: true,
                ..WatchOptions::default()
            },
            cancel.clone(),
            reloads_tx,
        ));
        // A reload may change the policy: the gate follows, keeping its counters. The API
        // reports how the last reload went.
        let follower = {
            let (active, executor, metrics) =
                (Arc::clone(&active), executor.clone(), metrics.clone());
            tokio::spawn(async move {
                while let Some(outcome) = reloads.recv().await {
                    status.record(&outcome, chrono::Utc::now());
                    metrics.reload(&outcome);
                    match choice.pick(&active.load()) {
                        Some(policy) => executor.gate().set_policy(policy),
                        None => tracing::error!(
                            "the reloaded set has no single policy to follow; keeping the last one"
                        ),
                    }
                }
            })
        };
        let engine = tokio::spawn(app::run(
            active,
            sources,
            journal,
            Some(executor),
            app::Options {
                grace: args.grace,
                metrics: metrics.clone(),
                ..app::Options::default()
            },
            cancel.clone(),
        ));
        shutdown_signal().await;
        tracing::info!("shutting down");
        cancel.cancel();
        let _ = engine.await;
        let _ = watcher.await;
        follower.abort();
        // The listener stops taking connections at once; answers in flight get a moment.
        if let Some(server) = server
            && tokio::time::timeout(Duration::from_secs(5), server)
                .await
                .is_err()
        {
            tracing::warn!("the API listener did not stop within 5s");
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// Whether loading `path` loads `file` too.
fn covers(path: &Path, file: &Path) -> bool {
    let (path, file) = (
        path.canonicalize().unwrap_or_else(|_| path.to_path_buf()),
        file.canonicalize().unwrap_or_else(|_| file.to_path_buf()),
    );
    file.starts_with(path)
}

/// The built-in default policy.
pub(super) fn default_policy() -> Result<Arc<Policy>> {
    let mut loaded = Loaded::default();
    load_text(
        Path::new("policies/default.yaml"),
        DEFAULT_POLICY,
        &mut loaded,
    );
    loaded
        .policies
        .pop()
        .ok_or_else(|| Error::Internal("the built-in default policy does not load".into()))
}

/// A client from `kubeconfig`, or from the environment (KUBECONFIG, ~/.kube/config,
/// in-cluster), that does not retry refusals.
pub(crate) async fn client(kubeconfig: Option<&Path>) -> std::result::Result<kube::Client, String> {
    let mut config = match kubeconfig {
        Some(path) => {
            let file = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            kube::Config::from_custom_kubeconfig(file, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(|e| format!("{}: {e}", path.display()))?
        }
        None => kube::Config::infer().await.map_err(|e| e.to_string())?,
    };
    // A 429 is an answer (an eviction a disruption budget forbids fails its step now), not
    // something to retry for minutes; watchers back off on their own.
    config.default_retry = false;
    kube::Client::try_from(config).map_err(|e| e.to_string())
}

/// SIGTERM (how Kubernetes stops a pod) or Ctrl-C.
pub(super) async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
