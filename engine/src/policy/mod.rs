//! Autonomy policies: how far Salve may act on its own, compiled from the YAML [`spec`].

pub mod advisor;
pub mod compile;
pub mod spec;

use std::time::Duration;

use crate::playbook::Source;
use crate::risk::Risk;

/// A validated autonomy policy.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Its name.
    pub name: String,
    /// Where it was loaded from.
    pub source: Source,
    /// SHA-256 of its canonical content.
    pub digest: String,
    /// The global ceiling.
    pub max_autonomous_risk: Risk,
    /// Whether every step runs as a server-side dry run.
    pub dry_run: bool,
    /// Namespace ceilings, each at most the global one.
    pub overrides: Vec<NamespaceOverride>,
    /// Change freezes.
    pub freeze: Vec<FreezeWindow>,
    /// Rate limits and the breaker.
    pub limits: Limits,
    /// No answer within this long means rejected.
    pub approval_timeout: Duration,
    /// The LLM advisor's client configuration; `None` when it is off (the default).
    pub advisor: Option<crate::advisor::Config>,
}

/// A lower ceiling for some namespaces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamespaceOverride {
    /// The namespaces.
    pub namespaces: Vec<String>,
    /// Their ceiling.
    pub max_autonomous_risk: Risk,
}

/// A recurring change freeze.
#[derive(Debug, Clone)]
pub struct FreezeWindow {
    /// The cron expression as written.
    pub cron: String,
    /// When it opens.
    pub schedule: cron::Schedule,
    /// How long it lasts.
    pub duration: Duration,
    /// Frozen namespaces, or all when empty.
    pub namespaces: Vec<String>,
}

/// Rate limits and the circuit breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Actions per rolling hour.
    pub actions_per_hour: u32,
    /// Incidents remediated at once.
    pub concurrent_incidents: u32,
    /// Consecutive failures that open the breaker.
    pub breaker_failures: u32,
    /// How long the breaker stays open.
    pub breaker_reset: Duration,
}

impl Policy {
    /// The ceiling for `namespace`: the lowest of the global ceiling and every override that
    /// names it. Cluster-scoped targets (no namespace) get the global ceiling.
    pub fn ceiling_for(&self, namespace: Option<&str>) -> Risk {
        self.overrides
            .iter()
            .filter(|o| namespace.is_some_and(|ns| o.namespaces.iter().any(|n| n == ns)))
            .map(|o| o.max_autonomous_risk)
            .fold(self.max_autonomous_risk, Risk::min)
    }
}
