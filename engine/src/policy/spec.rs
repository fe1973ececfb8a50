//! The `AutonomyPolicy` document as written in YAML: how far Salve may act on its own.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::playbook::spec::Metadata;
use crate::risk::Risk;

/// How far Salve may act without a human: the risk ceiling, dry-run, freezes and limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schemars(title = "AutonomyPolicy")]
pub struct PolicyDocument {
    /// Always `salve.dev/v1`.
    #[schemars(extend("const" = "salve.dev/v1"))]
    pub api_version: String,
    /// Always `AutonomyPolicy`.
    #[schemars(extend("const" = "AutonomyPolicy"))]
    pub kind: String,
    /// The policy's name.
    pub metadata: Metadata,
    /// The policy itself.
    pub spec: PolicySpec,
}

/// The body of an autonomy policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PolicySpec {
    /// Steps at or below this risk run on their own; riskier ones wait for a human.
    pub max_autonomous_risk: Risk,
    /// Run every step as a server-side dry run (default true: the safe first install).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dry_run: Option<bool>,
    /// Lower ceilings for some namespaces; an override can only lower the global ceiling.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub overrides: Vec<NamespaceOverride>,
    /// Windows in which nothing above `none` runs on its own.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub freeze: Vec<FreezeWindow>,
    /// Rate limits and the circuit breaker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<Limits>,
    /// How approvals for steps above the ceiling work.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<Approval>,
}

/// A lower ceiling for some namespaces.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NamespaceOverride {
    /// The namespaces this override applies to.
    pub namespaces: Vec<String>,
    /// Their ceiling (only effective when lower than the global one).
    pub max_autonomous_risk: Risk,
}

/// A recurring window in which Salve does not act on its own (a change freeze).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FreezeWindow {
    /// When the window opens (cron: 5 fields, or 6-7 with seconds first).
    pub schedule: String,
    /// How long it stays open.
    pub duration: String,
    /// Only these namespaces are frozen (default: all).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
}

/// Rate limits and the circuit breaker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Limits {
    /// At most this many actions per rolling hour (default 30).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actions_per_hour: Option<u32>,
    /// At most this many incidents remediated at once (default 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrent_incidents: Option<u32>,
    /// Stop acting after consecutive failures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub circuit_breaker: Option<CircuitBreaker>,
}

/// Opens after `failures` consecutive action failures; half-opens after `reset`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CircuitBreaker {
    /// Consecutive failures that open the breaker (default 3).
    pub failures: u32,
    /// How long it stays open before one trial action is allowed (default 5m).
    pub reset: String,
}

/// How approvals work.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Approval {
    /// No answer within this long means rejected (default 300s).
    pub timeout: String,
}
