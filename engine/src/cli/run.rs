//! `salve run`: the daemon.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{Error, Result, read_token, start_reloader};
use crate::advisor::ask::Advisor;
use crate::alertmanager::AlertStore;
use crate::alertmanager::relay::Relay;
use crate::api::{self, ApiState, Approvers, PlaybookStatus, Tokens};
use crate::app::{self, DEFAULT_POLICY, PolicyChoice};
use crate::executor::{Executor, Settings};
use crate::gate::Gate;
use crate::journal::Journal;
use crate::lease::{Elector, Timings};
use crate::playbook::load::{Loaded, load_text};
use crate::playbook::resources;
use crate::playbook::watch::{self, WatchOptions};
use crate::policy::Policy;
use crate::scope::Scope;
use crate::signal::evaluate::Evaluator;
use crate::signal::evaluation::{Alerts, Sources};
use crate::signal::kube_event::{EventStore, WatchScope};
use crate::state::{ClusterMirror, Importer, IncidentStore};

/// `salve run`'s arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// Playbook files or directories (hot-reloaded; optional with `--playbook-resources`).
    #[arg(long, required_unless_present = "playbook_resources", num_args = 1..)]
    playbooks: Vec<PathBuf>,
    /// The autonomy policy file (hot-reloaded). Without it: the only policy among the
    /// playbook paths (and the `AutonomyPolicy` objects, with `--playbook-resources`), or the
    /// built-in default (dry run, ceiling `medium`).
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
    /// Who may approve, reject or rehearse over the API, in a cluster: `kubernetes` checks the
    /// bearer token with a TokenReview (`kubernetes:AUDIENCE`: only tokens for AUDIENCE) and
    /// asks RBAC with a SubjectAccessReview for verb `approve` or `reject` on `approvals`
    /// (`trigger` on `playbooks`) in API group `salve.dev`, in the target's namespace; the user
    /// name is recorded.
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
    /// Leader election among replicas.
    #[command(flatten)]
    election: Election,
    /// Where this Salve acts: namespaces (sidecar mode) or its own node (DaemonSet mode).
    #[command(flatten)]
    scoping: Scoping,
    /// Also load the `Playbook` and `AutonomyPolicy` custom resources (salve.dev/v1) of the
    /// cluster with the files, hot-reloaded the same way, and report on each in its status
    /// (`Valid`, `Active`, `digest`, `errors`).
    #[arg(long)]
    playbook_resources: bool,
    /// Where to watch those (repeat the flag, or comma-separate): by default the
    /// `--namespace` namespaces, else every namespace.
    #[arg(
        long = "playbook-resources-namespace",
        value_delimiter = ',',
        value_name = "NS",
        requires = "playbook_resources"
    )]
    playbook_resources_namespaces: Vec<String>,
}

/// `--leader-elect`: which replica acts.
#[derive(Debug, Clone, clap::Args)]
struct Election {
    /// Elect a leader among the replicas on a coordination.k8s.io Lease: only the leader runs
    /// remediation steps (each step checks, after any wait for an approval, that the lead is
    /// still held); the others keep evaluating and take over when it goes. On SIGTERM the
    /// leader parks its remediations, then releases the Lease. Every incident's entries are
    /// also kept in a `SalveIncident` object in the Lease's namespace, so the next leader
    /// resumes or rolls back what was in flight.
    #[arg(long = "leader-elect", id = "leader_elect")]
    enabled: bool,
    /// Keep every incident's journal entries in a `SalveIncident` object in the Lease's
    /// namespace as well (implied by `--leader-elect`), and read them back at start: a pod
    /// rescheduled with an empty journal resumes or rolls back what was in flight.
    #[arg(long)]
    cluster_state: bool,
    /// How long an incident's `SalveIncident` is kept once it is over (no remediation in
    /// flight, nothing written since); then the leader deletes it. Every journal that holds
    /// its entries keeps them.
    #[arg(long, default_value = "24h", value_parser = super::parse_duration)]
    incident_retention: Duration,
    /// The Lease's name.
    #[arg(long, default_value = "salve", requires = "leader_elect")]
    lease_name: String,
    /// How long after the last renewal it saw a follower may take the lead over (whole
    /// seconds). With `--renew-deadline`, `--retry-period`: client-go's leader election
    /// timings, checked as it checks them (lease duration > renew deadline > 1.2 × retry
    /// period).
    #[arg(long, default_value = "15s", value_parser = super::parse_duration, requires = "leader_elect")]
    lease_duration: Duration,
    /// How long after the start of its last successful renewal the leader may act: a leader
    /// that cannot renew stops acting at this deadline, `--lease-duration` minus this before
    /// anyone may take over.
    #[arg(long, default_value = "10s", value_parser = super::parse_duration, requires = "leader_elect")]
    renew_deadline: Duration,
    /// How often the leader renews and the followers look at the Lease.
    #[arg(long, default_value = "2s", value_parser = super::parse_duration, requires = "leader_elect")]
    retry_period: Duration,
    /// Where the other replicas reach this one's API (`HOST:PORT`), written on the Lease while
    /// it leads: a follower's Alertmanager webhook relays each payload there, since only the
    /// leader acts. Default: `POD_IP` (the chart sets it from the downward API) with the
    /// `--listen` port.
    #[arg(
        long,
        env = "SALVE_ADVERTISE_ADDRESS",
        value_name = "HOST:PORT",
        requires = "leader_elect"
    )]
    advertise_address: Option<String>,
    /// The Lease's namespace (default: `POD_NAMESPACE`, which the chart sets from the downward
    /// API). With `--node-local`, the Lease counting cordoned nodes (`salve-cordons`) lives
    /// there too.
    #[arg(long, env = "POD_NAMESPACE")]
    lease_namespace: Option<String>,
}

/// `--namespace`, `--node-local`: where this Salve acts (see [`crate::scope`]).
#[derive(Debug, Clone, clap::Args)]
struct Scoping {
    /// Act only in this namespace (repeat the flag, or a comma-separated `SALVE_NAMESPACES`):
    /// a step on a target elsewhere, or on a cluster-scoped one (a Node), is denied; every
    /// PromQL query gets `namespace=~"..."`; only these namespaces are watched and read.
    /// Sidecar mode passes its own namespace.
    #[arg(
        long = "namespace",
        env = "SALVE_NAMESPACES",
        value_delimiter = ',',
        value_name = "NS"
    )]
    namespaces: Vec<String>,
    /// DaemonSet mode: act only on this node (`--node-name`) and the pods running on it —
    /// never on another node, its pods, or a workload (which spans nodes); every PromQL query
    /// gets `<node-label>="<node>"`; only the node's pods and Node are watched. At most
    /// `--max-cordoned` nodes are cordoned by Salve across the cluster at once, counted in the
    /// Lease `salve-cordons` in `--lease-namespace`.
    #[arg(long)]
    node_local: bool,
    /// The node this Salve runs on (a DaemonSet sets `SALVE_NODE_NAME` from `spec.nodeName`).
    #[arg(long, env = "SALVE_NODE_NAME", value_name = "NAME")]
    node_name: Option<String>,
    /// The label carrying the node's name on the metrics.
    #[arg(
        long,
        default_value = crate::scope::DEFAULT_NODE_LABEL,
        value_name = "LABEL",
        requires = "node_local"
    )]
    node_label: String,
    /// How many nodes Salve may have cordoned across the cluster at once (0: no cordons).
    #[arg(long, default_value_t = 1, value_name = "N", requires = "node_local")]
    max_cordoned: u32,
}

impl Scoping {
    /// The scope the flags ask for, or why they do not make one.
    fn scope(&self, lease_namespace: Option<&str>) -> std::result::Result<Scope, String> {
        let mut scope = Scope::cluster();
        let namespaces: Vec<&str> = self
            .namespaces
            .iter()
            .map(|n| n.trim())
            .filter(|n| !n.is_empty())
            .collect();
        if let Some(bad) = namespaces.iter().find(|n| !is_dns_label(n)) {
            return Err(format!(
                "--namespace `{bad}` is not a namespace name (lowercase letters, digits and `-`, \
                 at most 63)"
            ));
        }
        if !namespaces.is_empty() {
            scope = Scope::namespaces(namespaces);
        } else if !self.namespaces.is_empty() {
            return Err("--namespace (or SALVE_NAMESPACES) names no namespace".into());
        }
        if self.node_local {
            let Some(node) = self
                .node_name
                .as_deref()
                .map(str::trim)
                .filter(|n| !n.is_empty())
            else {
                return Err(NO_NODE_NAME.into());
            };
            let Some(lease_namespace) = lease_namespace.filter(|n| !n.is_empty()) else {
                return Err(NO_LEASE_NAMESPACE.into());
            };
            let mut local = Scope::node_local(node, self.max_cordoned, lease_namespace);
            if let Some(own) = &mut local.node {
                own.label = self.node_label.clone();
            }
            scope.node = local.node;
        }
        scope.matchers()?;
        Ok(scope)
    }
}

/// Why `--node-local` cannot start without its node's name.
const NO_NODE_NAME: &str = "--node-local needs the name of the node this Salve runs on: \
    --node-name NAME or SALVE_NODE_NAME (a DaemonSet sets it from the downward API, fieldRef \
    spec.nodeName)";

/// Why `--node-local` cannot start without a namespace for its count of cordoned nodes.
const NO_LEASE_NAMESPACE: &str = "--node-local needs the namespace of the Lease counting \
    cordoned nodes: --lease-namespace NS or POD_NAMESPACE";

/// Whether `name` is a DNS label, as namespace names are.
fn is_dns_label(name: &str) -> bool {
    (1..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

impl Election {
    /// The elector `--leader-elect` asks for, named by [`identity`].
    fn elector(
        &self,
        client: kube::Client,
        listen: Option<std::net::SocketAddr>,
    ) -> std::result::Result<Option<Elector>, String> {
        if !self.enabled {
            return Ok(None);
        }
        let namespace = self.namespace("--leader-elect")?;
        Elector::new(
            client,
            namespace,
            &self.lease_name,
            identity(),
            Timings {
                lease_duration: self.lease_duration,
                renew_deadline: self.renew_deadline,
                retry_period: self.retry_period,
            },
        )
        .map(|elector| match self.address(listen) {
            Some(address) => Some(elector.advertising(address)),
            None => Some(elector),
        })
        .map_err(|e| e.to_string())
    }

    /// Where the other replicas reach this one's API: `--advertise-address`, else `POD_IP`
    /// with the port of `listen`; `None` without an API.
    fn address(&self, listen: Option<std::net::SocketAddr>) -> Option<String> {
        let listen = listen?;
        if let Some(address) = &self.advertise_address {
            return Some(address.clone());
        }
        let ip = std::env::var("POD_IP").ok()?.parse().ok()?;
        Some(std::net::SocketAddr::new(ip, listen.port()).to_string())
    }

    /// Where the `SalveIncident`s are kept, when they are (`--cluster-state` or
    /// `--leader-elect`): the Lease's namespace.
    fn state_namespace(&self) -> std::result::Result<Option<&str>, String> {
        if !(self.enabled || self.cluster_state) {
            return Ok(None);
        }
        self.namespace("--cluster-state").map(Some)
    }

    /// Salve's own namespace, where `flag` keeps its objects.
    fn namespace(&self, flag: &str) -> std::result::Result<&str, String> {
        self.lease_namespace
            .as_deref()
            .filter(|n| !n.is_empty())
            .ok_or_else(|| {
                format!("{flag} needs Salve's namespace: --lease-namespace NS or POD_NAMESPACE")
            })
    }
}

/// This process's identity among the replicas, as `POD_NAME` (or the host name) with a random
/// suffix: unique per process, as the election and the cluster's copy of the journal need.
fn identity() -> String {
    let host = std::env::var("POD_NAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "salve".into());
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos())
        ^ std::process::id();
    format!("{host}_{nonce:08x}")
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
    let scope = match args.scoping.scope(args.election.lease_namespace.as_deref()) {
        Ok(scope) => scope,
        Err(reason) => {
            eprintln!("salve run: {reason}");
            return Ok(ExitCode::FAILURE);
        }
    };
    // Every query asks only for the scope's series (checked to build just above).
    let matchers = scope.matchers().unwrap_or_default();
    let prometheus = args
        .prometheus
        .as_deref()
        .map(|url| {
            Evaluator::new(url, Duration::from_secs(10)).map(|e| e.restricted(matchers.clone()))
        })
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
        let shutdown = Shutdown::listen();
        let client = match client(args.kubeconfig.as_deref()).await {
            Ok(client) => client,
            Err(reason) => {
                eprintln!("salve run: cannot reach the Kubernetes API: {reason}");
                return Ok(ExitCode::FAILURE);
            }
        };
        let cancel = CancellationToken::new();
        // Custom resources join the set before the engine starts, their policy too.
        let (reloader, policy) = if args.playbook_resources {
            let namespaces = match &args.playbook_resources_namespaces {
                some if !some.is_empty() => Some(some.clone()),
                _ => scope.namespaces.as_ref().map(|n| n.iter().cloned().collect()),
            };
            let (reloader, _) =
                resources::start(reloader, client.clone(), namespaces, cancel.clone()).await;
            let policy = choice.pick(&reloader.active().load()).unwrap_or_else(|| {
                tracing::error!(
                    "several policies are loaded and none was chosen (pass --policy FILE); \
                     keeping the one chosen from the files"
                );
                policy
            });
            (reloader, policy)
        } else {
            (reloader, policy)
        };
        tracing::info!(
            playbooks = reloader.active().load().playbooks().len(),
            policy = policy.name,
            ceiling = %policy.max_autonomous_risk,
            dry_run = policy.dry_run || args.dry_run,
            journal = %args.journal.display(),
            scope = %scope,
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
        let elector = match args.election.elector(client.clone(), args.listen) {
            Ok(elector) => elector,
            Err(reason) => {
                eprintln!("salve run: {reason}");
                return Ok(ExitCode::FAILURE);
            }
        };
        // Under leader election the incidents are kept in the cluster too, beside the Lease.
        let cluster = match args.election.state_namespace() {
            Ok(Some(namespace)) => {
                let store = IncidentStore::new(client.clone(), namespace);
                let writer = elector
                    .as_ref()
                    .map_or_else(identity, |e| e.identity().to_string());
                let leadership = elector.as_ref().map(Elector::subscribe);
                let config = match config(args.kubeconfig.as_deref()).await {
                    Ok(config) => config,
                    Err(reason) => {
                        eprintln!("salve run: cannot reach the Kubernetes API: {reason}");
                        return Ok(ExitCode::FAILURE);
                    }
                };
                let mirror = ClusterMirror::start(config, namespace, writer.clone(), leadership)
                    .map_err(Error::Runtime)?;
                journal.set_mirror(Arc::new(mirror));
                Some(Importer::new(store, writer).retaining(args.election.incident_retention))
            }
            Ok(None) => None,
            Err(reason) => {
                eprintln!("salve run: {reason}");
                return Ok(ExitCode::FAILURE);
            }
        };
        let settings = Settings {
            leadership: elector.as_ref().map(Elector::subscribe),
            cluster,
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
            Gate::new(policy).scoped(scope.clone()),
            prometheus.clone(),
            settings,
        );
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
                let relay = match (&elector, args.election.namespace("--leader-elect")) {
                    (Some(elector), Ok(namespace)) => Some(Relay::new(
                        client.clone(),
                        namespace,
                        &args.election.lease_name,
                        elector.identity(),
                        elector.subscribe(),
                    )),
                    _ => None,
                };
                let webhook = api::Webhook {
                    store: store.clone(),
                    token: webhook_token,
                    relay,
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
        let scope = WatchScope::for_playbooks(active.load().playbooks()).within(&scope);
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
        // The elector stops after the engine: the lead is released only once nothing acts.
        let election_cancel = CancellationToken::new();
        if let Some(mut leadership) = elector.as_ref().map(Elector::subscribe) {
            let metrics = metrics.clone();
            tokio::spawn(async move {
                loop {
                    let leads = leadership.borrow_and_update().lead().is_some();
                    metrics.leader(leads);
                    if leadership.changed().await.is_err() {
                        break;
                    }
                }
            });
        }
        let election = elector.map(|elector| tokio::spawn(elector.run(election_cancel.clone())));
        shutdown.wait().await;
        tracing::info!("shutting down");
        cancel.cancel();
        let _ = engine.await;
        election_cancel.cancel();
        if let Some(Ok(Err(error))) = match election {
            Some(election) => Some(election.await),
            None => None,
        } {
            tracing::warn!(%error, "the Lease was not released; another replica takes over when it expires");
        }
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
    kube::Client::try_from(config(kubeconfig).await?).map_err(|e| e.to_string())
}

/// The configuration [`client`] makes its client from.
async fn config(kubeconfig: Option<&Path>) -> std::result::Result<kube::Config, String> {
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
    Ok(config)
}

/// SIGTERM (how Kubernetes stops a pod) or Ctrl-C (SIGINT), listened for from the moment it
/// is made: make it first thing in the runtime, so that a signal during start-up (a pod deleted
/// while it loads) is honoured as a graceful stop instead of killing the process.
pub(super) struct Shutdown {
    #[cfg(unix)]
    signals: Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>,
}

impl Shutdown {
    /// Starts listening (inside a Tokio runtime).
    pub(super) fn listen() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let signals = signal(SignalKind::terminate())
                .and_then(|term| Ok((term, signal(SignalKind::interrupt())?)))
                .inspect_err(|error| tracing::warn!(%error, "cannot listen for SIGTERM"))
                .ok();
            Shutdown { signals }
        }
        #[cfg(not(unix))]
        Shutdown {}
    }

    /// Until SIGTERM or Ctrl-C (received since [`Shutdown::listen`]).
    pub(super) async fn wait(self) {
        #[cfg(unix)]
        if let Some((mut term, mut interrupt)) = self.signals {
            tokio::select! {
                _ = term.recv() => {}
                _ = interrupt.recv() => {}
            }
            return;
        }
        let _ = tokio::signal::ctrl_c().await;
    }
}
