//! Leader election on a `coordination.k8s.io/v1` Lease, with a fencing term, so that of the
//! replicas of an HA Deployment only one executes remediation steps while the others keep
//! evaluating (a warm failover).
//!
//! An [`Elector`] runs one candidate: [`Elector::run`] loops until its cancellation token
//! fires and publishes a [`Leadership`] on a `watch` channel ([`Elector::subscribe`]). Before
//! each remediation write the executor asks [`Leadership::may_act`] (or
//! [`Leadership::acting_term`]) with the current [`Instant`].
//!
//! # The protocol (client-go's `leaderelection`, on a Lease)
//!
//! Every `retry_period` a candidate reads the Lease and decides ([`decide`] is the pure part):
//!
//! - **No Lease**: create it, holding it (`leaseTransitions: 0`). A `409 AlreadyExists` means
//!   another candidate won the race. (If this process saw the Lease before and it vanished,
//!   it waits one `lease_duration` from noticing first, as for an expiring record: a leader may
//!   still be acting on it.)
//! - **Held by another, not expired**: follow. Expiry is measured on the *local monotonic
//!   clock*, from when this candidate *observed the record change* (any change of the spec:
//!   a renewal moves `renewTime`), plus the record's `leaseDurationSeconds` — never from the
//!   wall-clock `renewTime`, so clock skew between pods does not matter.
//! - **Expired, released (no `holderIdentity`), or naming this identity while this elector is
//!   not leading** (a previous incarnation, or a lost lead): take it — a replace with
//!   `holderIdentity` = this identity, `acquireTime` = `renewTime` = now (`MicroTime`),
//!   `leaseDurationSeconds`, and `leaseTransitions` one more than the largest value seen.
//! - **Ours, and leading**: renew (`renewTime` = now). While leading, the renewal is sent
//!   straight from the Lease last written, without a read; a `409 Conflict` (someone else wrote
//!   in between) or a `404` falls back to a read and a fresh decision.
//!
//! Every write is a PUT (replace) carrying the `metadata.resourceVersion` it was decided on, so
//! of two concurrent writers one gets `409 Conflict` and loses: a stale write is never an
//! overwrite. On cancellation (SIGTERM) a leader first publishes that it no longer leads, then
//! **releases** the Lease as client-go's `ReleaseOnCancel` does (no `holderIdentity`,
//! `leaseDurationSeconds: 1`), so a follower takes over within a `retry_period` instead of
//! waiting for expiry.
//!
//! # The fencing guarantee
//!
//! A leader may act until `renew_deadline` after the *start* of its last successful renewal
//! ([`Lead::valid_until`]), and [`Timings`] requires `renew_deadline < lease_duration`. The
//! renewal was committed after that start; any other candidate observes the committed record
//! after that; and it may take the Lease only `lease_duration` after observing it, with a
//! replace conditional on having seen exactly that record. So a leader that cannot renew (API
//! unreachable, a conflict lost, a stalled process) stops acting `lease_duration -
//! renew_deadline` (5 s by default) before anyone else can take over — without any message
//! from the API, because the deadline is local. The elector also publishes the loss at that
//! deadline; the deadline holds even if the elector task is starved, since `may_act` compares
//! with the caller's clock.
//!
//! Each lead carries a [`FencingTerm`]: the Lease's `leaseTransitions` as written when it was
//! acquired. Every acquisition increments it, so a later leader's term is greater than every
//! earlier one's; writes that carry the term (the journal) can refuse an older leader's.
//!
//! **Assumption**: clocks advance at nearly the same *rate* on every pod (bounded drift, as NTP
//! and hardware give: far below the 33% that `lease_duration / renew_deadline` tolerates by
//! default). Their *offsets* (skew) do not matter: no wall-clock time read from the Lease is
//! compared with the local clock.
//!
//! **Limits**: an action started before the deadline can land after it; bound each write with
//! [`Lead::valid_until`] (`tokio::time::timeout_at`) and check `may_act` before each, and stop the
//! executor *before* cancelling the elector so nothing is in flight when the Lease is
//! released. Identities must be unique per process (e.g. the pod name plus a random suffix).
//! Deleting the Lease while a leader holds it is a forced takeover: a candidate that never saw
//! the Lease creates it at once, with term 0. Keep the Lease; to force a failover, delete the
//! leader's pod (it releases).

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// client-go's default `LeaseDuration`.
pub const DEFAULT_LEASE_DURATION: Duration = Duration::from_secs(15);
/// client-go's default `RenewDeadline`.
pub const DEFAULT_RENEW_DEADLINE: Duration = Duration::from_secs(10);
/// client-go's default `RetryPeriod`.
pub const DEFAULT_RETRY_PERIOD: Duration = Duration::from_secs(2);
/// How much a follower's retry period is stretched at most, at random, so candidates do not
/// poll in lockstep (client-go's `JitterFactor`, also the required ratio of `renew_deadline`
/// to `retry_period`).
pub const JITTER_FACTOR: f64 = 1.2;

/// Errors of leader election.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The timings cannot give the fencing guarantee (see [`Timings::validate`]).
    #[error("invalid leader election timings: {0}")]
    Timings(String),
    /// The candidate's identity is empty (an empty `holderIdentity` means "released").
    #[error("the leader election identity is empty")]
    EmptyIdentity,
    /// A request on the Lease failed.
    #[error("cannot {op} Lease {lease}")]
    Api {
        /// What was attempted: `read`, `create`, `replace`.
        op: &'static str,
        /// The Lease, `namespace/name`.
        lease: String,
        /// The client's error.
        #[source]
        source: kube::Error,
    },
    /// A round of reading and writing the Lease did not finish in time.
    #[error("Lease {lease}: no answer within {after:?}")]
    Timeout {
        /// The Lease, `namespace/name`.
        lease: String,
        /// How long it waited.
        after: Duration,
    },
}

/// A `Result` with this module's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How long a lead lasts, and how often candidates poll.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timings {
    /// How long after a candidate observed the last renewal it may take the Lease over
    /// (written as the Lease's `leaseDurationSeconds`: a whole number of seconds, at least 1).
    pub lease_duration: Duration,
    /// How long after the start of its last successful renewal a leader may act. Shorter than
    /// `lease_duration`: the difference is the safety margin.
    pub renew_deadline: Duration,
    /// How often the leader renews and followers read (followers stretch it by up to
    /// [`JITTER_FACTOR`]).
    pub retry_period: Duration,
}

impl Default for Timings {
    /// client-go's defaults: 15 s, 10 s, 2 s.
    fn default() -> Self {
        Timings {
            lease_duration: DEFAULT_LEASE_DURATION,
            renew_deadline: DEFAULT_RENEW_DEADLINE,
            retry_period: DEFAULT_RETRY_PERIOD,
        }
    }
}

impl Timings {
    /// Checks what the fencing guarantee needs, as client-go does: `lease_duration >
    /// renew_deadline > JITTER_FACTOR * retry_period > 0`, and `lease_duration` a whole number
    /// of seconds (the Lease records whole seconds; rounding it would shrink or stretch the
    /// margin behind the caller's back).
    pub fn validate(&self) -> Result<()> {
        let Timings {
            lease_duration,
            renew_deadline,
            retry_period,
        } = *self;
        if retry_period.is_zero() {
            return Err(Error::Timings("retry_period must be positive".into()));
        }
        if lease_duration.subsec_nanos() != 0
            || lease_duration.is_zero()
            || i32::try_from(lease_duration.as_secs()).is_err()
        {
            return Err(Error::Timings(format!(
                "lease_duration must be a whole number of seconds, at least 1 (got {lease_duration:?})"
            )));
        }
        if lease_duration <= renew_deadline {
            return Err(Error::Timings(format!(
                "lease_duration ({lease_duration:?}) must be greater than renew_deadline ({renew_deadline:?})"
            )));
        }
        if renew_deadline <= retry_period.mul_f64(JITTER_FACTOR) {
            return Err(Error::Timings(format!(
                "renew_deadline ({renew_deadline:?}) must be greater than {JITTER_FACTOR} x retry_period ({retry_period:?})"
            )));
        }
        Ok(())
    }

    /// `lease_duration` as the Lease records it.
    fn lease_duration_seconds(&self) -> i32 {
        i32::try_from(self.lease_duration.as_secs()).unwrap_or(i32::MAX)
    }
}

/// A leader's fencing term: the Lease's `leaseTransitions` when it acquired the lead. A later
/// lead has a greater term (unless the Lease was deleted, see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FencingTerm(pub u64);

impl std::fmt::Display for FencingTerm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl FencingTerm {
    fn of(transitions: i32) -> Self {
        FencingTerm(u64::try_from(transitions).unwrap_or(0))
    }
}

/// One lead of this elector: its term and how long it may act.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lead {
    /// The fencing term of this lead.
    pub term: FencingTerm,
    /// When the acquiring round started (before its first request).
    pub acquired_at: Instant,
    /// When the last successful renewal (or the acquisition) started, before its first request.
    pub renewed_at: Instant,
    /// `renewed_at + renew_deadline`: the leader may act strictly before this instant.
    pub valid_until: Instant,
}

impl Lead {
    /// Whether the leader may still act at `now`.
    pub fn may_act(&self, now: Instant) -> bool {
        now < self.valid_until
    }
}

/// What an elector last published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Leadership {
    /// Not leading. Also the state before the first round, after a lost lead, and after release.
    Follower {
        /// The Lease's `holderIdentity` as last read (`None`: no Lease, released, or not read
        /// yet). It can be this elector's own identity just after it lost the lead.
        holder: Option<String>,
    },
    /// Leading (as of the last round; [`Leadership::may_act`] also checks the deadline).
    Leader(Lead),
}

impl Default for Leadership {
    fn default() -> Self {
        Leadership::Follower { holder: None }
    }
}

impl Leadership {
    /// True only for a leader whose last successful renewal started less than
    /// `renew_deadline` before `now` (the local monotonic clock: `Instant::now()`).
    pub fn may_act(&self, now: Instant) -> bool {
        matches!(self, Leadership::Leader(lead) if lead.may_act(now))
    }

    /// The term to act under at `now`, if [`Leadership::may_act`].
    pub fn acting_term(&self, now: Instant) -> Option<FencingTerm> {
        match self {
            Leadership::Leader(lead) if lead.may_act(now) => Some(lead.term),
            _ => None,
        }
    }

    /// Until when this replica may act, if it may at `now` (a renewal moves it later).
    pub fn acting_until(&self, now: Instant) -> Option<Instant> {
        match self {
            Leadership::Leader(lead) if lead.may_act(now) => Some(lead.valid_until),
            _ => None,
        }
    }

    /// The lead as last published, even if its deadline has passed.
    pub fn lead(&self) -> Option<&Lead> {
        match self {
            Leadership::Leader(lead) => Some(lead),
            Leadership::Follower { .. } => None,
        }
    }
}

/// What a candidate knows about the Lease when it decides.
#[derive(Debug, Clone, Copy)]
pub struct View<'a> {
    /// This candidate's identity.
    pub identity: &'a str,
    /// Whether this candidate holds a lead now.
    pub leading: bool,
    /// The Lease's holder and duration, `None` when the Lease does not exist.
    pub record: Option<Record<'a>>,
    /// When the record last changed as observed here (or the Lease was first seen missing).
    pub changed_at: Instant,
    /// Whether this process has seen the Lease exist before.
    pub seen_existing: bool,
    /// This candidate's `lease_duration` (for a vanished Lease, or a record without one).
    pub lease_duration: Duration,
}

/// The parts of a Lease's spec that decide who may hold it.
#[derive(Debug, Clone, Copy)]
pub struct Record<'a> {
    /// `holderIdentity` (empty or `None`: released).
    pub holder: Option<&'a str>,
    /// `leaseDurationSeconds`, if positive.
    pub lease_duration: Option<Duration>,
}

impl<'a> Record<'a> {
    /// The decisive parts of `spec`.
    pub fn of(spec: &'a LeaseSpec) -> Self {
        Record {
            holder: spec.holder_identity.as_deref(),
            lease_duration: spec
                .lease_duration_seconds
                .and_then(|s| u64::try_from(s).ok())
                .filter(|&s| s > 0)
                .map(Duration::from_secs),
        }
    }
}

/// What a candidate does after reading the Lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The Lease does not exist: create it, holding it.
    Create,
    /// It is ours and we lead: renew it, keeping the term.
    Renew,
    /// Take it (expired, released, or naming us while we do not lead): a new term.
    Acquire,
    /// Someone else holds it (or it vanished recently): wait.
    Follow {
        /// The current holder, if any.
        holder: Option<String>,
        /// When it expires as seen here, unless renewed before.
        expires_at: Instant,
    },
}

/// The election decision, free of I/O (see the module docs for the rules).
pub fn decide(view: &View<'_>, now: Instant) -> Decision {
    let Some(record) = view.record else {
        let expires_at = view.changed_at + view.lease_duration;
        return if !view.seen_existing || now >= expires_at {
            Decision::Create
        } else {
            Decision::Follow {
                holder: None,
                expires_at,
            }
        };
    };
    match record.holder.filter(|h| !h.is_empty()) {
        None => Decision::Acquire,
        Some(holder) if holder == view.identity => {
            if view.leading {
                Decision::Renew
            } else {
                Decision::Acquire
            }
        }
        Some(holder) => {
            let duration = record.lease_duration.unwrap_or(view.lease_duration);
            let expires_at = view.changed_at + duration;
            if now >= expires_at {
                Decision::Acquire
            } else {
                Decision::Follow {
                    holder: Some(holder.to_owned()),
                    expires_at,
                }
            }
        }
    }
}

/// The spec that takes the Lease over for `identity` with `transitions` (a new term).
fn acquired_spec(
    base: Option<&LeaseSpec>,
    identity: &str,
    lease_duration_seconds: i32,
    transitions: i32,
    now: Timestamp,
) -> LeaseSpec {
    LeaseSpec {
        holder_identity: Some(identity.to_owned()),
        lease_duration_seconds: Some(lease_duration_seconds),
        acquire_time: Some(MicroTime(now)),
        renew_time: Some(MicroTime(now)),
        lease_transitions: Some(transitions),
        ..base.cloned().unwrap_or_default()
    }
}

/// The spec that renews the lead of `identity`: only `renewTime` (and the duration) change.
fn renewed_spec(
    base: &LeaseSpec,
    identity: &str,
    lease_duration_seconds: i32,
    now: Timestamp,
) -> LeaseSpec {
    LeaseSpec {
        holder_identity: Some(identity.to_owned()),
        lease_duration_seconds: Some(lease_duration_seconds),
        renew_time: Some(MicroTime(now)),
        ..base.clone()
    }
}

/// The spec that releases the Lease (client-go's `ReleaseOnCancel`): no holder, a 1-second
/// duration, the transitions kept.
fn released_spec(base: &LeaseSpec, now: Timestamp) -> LeaseSpec {
    LeaseSpec {
        holder_identity: None,
        lease_duration_seconds: Some(1),
        acquire_time: Some(MicroTime(now)),
        renew_time: Some(MicroTime(now)),
        ..base.clone()
    }
}

/// `base` stretched at random by a factor in `[1, JITTER_FACTOR)`.
fn jittered(base: Duration) -> Duration {
    use std::hash::{BuildHasher as _, Hasher as _};
    // A fresh `RandomState` is randomly keyed: enough randomness for spreading polls.
    let bits = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    let unit = (bits >> 11) as f64 / (1u64 << 53) as f64;
    base.mul_f64(1.0 + (JITTER_FACTOR - 1.0) * unit)
}

/// The Lease as last observed by this process.
#[derive(Debug)]
struct Seen {
    /// Its spec (`None`: the Lease did not exist).
    spec: Option<LeaseSpec>,
    /// When this spec was first observed.
    changed_at: Instant,
}

/// The result of one round.
enum Outcome {
    Leading(Lead),
    Following(Option<String>),
}

/// Which write a round makes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Write {
    Renew,
    Acquire,
}

/// One candidate for the lead on one Lease. See the module docs.
pub struct Elector {
    api: Api<Lease>,
    name: String,
    /// `namespace/name`, for logs and errors.
    lease: String,
    identity: String,
    timings: Timings,
    tx: watch::Sender<Leadership>,
    /// The Lease as last read or written (its `resourceVersion` conditions the next write).
    cached: Option<Lease>,
    seen: Option<Seen>,
    seen_existing: bool,
    /// The largest `leaseTransitions` seen, so terms only grow.
    max_transitions: i32,
    lead: Option<Lead>,
    /// Where this replica's API is reached, written on the Lease it holds ([`ADDRESS`]).
    address: Option<String>,
}

/// The Lease annotation naming where the holder's API is reached (`host:port`): a follower's
/// Alertmanager webhook relays each payload there ([`crate::alertmanager::relay`]).
pub const ADDRESS: &str = "salve.dev/api-address";

impl Elector {
    /// A candidate `identity` (unique per process) for Lease `namespace/lease_name`. Nothing is
    /// sent before [`Elector::run`].
    pub fn new(
        client: kube::Client,
        namespace: &str,
        lease_name: &str,
        identity: impl Into<String>,
        timings: Timings,
    ) -> Result<Self> {
        timings.validate()?;
        let identity = identity.into();
        if identity.is_empty() {
            return Err(Error::EmptyIdentity);
        }
        Ok(Elector {
            api: Api::namespaced(client, namespace),
            name: lease_name.to_owned(),
            lease: format!("{namespace}/{lease_name}"),
            identity,
            timings,
            tx: watch::Sender::new(Leadership::default()),
            cached: None,
            seen: None,
            seen_existing: false,
            max_transitions: 0,
            lead: None,
            address: None,
        })
    }

    /// The same candidate, writing `address` (`host:port`, where its API is reached) on the
    /// Lease while it holds it.
    pub fn advertising(self, address: impl Into<String>) -> Self {
        Elector {
            address: Some(address.into()),
            ..self
        }
    }

    /// `metadata` with this candidate's address in its annotations, if it advertises one.
    fn annotated(&self, mut metadata: ObjectMeta) -> ObjectMeta {
        if let Some(address) = &self.address {
            metadata
                .annotations
                .get_or_insert_default()
                .insert(ADDRESS.to_owned(), address.clone());
        }
        metadata
    }

    /// A receiver of this elector's [`Leadership`] (a follower until the first round). It
    /// keeps the last value after the elector stops.
    pub fn subscribe(&self) -> watch::Receiver<Leadership> {
        self.tx.subscribe()
    }

    /// This candidate's identity.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// Takes part in the election until `cancel` fires, then releases the Lease if this
    /// elector leads (or the Lease still names it). Transient API failures are logged and
    /// retried; the only error is a failed release, after which others take over on expiry.
    pub async fn run(mut self, cancel: CancellationToken) -> Result<()> {
        tracing::info!(lease = %self.lease, identity = %self.identity, "leader election started");
        loop {
            let start = Instant::now();
            // A leader's round may not outlive its lead; then the lead is lost anyway.
            let budget = self.lead.map_or(self.timings.renew_deadline, |lead| {
                lead.valid_until.saturating_duration_since(start)
            });
            let result = tokio::select! {
                biased;
                () = cancel.cancelled() => break,
                r = tokio::time::timeout(budget, self.round(start)) => r.unwrap_or_else(|_| {
                    Err(Error::Timeout { lease: self.lease.clone(), after: budget })
                }),
            };
            self.settle(result);
            self.expire(Instant::now());
            let next = match self.lead {
                Some(lead) => (start + self.timings.retry_period).min(lead.valid_until),
                None => start + jittered(self.timings.retry_period),
            };
            tokio::select! {
                biased;
                () = cancel.cancelled() => break,
                () = tokio::time::sleep_until(next) => {}
            }
            self.expire(Instant::now());
        }
        self.release().await
    }

    /// One round: renew straight away if leading, else (or on a conflict) read and decide.
    async fn round(&mut self, start: Instant) -> Result<Outcome> {
        if let (Some(lead), Some(cached)) = (self.lead, self.cached.clone()) {
            let spec = cached.spec.clone().unwrap_or_default();
            let spec = renewed_spec(
                &spec,
                &self.identity,
                self.timings.lease_duration_seconds(),
                Timestamp::now(),
            );
            match self.replace(cached, spec).await {
                Ok(()) => return Ok(Outcome::Leading(self.renewed(lead, start))),
                Err(Error::Api { source, .. }) if is_status(&source, &[404, 409]) => {
                    tracing::debug!(lease = %self.lease, error = %source, "renewal refused; reading the Lease");
                }
                Err(e) => return Err(e),
            }
        }
        let current = self.read().await?;
        let now = Instant::now();
        self.observe(current.as_ref(), now);
        self.cached = current.clone();
        let decision = decide(&self.view(), now);
        let transitions = self.max_transitions.saturating_add(1);
        let write = match decision {
            Decision::Follow { holder, .. } => return Ok(Outcome::Following(holder)),
            Decision::Create => return self.create(start).await,
            Decision::Renew => Write::Renew,
            Decision::Acquire => Write::Acquire,
        };
        // `decide` creates exactly when there is no Lease.
        let Some(current) = current else {
            return self.create(start).await;
        };
        let base = current.spec.clone().unwrap_or_default();
        let seconds = self.timings.lease_duration_seconds();
        let spec = match write {
            Write::Renew => renewed_spec(&base, &self.identity, seconds, Timestamp::now()),
            Write::Acquire => acquired_spec(
                Some(&base),
                &self.identity,
                seconds,
                transitions,
                Timestamp::now(),
            ),
        };
        match (self.replace(current, spec).await, write, self.lead) {
            (Ok(()), Write::Renew, Some(lead)) => Ok(Outcome::Leading(self.renewed(lead, start))),
            (Ok(()), _, _) => Ok(Outcome::Leading(self.acquired(transitions, start))),
            // Someone wrote since the read: they won this round.
            (Err(Error::Api { source, .. }), Write::Acquire, _) if is_status(&source, &[409]) => {
                tracing::debug!(lease = %self.lease, "lost the race to acquire the Lease");
                Ok(Outcome::Following(None))
            }
            (Err(e), _, _) => Err(e),
        }
    }

    /// Creates the Lease, holding it.
    async fn create(&mut self, start: Instant) -> Result<Outcome> {
        let transitions = if self.seen_existing {
            self.max_transitions.saturating_add(1)
        } else {
            0
        };
        let lease = Lease {
            metadata: self.annotated(ObjectMeta {
                name: Some(self.name.clone()),
                ..ObjectMeta::default()
            }),
            spec: Some(acquired_spec(
                None,
                &self.identity,
                self.timings.lease_duration_seconds(),
                transitions,
                Timestamp::now(),
            )),
        };
        match self.api.create(&PostParams::default(), &lease).await {
            Ok(created) => {
                self.wrote(created);
                Ok(Outcome::Leading(self.acquired(transitions, start)))
            }
            Err(source) if is_status(&source, &[409]) => {
                tracing::debug!(lease = %self.lease, "another candidate created the Lease first");
                Ok(Outcome::Following(None))
            }
            Err(source) => Err(Error::Api {
                op: "create",
                lease: self.lease.clone(),
                source,
            }),
        }
    }

    /// Replaces the Lease with `spec`, conditional on `lease`'s `resourceVersion`.
    async fn replace(&mut self, mut lease: Lease, spec: LeaseSpec) -> Result<()> {
        if spec.holder_identity.as_deref() == Some(&self.identity) {
            lease.metadata = self.annotated(lease.metadata);
        }
        lease.spec = Some(spec);
        let written = self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
            .map_err(|source| Error::Api {
                op: "replace",
                lease: self.lease.clone(),
                source,
            })?;
        self.wrote(written);
        Ok(())
    }

    fn wrote(&mut self, written: Lease) {
        self.observe(Some(&written), Instant::now());
        self.cached = Some(written);
    }

    /// Records what was read or written: the observation time moves only when the spec changed.
    fn observe(&mut self, lease: Option<&Lease>, now: Instant) {
        let spec = lease.map(|l| l.spec.clone().unwrap_or_default());
        if let Some(spec) = &spec {
            self.seen_existing = true;
            self.max_transitions = self
                .max_transitions
                .max(spec.lease_transitions.unwrap_or(0));
        }
        if self.seen.as_ref().is_none_or(|seen| seen.spec != spec) {
            self.seen = Some(Seen {
                spec,
                changed_at: now,
            });
        }
    }

    fn view(&self) -> View<'_> {
        let (spec, changed_at) = match &self.seen {
            Some(seen) => (seen.spec.as_ref(), seen.changed_at),
            None => (None, Instant::now()),
        };
        View {
            identity: &self.identity,
            leading: self.lead.is_some(),
            record: spec.map(Record::of),
            changed_at,
            seen_existing: self.seen_existing,
            lease_duration: self.timings.lease_duration,
        }
    }

    /// The holder as last observed.
    fn holder(&self) -> Option<String> {
        self.seen
            .as_ref()
            .and_then(|seen| seen.spec.as_ref())
            .and_then(|spec| spec.holder_identity.clone())
            .filter(|h| !h.is_empty())
    }

    fn renewed(&self, lead: Lead, start: Instant) -> Lead {
        Lead {
            renewed_at: start,
            valid_until: start + self.timings.renew_deadline,
            ..lead
        }
    }

    fn acquired(&self, transitions: i32, start: Instant) -> Lead {
        Lead {
            term: FencingTerm::of(transitions),
            acquired_at: start,
            renewed_at: start,
            valid_until: start + self.timings.renew_deadline,
        }
    }

    /// Publishes and logs the result of a round.
    fn settle(&mut self, result: Result<Outcome>) {
        match result {
            Ok(Outcome::Leading(lead)) => {
                if self.lead.is_none_or(|old| old.term != lead.term) {
                    tracing::info!(lease = %self.lease, identity = %self.identity, term = %lead.term, "became the leader");
                }
                self.lead = Some(lead);
                self.tx.send_replace(Leadership::Leader(lead));
            }
            Ok(Outcome::Following(holder)) => {
                if let Some(lead) = self.lead.take() {
                    tracing::info!(
                        lease = %self.lease, identity = %self.identity, term = %lead.term,
                        holder = holder.as_deref().unwrap_or(""),
                        "lost the leadership: the Lease was taken"
                    );
                }
                self.follow(holder);
            }
            Err(e) => match self.lead {
                Some(lead) => tracing::warn!(
                    lease = %self.lease, identity = %self.identity, term = %lead.term,
                    remaining = ?lead.valid_until.saturating_duration_since(Instant::now()),
                    error = %crate::diagnostic::chain(&e),
                    "cannot renew the Lease"
                ),
                None => tracing::warn!(
                    lease = %self.lease, identity = %self.identity,
                    error = %crate::diagnostic::chain(&e),
                    "cannot read or acquire the Lease"
                ),
            },
        }
    }

    /// Drops a lead whose deadline has passed (renewals kept failing).
    fn expire(&mut self, now: Instant) {
        if let Some(lead) = self.lead
            && !lead.may_act(now)
        {
            self.lead = None;
            tracing::info!(
                lease = %self.lease, identity = %self.identity, term = %lead.term,
                renew_deadline = ?self.timings.renew_deadline,
                "lost the leadership: the Lease was not renewed within the renew deadline"
            );
            self.follow(self.holder());
        }
    }

    fn follow(&self, holder: Option<String>) {
        let new = Leadership::Follower { holder };
        self.tx.send_if_modified(|current| {
            let changed = *current != new;
            if changed {
                *current = new.clone();
            }
            changed
        });
    }

    /// Stops leading (published first), then clears the holder if the Lease still names us.
    async fn release(mut self) -> Result<()> {
        let lead = self.lead.take();
        let named = self.holder().as_deref() == Some(self.identity.as_str());
        self.follow(None);
        if lead.is_none() && !named {
            tracing::info!(lease = %self.lease, identity = %self.identity, "leader election stopped");
            return Ok(());
        }
        let budget = self.timings.renew_deadline;
        let released = tokio::time::timeout(budget, self.release_lease())
            .await
            .unwrap_or_else(|_| {
                Err(Error::Timeout {
                    lease: self.lease.clone(),
                    after: budget,
                })
            });
        match &released {
            Ok(true) => tracing::info!(
                lease = %self.lease, identity = %self.identity,
                term = ?lead.map(|l| l.term.0),
                "released the Lease"
            ),
            Ok(false) => tracing::info!(
                lease = %self.lease, identity = %self.identity,
                "leader election stopped; the Lease was no longer ours"
            ),
            Err(e) => tracing::warn!(
                lease = %self.lease, identity = %self.identity,
                error = %crate::diagnostic::chain(e),
                "cannot release the Lease; others take over when it expires"
            ),
        }
        released.map(|_| ())
    }

    /// The Lease as stored now (`None`: there is none).
    async fn read(&self) -> Result<Option<Lease>> {
        self.api
            .get_opt(&self.name)
            .await
            .map_err(|source| Error::Api {
                op: "read",
                lease: self.lease.clone(),
                source,
            })
    }

    /// Writes the release: from the Lease last written, re-reading once on a conflict.
    /// Whether it was released (false: it no longer names us).
    async fn release_lease(&mut self) -> Result<bool> {
        let mut known = self.cached.take();
        for _ in 0..3 {
            let current = match known.take() {
                Some(lease) => lease,
                None => match self.read().await? {
                    Some(lease) => lease,
                    None => return Ok(false),
                },
            };
            let spec = current.spec.clone().unwrap_or_default();
            if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
                return Ok(false);
            }
            match self
                .replace(current, released_spec(&spec, Timestamp::now()))
                .await
            {
                Ok(()) => return Ok(true),
                Err(Error::Api { source, .. }) if is_status(&source, &[409]) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(false)
    }
}

/// Whether `error` is an API answer with one of `codes`.
fn is_status(error: &kube::Error, codes: &[u16]) -> bool {
    matches!(error, kube::Error::Api(status) if codes.contains(&status.code))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    const S: Duration = Duration::from_secs(1);

    fn view<'a>(
        leading: bool,
        record: Option<Record<'a>>,
        changed_at: Instant,
        seen_existing: bool,
    ) -> View<'a> {
        View {
            identity: "me",
            leading,
            record,
            changed_at,
            seen_existing,
            lease_duration: 15 * S,
        }
    }

    fn held(holder: Option<&str>, seconds: Option<u64>) -> Option<Record<'_>> {
        Some(Record {
            holder,
            lease_duration: seconds.map(Duration::from_secs),
        })
    }

    #[rstest]
    #[case::missing_never_seen(false, None, false, 0, Some(Decision::Create))]
    #[case::vanished_recently(false, None, true, 14, None)]
    #[case::vanished_long_ago(false, None, true, 15, Some(Decision::Create))]
    #[case::released_none(false, held(None, Some(1)), true, 0, Some(Decision::Acquire))]
    #[case::released_empty(false, held(Some(""), Some(1)), true, 0, Some(Decision::Acquire))]
    #[case::ours_leading(true, held(Some("me"), Some(15)), true, 0, Some(Decision::Renew))]
    #[case::ours_not_leading(false, held(Some("me"), Some(15)), true, 0, Some(Decision::Acquire))]
    #[case::other_fresh(false, held(Some("them"), Some(15)), true, 0, None)]
    #[case::other_just_before_expiry(false, held(Some("them"), Some(15)), true, 14, None)]
    #[case::other_at_expiry(false, held(Some("them"), Some(15)), true, 15, Some(Decision::Acquire))]
    #[case::uses_the_records_duration(
        false,
        held(Some("them"), Some(2)),
        true,
        2,
        Some(Decision::Acquire)
    )]
    #[case::no_duration_uses_ours(false, held(Some("them"), None), true, 14, None)]
    #[case::other_even_while_leading(true, held(Some("them"), Some(15)), true, 3, None)]
    fn decisions(
        #[case] leading: bool,
        #[case] record: Option<Record<'_>>,
        #[case] seen_existing: bool,
        #[case] elapsed_secs: u64,
        #[case] expected: Option<Decision>,
    ) {
        let changed_at = Instant::now();
        let now = changed_at + Duration::from_secs(elapsed_secs);
        let got = decide(&view(leading, record, changed_at, seen_existing), now);
        match expected {
            Some(expected) => assert_eq!(got, expected),
            None => assert!(
                matches!(&got, Decision::Follow { expires_at, .. } if *expires_at > now),
                "expected to follow, got {got:?}"
            ),
        }
    }

    #[test]
    fn following_reports_the_holder_and_the_local_expiry() {
        let changed_at = Instant::now();
        let got = decide(
            &view(false, held(Some("them"), Some(3)), changed_at, true),
            changed_at + S,
        );
        assert_eq!(
            got,
            Decision::Follow {
                holder: Some("them".into()),
                expires_at: changed_at + 3 * S
            }
        );
    }

    #[test]
    fn record_ignores_non_positive_durations() {
        for (seconds, expected) in [
            (Some(0), None),
            (Some(-5), None),
            (None, None),
            (Some(7), Some(7 * S)),
        ] {
            let spec = LeaseSpec {
                lease_duration_seconds: seconds,
                ..LeaseSpec::default()
            };
            assert_eq!(Record::of(&spec).lease_duration, expected, "{seconds:?}");
        }
    }

    #[test]
    fn may_act_only_before_the_renew_deadline() {
        let t0 = Instant::now();
        let lead = Lead {
            term: FencingTerm(4),
            acquired_at: t0,
            renewed_at: t0,
            valid_until: t0 + 10 * S,
        };
        let leader = Leadership::Leader(lead);
        assert!(leader.may_act(t0));
        assert!(leader.may_act(t0 + 10 * S - Duration::from_nanos(1)));
        assert!(!leader.may_act(t0 + 10 * S));
        assert!(!leader.may_act(t0 + 11 * S));
        assert_eq!(leader.acting_term(t0 + S), Some(FencingTerm(4)));
        assert_eq!(leader.acting_term(t0 + 10 * S), None);
        assert_eq!(leader.lead(), Some(&lead));
        let follower = Leadership::Follower {
            holder: Some("me".into()),
        };
        assert!(!follower.may_act(t0));
        assert_eq!(follower.acting_term(t0), None);
        assert_eq!(Leadership::default(), Leadership::Follower { holder: None });
    }

    /// The fencing guarantee in numbers: with valid timings, a leader's last instant of acting
    /// comes before the earliest instant another candidate may take over, for any time at which
    /// the renewal was observed after being sent.
    #[test]
    fn a_leader_stops_before_anyone_may_take_over() {
        let timings = Timings::default();
        let sent = Instant::now();
        for observed_after in [Duration::ZERO, Duration::from_millis(1), 3 * S] {
            let changed_at = sent + observed_after;
            let record = held(Some("leader"), Some(timings.lease_duration.as_secs()));
            let mut now = changed_at;
            while !matches!(
                decide(&view(false, record, changed_at, true), now),
                Decision::Acquire
            ) {
                now += Duration::from_millis(10);
            }
            let lead = Lead {
                term: FencingTerm(1),
                acquired_at: sent,
                renewed_at: sent,
                valid_until: sent + timings.renew_deadline,
            };
            assert!(
                !lead.may_act(now),
                "observed {observed_after:?} after sending"
            );
            assert!(now - lead.valid_until >= timings.lease_duration - timings.renew_deadline);
        }
    }

    #[rstest]
    #[case::defaults(15_000, 10_000, 2_000, true)]
    #[case::short(1_000, 600, 100, true)]
    #[case::renew_not_below_lease(10_000, 10_000, 2_000, false)]
    #[case::renew_above_lease(5_000, 10_000, 2_000, false)]
    #[case::retry_too_long(15_000, 2_400, 2_000, false)]
    #[case::fractional_lease(1_500, 600, 100, false)]
    #[case::zero_retry(15_000, 10_000, 0, false)]
    #[case::zero_lease(0, 0, 0, false)]
    fn timings_validation(
        #[case] lease: u64,
        #[case] renew: u64,
        #[case] retry: u64,
        #[case] ok: bool,
    ) {
        let timings = Timings {
            lease_duration: Duration::from_millis(lease),
            renew_deadline: Duration::from_millis(renew),
            retry_period: Duration::from_millis(retry),
        };
        assert_eq!(timings.validate().is_ok(), ok, "{timings:?}");
    }

    #[test]
    fn default_timings_are_client_gos() {
        let t = Timings::default();
        assert_eq!(
            (t.lease_duration, t.renew_deadline, t.retry_period),
            (15 * S, 10 * S, 2 * S)
        );
        assert_eq!(t.lease_duration_seconds(), 15);
    }

    #[test]
    fn specs_for_acquire_renew_and_release() {
        let t1: Timestamp = "2026-01-01T00:00:00.123456Z".parse().expect("a timestamp");
        let t2: Timestamp = "2026-01-01T00:00:02Z".parse().expect("a timestamp");
        let old = LeaseSpec {
            holder_identity: Some("them".into()),
            lease_duration_seconds: Some(30),
            lease_transitions: Some(6),
            acquire_time: Some(MicroTime(t1)),
            renew_time: Some(MicroTime(t1)),
            preferred_holder: Some("kept".into()),
            ..LeaseSpec::default()
        };
        let acquired = acquired_spec(Some(&old), "me", 15, 7, t2);
        assert_eq!(acquired.holder_identity.as_deref(), Some("me"));
        assert_eq!(acquired.lease_duration_seconds, Some(15));
        assert_eq!(acquired.lease_transitions, Some(7));
        assert_eq!(acquired.acquire_time, Some(MicroTime(t2)));
        assert_eq!(acquired.renew_time, Some(MicroTime(t2)));
        assert_eq!(acquired.preferred_holder.as_deref(), Some("kept"));

        let renewed = renewed_spec(&acquired, "me", 15, t1);
        assert_eq!(
            renewed.acquire_time,
            Some(MicroTime(t2)),
            "acquireTime kept"
        );
        assert_eq!(renewed.renew_time, Some(MicroTime(t1)));
        assert_eq!(
            renewed.lease_transitions,
            Some(7),
            "a renewal keeps the term"
        );

        let released = released_spec(&renewed, t2);
        assert_eq!(released.holder_identity, None);
        assert_eq!(released.lease_duration_seconds, Some(1));
        assert_eq!(released.lease_transitions, Some(7));
        let json = serde_json::to_value(&released).expect("JSON");
        assert_eq!(
            json["renewTime"], "2026-01-01T00:00:02.000000Z",
            "MicroTime: {json}"
        );
    }

    #[test]
    fn follower_polls_are_jittered_within_bounds() {
        let base = Duration::from_millis(100);
        let samples: Vec<Duration> = (0..200).map(|_| jittered(base)).collect();
        assert!(
            samples
                .iter()
                .all(|&d| d >= base && d < base.mul_f64(JITTER_FACTOR))
        );
        assert!(
            samples.iter().any(|&d| d != samples[0]),
            "not random: {samples:?}"
        );
    }

    #[test]
    fn new_rejects_bad_configuration() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        rt.block_on(async {
            let config = kube::Config::new("http://127.0.0.1:9".parse().expect("a URL"));
            let client = kube::Client::try_from(config).expect("a client");
            let bad = Timings {
                renew_deadline: 20 * S,
                ..Timings::default()
            };
            assert!(matches!(
                Elector::new(client.clone(), "ns", "salve", "me", bad),
                Err(Error::Timings(_))
            ));
            assert!(matches!(
                Elector::new(client.clone(), "ns", "salve", "", Timings::default()),
                Err(Error::EmptyIdentity)
            ));
            let elector =
                Elector::new(client, "ns", "salve", "me", Timings::default()).expect("valid");
            assert_eq!(elector.identity(), "me");
            assert_eq!(*elector.subscribe().borrow(), Leadership::default());
        });
    }
}
