//! Risk: how much harm a step can do, ordered `none < low < medium < high < critical`.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// How much harm a step can do if it goes wrong.
///
/// Risks are totally ordered; the gate compares a step's risk with the effective ceiling
/// (the lowest of the policy's, the namespace override's and the playbook's own).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Risk {
    /// Read-only or purely informational (capture logs, notify).
    None,
    /// Reversible and contained (annotate, cordon, restart one workload).
    Low,
    /// Changes a workload's running version or resources (roll back, patch limits, evict).
    Medium,
    /// Affects many workloads or capacity (drain a node, fail over traffic).
    High,
    /// Could cause an outage or data loss if wrong; always needs a human.
    Critical,
}

impl Risk {
    /// Every risk level, lowest first.
    pub const ALL: [Risk; 5] = [
        Risk::None,
        Risk::Low,
        Risk::Medium,
        Risk::High,
        Risk::Critical,
    ];

    /// The name used in YAML, logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Risk::None => "none",
            Risk::Low => "low",
            Risk::Medium => "medium",
            Risk::High => "high",
            Risk::Critical => "critical",
        }
    }
}

impl fmt::Display for Risk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn risks_are_ordered_from_none_to_critical() {
        let mut sorted = Risk::ALL;
        sorted.sort();
        assert_eq!(sorted, Risk::ALL);
        assert!(Risk::Medium < Risk::High);
        assert_eq!(Risk::ALL.iter().max(), Some(&Risk::Critical));
    }

    #[test]
    fn risk_names_round_trip_through_serde() {
        for risk in Risk::ALL {
            let json = serde_json::to_string(&risk).expect("serialize");
            assert_eq!(json, format!("\"{}\"", risk.as_str()));
            let back: Risk = serde_json::from_str(&json).expect("deserialize");
            assert_eq!(back, risk);
        }
    }
}
