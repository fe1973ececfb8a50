//! Leader election on a Lease (`salve::lease`) through the real `kube::Client`: one leader at a
//! time, release on cancellation, a partitioned leader stepping down before anyone takes over,
//! and stale writes refused. Timings are short (lease 1 s, renew deadline 600 ms, retry 100 ms).
//!
//! A leader's network is cut with a TCP proxy between its client and the API server that, once
//! cut, black-holes every connection (requests hang, as in a partition) until healed.
//!
//! # Against a real cluster
//!
//! With `SALVE_TEST_KUBECONFIG=/path/to/kubeconfig` the tests run against that cluster, in the
//! kubeconfig's namespace (`default` if none), each on its own Lease `salve-test-lease-…`,
//! deleted when the test ends (after a killed run, delete the leftover `salve-test-lease-*`
//! Leases by hand). The proxy forwards TLS as is; the client keeps verifying the original
//! server name.
//!
//! ```text
//! SALVE_TEST_KUBECONFIG=~/.kube/kind cargo test --test tests -- lease::
//! ```
//!
//! `cargo test --test tests lease -- --nocapture` prints the measured failover times.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, PostParams};
use salve::kube_fake::FakeApiServer;
use salve::lease::{Elector, FencingTerm, Lead, Leadership, Timings};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::{KUBECONFIG, real_config};

const LEASE: Duration = Duration::from_secs(1);
const RENEW: Duration = Duration::from_millis(600);
const RETRY: Duration = Duration::from_millis(100);

fn timings() -> Timings {
    Timings {
        lease_duration: LEASE,
        renew_deadline: RENEW,
        retry_period: RETRY,
    }
}

/// A test's API server (the fake, or a real cluster) and its Lease.
struct Env {
    /// The fake, kept running for the test.
    _fake: Option<FakeApiServer>,
    config: kube::Config,
    namespace: String,
    lease: String,
    /// The kubeconfig of a real cluster (to delete the Lease at the end).
    kubeconfig: Option<String>,
}

impl Env {
    async fn start(test: &str) -> Env {
        let Some(path) = std::env::var(KUBECONFIG).ok().filter(|p| !p.is_empty()) else {
            let (fake, _) = FakeApiServer::start().await.expect("the fake starts");
            let mut config = kube::Config::new(fake.url().parse().expect("a URL"));
            config.default_retry = false;
            return Env {
                _fake: Some(fake),
                config,
                namespace: "salve".into(),
                lease: format!("salve-{test}"),
                kubeconfig: None,
            };
        };
        let config = real_config(&path).await;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        Env {
            _fake: None,
            namespace: config.default_namespace.clone(),
            lease: format!("salve-test-lease-{test}-{}-{nanos:x}", std::process::id()),
            config,
            kubeconfig: Some(path),
        }
    }

    fn client(&self) -> kube::Client {
        kube::Client::try_from(self.config.clone()).expect("a client")
    }

    fn api(&self) -> Api<Lease> {
        Api::namespaced(self.client(), &self.namespace)
    }

    async fn lease(&self) -> Lease {
        self.api().get(&self.lease).await.expect("the Lease")
    }

    /// A client whose connections go through `proxy`.
    fn client_via(&self, proxy: &Proxy) -> kube::Client {
        let mut config = self.config.clone();
        let url = &config.cluster_url;
        if config.tls_server_name.is_none() {
            config.tls_server_name = url.host().map(str::to_owned);
        }
        let scheme = url.scheme_str().unwrap_or("https");
        config.cluster_url = format!("{scheme}://{}", proxy.addr).parse().expect("a URL");
        kube::Client::try_from(config).expect("a client")
    }

    /// `host:port` of the API server.
    fn upstream(&self) -> String {
        let url = &self.config.cluster_url;
        let port = url.port_u16().unwrap_or(match url.scheme_str() {
            Some("http") => 80,
            _ => 443,
        });
        format!("{}:{port}", url.host().expect("a host"))
    }

    fn candidate(&self, client: kube::Client, identity: &str) -> Candidate {
        let elector = Elector::new(client, &self.namespace, &self.lease, identity, timings())
            .expect("valid timings");
        let rx = elector.subscribe();
        let cancel = CancellationToken::new();
        let task = tokio::spawn(elector.run(cancel.clone()));
        Candidate {
            identity: identity.to_owned(),
            rx,
            cancel,
            task: Some(task),
        }
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let Some(path) = self.kubeconfig.take() else {
            return;
        };
        let (namespace, lease) = (self.namespace.clone(), self.lease.clone());
        crate::clean_up(
            path,
            &format!("Lease {namespace}/{lease}"),
            move |client| async move {
                Api::<Lease>::namespaced(client, &namespace)
                    .delete(&lease, &DeleteParams::default())
                    .await?;
                Ok(())
            },
        );
    }
}

/// One running elector.
struct Candidate {
    identity: String,
    rx: watch::Receiver<Leadership>,
    cancel: CancellationToken,
    task: Option<JoinHandle<salve::lease::Result<()>>>,
}

impl Candidate {
    /// Waits until it leads; the lead, and when it was seen.
    async fn leading(&mut self, within: Duration) -> (Lead, Instant) {
        let lead = tokio::time::timeout(within, self.rx.wait_for(|l| l.lead().is_some()))
            .await
            .unwrap_or_else(|_| panic!("{} did not lead within {within:?}", self.identity))
            .expect("the elector is running")
            .lead()
            .copied()
            .expect("a lead");
        (lead, Instant::now())
    }

    /// Waits until it follows `holder`; when it was seen.
    async fn following(&mut self, holder: &str, within: Duration) -> Instant {
        let wanted = Leadership::Follower {
            holder: Some(holder.to_owned()),
        };
        let seen = tokio::time::timeout(within, self.rx.wait_for(|l| *l == wanted))
            .await
            .is_ok_and(|r| r.is_ok());
        assert!(
            seen,
            "{} did not follow {holder} within {within:?}: {:?}",
            self.identity,
            *self.rx.borrow()
        );
        Instant::now()
    }

    /// Cancels it and waits until it has stopped (and released).
    async fn stop(&mut self) -> salve::lease::Result<()> {
        self.cancel.cancel();
        let task = self.task.take().expect("running");
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("stops promptly")
            .expect("did not panic")
    }
}

impl Drop for Candidate {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// A TCP proxy to the API server that can black-hole its connections: once cut, open
/// connections stop forwarding (but stay open) and new ones are accepted and never answered,
/// until healed (existing black-holed connections stay dead).
struct Proxy {
    addr: std::net::SocketAddr,
    cut: watch::Sender<bool>,
    stop: CancellationToken,
}

impl Proxy {
    async fn start(upstream: String) -> Proxy {
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("bind the proxy");
        let addr = listener.local_addr().expect("an address");
        let cut = watch::Sender::new(false);
        let stop = CancellationToken::new();
        let (cut_rx, stop_accepting) = (cut.subscribe(), stop.clone());
        tokio::spawn(async move {
            loop {
                let mut inbound = tokio::select! {
                    () = stop_accepting.cancelled() => return,
                    accepted = listener.accept() => match accepted {
                        Ok((socket, _)) => socket,
                        Err(_) => continue,
                    },
                };
                let (mut cut_rx, stop, upstream) =
                    (cut_rx.clone(), stop_accepting.clone(), upstream.clone());
                tokio::spawn(async move {
                    let mut held = None;
                    let healthy = !*cut_rx.borrow();
                    if healthy && let Ok(mut outbound) = TcpStream::connect(&upstream).await {
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => return,
                            _ = cut_rx.wait_for(|cut| *cut) => {}
                            () = stop.cancelled() => return,
                        }
                        held = Some(outbound);
                    }
                    // Black-holed: keep both ends open, forward nothing.
                    stop.cancelled().await;
                    drop((inbound, held));
                });
            }
        });
        Proxy { addr, cut, stop }
    }

    fn cut(&self) {
        self.cut.send_replace(true);
    }

    fn heal(&self) {
        self.cut.send_replace(false);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn term_of(lease: &Lease) -> FencingTerm {
    let transitions = lease
        .spec
        .as_ref()
        .and_then(|s| s.lease_transitions)
        .unwrap_or(0);
    FencingTerm(u64::try_from(transitions).expect("non-negative"))
}

fn holder_of(lease: &Lease) -> Option<String> {
    lease.spec.as_ref().and_then(|s| s.holder_identity.clone())
}

/// The identities that may act at one instant, from a consistent snapshot of every elector's
/// published state (read twice; retried if anything changed in between).
fn acting(candidates: &[Candidate]) -> Vec<(String, FencingTerm)> {
    loop {
        let now = Instant::now();
        let first: Vec<Leadership> = candidates.iter().map(|c| c.rx.borrow().clone()).collect();
        let second: Vec<Leadership> = candidates.iter().map(|c| c.rx.borrow().clone()).collect();
        if first == second {
            return candidates
                .iter()
                .zip(&first)
                .filter_map(|(c, l)| l.acting_term(now).map(|t| (c.identity.clone(), t)))
                .collect();
        }
    }
}

/// Three candidates on one Lease, with the leader stopped twice (and a newcomer started each
/// time): sampled every few milliseconds, never two may act at once, a leader is nearly always
/// there, and every new lead has a greater term.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leader_at_a_time() {
    let env = Env::start("one-leader").await;
    let mut candidates: Vec<Candidate> = (0..3)
        .map(|i| env.candidate(env.client(), &format!("salve-{i}")))
        .collect();
    let first = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Some(acting) = acting(&candidates).pop() {
                return acting;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("someone leads");

    let (mut samples, mut led) = (0u32, 0u32);
    let mut leads = vec![first];
    let start = Instant::now();
    let mut stops = vec![
        start + Duration::from_millis(1200),
        start + Duration::from_millis(600),
    ];
    let mut newcomers = 3;
    while start.elapsed() < Duration::from_millis(1800) {
        let now_acting = acting(&candidates);
        assert!(now_acting.len() <= 1, "two leaders at once: {now_acting:?}");
        samples += 1;
        if let Some(lead) = now_acting.first() {
            led += 1;
            if leads.last() != Some(lead) {
                leads.push(lead.clone());
            }
        }
        if stops.last().is_some_and(|&at| Instant::now() >= at) {
            stops.pop();
            // Stop whoever leads (without waiting: sampling goes on during the release).
            if let Some((leader, _)) = now_acting.first()
                && let Some(c) = candidates.iter().find(|c| &c.identity == leader)
            {
                c.cancel.cancel();
            }
            candidates.push(env.candidate(env.client(), &format!("salve-{newcomers}")));
            newcomers += 1;
        }
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    assert!(
        leads.windows(2).all(|w| w[0].1 < w[1].1),
        "every new leader has a greater term: {leads:?}"
    );
    assert!(
        leads.len() >= 3,
        "the stopped leaders were replaced: {leads:?}"
    );
    // Each stop costs about one retry period without a leader; nothing else should.
    assert!(
        f64::from(led) >= 0.6 * f64::from(samples),
        "a leader in only {led} of {samples} samples"
    );
    let (leader, term) = leads.last().cloned().expect("a leader");
    let lease = env.lease().await;
    assert_eq!(holder_of(&lease).as_deref(), Some(leader.as_str()));
    assert_eq!(
        term_of(&lease),
        term,
        "the term is the Lease's leaseTransitions"
    );
}

/// A cancelled leader stops acting, releases the Lease, and the follower leads at once (well
/// before the lease duration it would otherwise wait), with a greater term.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_leader_releases_and_the_follower_takes_over_at_once() {
    let env = Env::start("release").await;
    let mut a = env.candidate(env.client(), "salve-a");
    let (a_lead, _) = a.leading(Duration::from_secs(5)).await;
    let mut b = env.candidate(env.client(), "salve-b");
    b.following("salve-a", Duration::from_secs(2)).await;
    // A few renewals: B's view of the Lease is fresh, so only a release lets it in early.
    tokio::time::sleep(3 * RETRY).await;
    let acquired = env.lease().await;
    let spec = acquired.spec.clone().expect("a spec");
    assert_eq!(spec.holder_identity.as_deref(), Some("salve-a"));
    assert_eq!(spec.lease_duration_seconds, Some(1));
    assert!(spec.acquire_time.is_some() && spec.renew_time.is_some());
    assert!(
        spec.renew_time > spec.acquire_time,
        "renewed since acquired: {spec:?}"
    );

    let cancelled = Instant::now();
    a.stop().await.expect("released");
    assert!(!a.rx.borrow().may_act(Instant::now()));
    assert_eq!(*a.rx.borrow(), Leadership::Follower { holder: None });
    let (b_lead, b_seen) = b.leading(Duration::from_secs(3)).await;
    let took = b_seen - cancelled;
    println!(
        "lease: leader cancelled -> follower leads in {took:?} (lease {LEASE:?}, retry {RETRY:?})"
    );
    assert!(
        took < LEASE / 2,
        "the follower waited {took:?}, as for an expiry, not a release"
    );
    assert!(b_lead.term > a_lead.term, "{b_lead:?} after {a_lead:?}");
    let lease = env.lease().await;
    assert_eq!(holder_of(&lease).as_deref(), Some("salve-b"));
    assert_eq!(term_of(&lease), b_lead.term);
    assert!(lease.spec.and_then(|s| s.acquire_time) > spec.acquire_time);
}

/// A leader cut off from the API server stops acting at its renew deadline, before the follower
/// can take the Lease (which it does once the lease has expired as it observed it), with a
/// greater term; healed, the old leader follows and does not overwrite.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitioned_leader_stops_acting_before_the_follower_takes_over() {
    let env = Env::start("partition").await;
    let proxy = Proxy::start(env.upstream()).await;
    let mut a = env.candidate(env.client_via(&proxy), "salve-a");
    let (a_first, _) = a.leading(Duration::from_secs(5)).await;
    let mut b = env.candidate(env.client(), "salve-b");
    b.following("salve-a", Duration::from_secs(2)).await;
    tokio::time::sleep(3 * RETRY).await;

    let cut_at = Instant::now();
    proxy.cut();
    // A's last published lead, and when it was seen to stop.
    let mut a_last = a.rx.borrow().lead().copied().expect("still leading");
    let a_stopped = tokio::time::timeout(LEASE * 3, async {
        loop {
            a.rx.changed().await.expect("running");
            match *a.rx.borrow() {
                Leadership::Leader(lead) => a_last = lead,
                Leadership::Follower { .. } => return Instant::now(),
            }
        }
    })
    .await
    .expect("the cut-off leader steps down");
    assert!(a_stopped >= a_last.valid_until, "published the loss early?");
    let (b_lead, b_seen) = b.leading(LEASE * 3).await;

    println!(
        "lease: leader cut off -> it stops acting in {:?}, the follower leads in {:?} (lease {LEASE:?}, renew deadline {RENEW:?}, retry {RETRY:?})",
        a_last.valid_until - cut_at,
        b_seen - cut_at
    );
    assert!(
        a_last.valid_until <= b_lead.acquired_at,
        "A may act until {:?} after the cut, B acquired {:?} after it",
        a_last.valid_until - cut_at,
        b_lead.acquired_at - cut_at
    );
    assert!(
        b_seen >= a_last.renewed_at + LEASE,
        "B took over {:?} after A's last renewal, before the lease expired",
        b_seen - a_last.renewed_at
    );
    assert!(b_lead.term > a_first.term);
    let lease = env.lease().await;
    assert_eq!(holder_of(&lease).as_deref(), Some("salve-b"));
    assert_eq!(term_of(&lease), b_lead.term);

    proxy.heal();
    a.following("salve-b", Duration::from_secs(5)).await;
    let (b_now, _) = b.leading(Duration::ZERO).await;
    assert_eq!(b_now.term, b_lead.term, "B kept its lead");
    assert_eq!(holder_of(&env.lease().await).as_deref(), Some("salve-b"));
}

/// Someone else writes the Lease under a leader: the leader's next renewal carries a stale
/// resourceVersion, is refused with a conflict (never an overwrite), and the leader follows the
/// new holder; it takes the Lease back only when that holder's lease has expired, with a
/// greater term.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_write_is_a_conflict_not_an_overwrite() {
    let env = Env::start("stale").await;
    let api = env.api();
    let mut a = env.candidate(env.client(), "salve-a");
    let (a_first, _) = a.leading(Duration::from_secs(5)).await;
    let stale = env.lease().await;
    tokio::time::sleep(2 * RETRY).await;

    // A renewed since `stale` was read: writing it back is a conflict.
    let err = api
        .replace(&env.lease, &PostParams::default(), &stale)
        .await
        .expect_err("a stale resourceVersion is refused");
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 409),
        "{err}"
    );

    // Take the Lease as an intruder would (conditional, retried until it wins a round).
    let (intruded, intruder_term) = loop {
        let mut lease = env.lease().await;
        let spec = lease.spec.as_mut().expect("a spec");
        spec.holder_identity = Some("intruder".into());
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        let sent = Instant::now();
        match api
            .replace(&env.lease, &PostParams::default(), &lease)
            .await
        {
            Ok(written) => break (sent, term_of(&written)),
            Err(kube::Error::Api(s)) if s.code == 409 => continue,
            Err(e) => panic!("{e}"),
        }
    };
    a.following("intruder", RETRY * 5).await;
    assert_eq!(
        holder_of(&env.lease().await).as_deref(),
        Some("intruder"),
        "the leader overwrote a newer Lease"
    );
    let (a_back, a_back_seen) = a.leading(LEASE * 3).await;
    assert!(
        a_back_seen >= intruded + LEASE,
        "took the intruder's Lease {:?} after it was written, before it expired",
        a_back_seen - intruded
    );
    assert!(a_first.term < intruder_term && intruder_term < a_back.term);
    assert_eq!(term_of(&env.lease().await), a_back.term);
}

/// Expiry is measured on the local clock from when the candidate observed the record, never
/// from the holder's wall-clock `renewTime`: a holder whose clock is an hour behind is not
/// expired at once, and one an hour ahead does not hold the Lease for an hour.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_is_measured_locally_not_from_the_holders_clock() {
    for (test, skew) in [("skew-behind", -3600), ("skew-ahead", 3600)] {
        let env = Env::start(test).await;
        let renewed = Timestamp::now()
            .checked_add(k8s_openapi::jiff::SignedDuration::from_secs(skew))
            .expect("a time");
        let lease: Lease = serde_json::from_value(serde_json::json!({
            "metadata": {"name": env.lease},
            "spec": {
                "holderIdentity": "skewed",
                "leaseDurationSeconds": 1,
                "leaseTransitions": 3,
                "acquireTime": MicroTime(renewed),
                "renewTime": MicroTime(renewed),
            },
        }))
        .expect("a Lease");
        env.api()
            .create(&PostParams::default(), &lease)
            .await
            .expect("seeded");
        let started = Instant::now();
        let mut a = env.candidate(env.client(), "salve-a");
        a.following("skewed", Duration::from_secs(1)).await;
        let (lead, seen) = a.leading(LEASE * 3).await;
        let waited = seen - started;
        assert!(
            waited >= LEASE && waited < LEASE * 2,
            "{test}: took a Lease not renewed since it was observed after {waited:?}"
        );
        assert_eq!(lead.term, FencingTerm(4), "{test}");
    }
}

/// The Lease deleted under a leader: the leader stops at once (its renewal finds no Lease),
/// nobody who saw the Lease recreates it before a lease duration has passed, and the next lead
/// has a greater term than the deleted Lease's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_lease_stops_the_leader_and_the_term_still_grows() {
    let env = Env::start("deleted").await;
    let mut a = env.candidate(env.client(), "salve-a");
    let (a_lead, _) = a.leading(Duration::from_secs(5)).await;
    let mut b = env.candidate(env.client(), "salve-b");
    b.following("salve-a", Duration::from_secs(2)).await;

    let deleted = Instant::now();
    env.api()
        .delete(&env.lease, &DeleteParams::default())
        .await
        .expect("deleted");
    let stopped = tokio::time::timeout(RETRY * 5, a.rx.wait_for(|l| l.lead().is_none()))
        .await
        .is_ok_and(|r| r.is_ok());
    assert!(stopped, "the leader kept leading a deleted Lease");
    let next = tokio::time::timeout(LEASE * 3, async {
        loop {
            for c in [&mut a, &mut b] {
                if let Some(lead) = c.rx.borrow().lead().copied() {
                    return (c.identity.clone(), lead, Instant::now());
                }
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("someone leads again");
    let (leader, lead, seen) = next;
    assert!(
        seen >= deleted + LEASE,
        "{leader} recreated the Lease {:?} after it was deleted",
        seen - deleted
    );
    assert!(lead.term > a_lead.term, "{lead:?} after {a_lead:?}");
    let lease = env.lease().await;
    assert_eq!(holder_of(&lease), Some(leader));
    assert_eq!(term_of(&lease), lead.term);
}

/// An executor over `journal` acting through `client` under `leadership`, with the
/// remediation tests' policy (approvals wait 30 s).
fn elected_executor(
    client: kube::Client,
    journal: &std::sync::Arc<salve::journal::Journal>,
    leadership: watch::Receiver<Leadership>,
) -> salve::executor::Executor {
    let policy = crate::remediation::POLICY.replace("timeout: 1s", "timeout: 30s");
    salve::executor::Executor::new(
        client,
        std::sync::Arc::clone(journal),
        salve::gate::Gate::new(crate::remediation::policy(&policy)),
        None,
        salve::executor::Settings {
            poll: Duration::from_millis(50),
            leadership: Some(leadership),
            ..salve::executor::Settings::default()
        },
    )
}

/// A lead of `term` valid for `for_`, as the elector publishes one.
pub(crate) fn lead(term: u64, for_: Duration) -> Leadership {
    let now = Instant::now();
    Leadership::Leader(Lead {
        term: FencingTerm(term),
        acquired_at: now,
        renewed_at: now,
        valid_until: now + for_,
    })
}

/// Fencing in the executor: a step runs only while the replica leads — checked after the
/// wait for an approval, so a lead lost while a human thought it over stops the step — and a
/// replica that never led changes nothing.
#[tokio::test(flavor = "multi_thread")]
async fn a_replica_acts_only_while_it_leads() {
    let s = crate::remediation::setup(crate::remediation::POLICY, None).await;
    let client = s.fake.client().expect("a client");
    let (tx, rx) = watch::channel(lead(1, Duration::from_secs(60)));
    let executor = elected_executor(client.clone(), &s.journal, rx);
    let playbook = crate::remediation::playbook(
        "    - {name: scale-up, action: scale, risk: low, params: {replicas: 5}}\n    - {name: drain, action: scale, risk: high, params: {replicas: 0}}\n",
        "",
    );
    let (incident, signal) = crate::remediation::opened(&playbook, "api-1");
    let remediation = {
        let (executor, playbook, incident) = (executor.clone(), playbook.clone(), incident.clone());
        tokio::spawn(async move { executor.remediate(&playbook, &incident, &signal).await })
    };
    // The first step ran; the second waits for a human. The lead is lost meanwhile, then the
    // human approves.
    let approvals = salve::approval::Approvals::new(std::sync::Arc::clone(&s.journal));
    let pending = crate::state::waiting(&s.journal).await;
    assert_eq!(
        crate::remediation::replicas(&s.fake),
        5,
        "scale-up ran while leading"
    );
    tx.send(Leadership::Follower {
        holder: Some("other".into()),
    })
    .expect("send");
    approvals
        .answer(
            &pending.id,
            salve::approval::Answer::Approve,
            "ana",
            chrono::Utc::now(),
        )
        .expect("answered");
    let finish = remediation.await.expect("task").expect("journaled");
    assert!(
        matches!(&finish, salve::executor::Finish::Halted(why) if why.contains("does not hold the lead")),
        "{finish:?}"
    );
    assert_eq!(crate::remediation::replicas(&s.fake), 5, "drain never ran");

    // A lead whose deadline passed without a renewal counts as lost, whatever was published.
    let (_tx, stale) = watch::channel(lead(1, Duration::ZERO));
    let lapsed = elected_executor(client, &s.journal, stale);
    let (incident, signal) = crate::remediation::opened(&playbook, "api-2");
    let writes = crate::remediation::writes(&s.fake);
    let finish = lapsed
        .remediate(&playbook, &incident, &signal)
        .await
        .expect("journaled");
    assert!(
        matches!(finish, salve::executor::Finish::Halted(_)),
        "{finish:?}"
    );
    assert_eq!(
        crate::remediation::writes(&s.fake),
        writes,
        "a lapsed lead wrote nothing"
    );
}

/// Two replicas, each with its own elector on one Lease, both handed the same incident: the
/// leader remediates it, the follower changes nothing.
#[tokio::test(flavor = "multi_thread")]
async fn of_two_elected_replicas_only_the_leader_remediates() {
    let s = crate::remediation::setup(crate::remediation::POLICY, None).await;
    let cancel = CancellationToken::new();
    let mut executors = Vec::new();
    let mut receivers = Vec::new();
    for name in ["a", "b"] {
        let client = s.fake.client().expect("a client");
        let elector = Elector::new(client.clone(), "salve-system", "salve", name, timings())
            .expect("an elector");
        let rx = elector.subscribe();
        receivers.push(rx.clone());
        executors.push(elected_executor(client, &s.journal, rx));
        tokio::spawn(elector.run(cancel.clone()));
    }
    let began = Instant::now();
    while !receivers.iter().any(|r| r.borrow().may_act(Instant::now())) {
        assert!(began.elapsed() < Duration::from_secs(5), "nobody leads");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let playbook = crate::remediation::playbook(
        "    - {name: scale-up, action: scale, risk: low, params: {replicas: 5}}\n",
        "",
    );
    let (incident, signal) = crate::remediation::opened(&playbook, "api-1");
    let mut finishes = Vec::new();
    for executor in &executors {
        finishes.push(
            executor
                .remediate(&playbook, &incident, &signal)
                .await
                .expect("journaled"),
        );
    }
    cancel.cancel();
    let remediated = finishes
        .iter()
        .filter(|f| **f == salve::executor::Finish::Remediated)
        .count();
    assert_eq!(remediated, 1, "{finishes:?}");
    assert!(
        finishes
            .iter()
            .any(|f| matches!(f, salve::executor::Finish::Halted(why) if why.contains("lead"))),
        "{finishes:?}"
    );
    assert_eq!(crate::remediation::replicas(&s.fake), 5);
}

/// The holder of Lease `salve-system/salve` in the fake, if any.
fn holder(fake: &FakeApiServer) -> Option<String> {
    fake.get(
        "coordination.k8s.io/v1",
        "Lease",
        Some("salve-system"),
        "salve",
    )
    .and_then(|lease| lease["spec"]["holderIdentity"].as_str().map(str::to_string))
}

/// Polls until `done` holds for the Lease's holder (`within` at most).
async fn until_holder(fake: &FakeApiServer, within: Duration, done: impl Fn(Option<&str>) -> bool) {
    let began = Instant::now();
    while !done(holder(fake).as_deref()) {
        assert!(
            began.elapsed() < within,
            "holder is {:?} after {within:?}",
            holder(fake)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls the `salve_leader` gauge of the replica on `port` until it reads `want` (10 s at most).
async fn until_leader_gauge(port: u16, want: f64) {
    let began = Instant::now();
    let mut last = None;
    loop {
        if let Ok(response) = reqwest::get(format!("http://127.0.0.1:{port}/metrics")).await
            && let Ok(text) = response.text().await
        {
            last = text
                .lines()
                .find_map(|l| l.strip_prefix("salve_leader "))
                .and_then(|v| v.trim().parse::<f64>().ok());
            if last == Some(want) {
                return;
            }
        }
        assert!(
            began.elapsed() < Duration::from_secs(10),
            "salve_leader on :{port} is {last:?}, not {want}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `salve run --leader-elect` end to end: the first replica takes the Lease, the second waits
/// (its `salve_leader` gauge 0), and on SIGTERM the first parks, releases the Lease and exits
/// cleanly, so the second takes over at its next poll (2 s), not after the 15 s lease.
#[tokio::test(flavor = "multi_thread")]
async fn salve_run_leader_elect_hands_the_lease_over_on_sigterm() {
    let (fake, _) = FakeApiServer::start().await.expect("the fake starts");
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = dir.path().join("kubeconfig");
    fake.write_kubeconfig(&kubeconfig).expect("kubeconfig");
    let playbooks = dir.path().join("playbooks");
    std::fs::create_dir(&playbooks).expect("mkdir");
    std::fs::write(
        playbooks.join("heal.yaml"),
        "apiVersion: salve.dev/v1\nkind: Playbook\nmetadata: {name: heal}\nspec:\n  trigger:\n    schedule: {cron: '0 0 1 1 *'}\n  target: {kind: Deployment, namespace: shop, name: api}\n  steps:\n    - {action: rollout_restart, risk: low}\n",
    )
    .expect("a playbook");
    let start = |pod: &str, port: u16| {
        crate::Daemon(
            std::process::Command::new(env!("CARGO_BIN_EXE_salve"))
                .arg("run")
                .arg("--playbooks")
                .arg(&playbooks)
                .arg("--kubeconfig")
                .arg(&kubeconfig)
                .arg("--journal")
                .arg(dir.path().join(format!("{pod}.db")))
                .arg("--leader-elect")
                .args(["--listen", &format!("127.0.0.1:{port}")])
                .env("POD_NAMESPACE", "salve-system")
                .env("POD_NAME", pod)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("start salve run"),
        )
    };
    let (port_a, port_b) = (crate::free_port(), crate::free_port());
    let mut a = start("pod-a", port_a);
    until_holder(&fake, Duration::from_secs(10), |h| {
        h.is_some_and(|h| h.starts_with("pod-a_"))
    })
    .await;
    let _b = start("pod-b", port_b);
    until_leader_gauge(port_b, 0.0).await;
    assert!(
        holder(&fake).is_some_and(|h| h.starts_with("pod-a_")),
        "the lead stays while its holder renews"
    );
    until_leader_gauge(port_a, 1.0).await;

    let stopped = Instant::now();
    let exit = crate::terminate(&mut a.0).await;
    assert!(exit.success(), "pod-a exited with {exit}");
    until_holder(&fake, Duration::from_secs(5), |h| {
        h.is_some_and(|h| h.starts_with("pod-b_"))
    })
    .await;
    println!(
        "SIGTERM to the leader → the other leads: {:?}",
        stopped.elapsed()
    );
    until_leader_gauge(port_b, 1.0).await;
}
