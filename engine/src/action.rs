//! The built-in action vocabulary: what each action is, how risky it is at least, which
//! target kinds it can act on, and which parameters it takes.
//!
//! The executors arrive with the remediation work; this module is the contract the playbook
//! compiler checks against, so a playbook that names an action wrongly is refused at load time.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::risk::Risk;

/// A built-in remediation action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Set the replica count of a Deployment, StatefulSet or ReplicaSet.
    Scale,
    /// Restart every pod of a workload by bumping its pod template annotation.
    RolloutRestart,
    /// Roll a workload back to its previous revision, as `kubectl rollout undo` does.
    RolloutUndo,
    /// Change memory/CPU requests and limits of a workload's containers.
    PatchResources,
    /// Mark a node unschedulable.
    Cordon,
    /// Mark a node schedulable again.
    Uncordon,
    /// Evict a pod (or a node's pods) through the Eviction API, respecting PodDisruptionBudgets.
    Evict,
    /// Delete a pod so its controller recreates it.
    DeletePod,
    /// Add or change annotations on the target.
    Annotate,
    /// Copy recent container logs into the journal.
    CaptureLogs,
    /// Send a message to a webhook (for example a Slack incoming webhook).
    Notify,
    /// Wait until a PromQL condition holds.
    WaitFor,
}

/// The kind of Kubernetes object a playbook acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum TargetKind {
    /// `apps/v1` Deployment.
    Deployment,
    /// `apps/v1` StatefulSet.
    StatefulSet,
    /// `apps/v1` DaemonSet.
    DaemonSet,
    /// `apps/v1` ReplicaSet.
    ReplicaSet,
    /// `batch/v1` Job.
    Job,
    /// `v1` Pod.
    Pod,
    /// `v1` Node (cluster-scoped).
    Node,
}

impl TargetKind {
    /// The kind's name as Kubernetes spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            TargetKind::Deployment => "Deployment",
            TargetKind::StatefulSet => "StatefulSet",
            TargetKind::DaemonSet => "DaemonSet",
            TargetKind::ReplicaSet => "ReplicaSet",
            TargetKind::Job => "Job",
            TargetKind::Pod => "Pod",
            TargetKind::Node => "Node",
        }
    }

    /// Whether objects of this kind live in a namespace.
    pub fn is_namespaced(self) -> bool {
        self != TargetKind::Node
    }
}

impl fmt::Display for TargetKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The JSON type a parameter value must have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamType {
    /// A string; `${...}` templates allowed.
    String,
    /// A non-negative whole number.
    Count,
    /// A duration such as `30s` or `5m`.
    Duration,
    /// A Kubernetes quantity such as `512Mi` or `250m`.
    Quantity,
    /// A PromQL expression; `${...}` templates allowed.
    Promql,
    /// A map of string to string (labels, annotations).
    StringMap,
    /// `true` or `false`.
    Bool,
}

impl ParamType {
    /// What a user must write, for error messages.
    pub fn expected(self) -> &'static str {
        match self {
            ParamType::String => "a string",
            ParamType::Count => "a whole number >= 0",
            ParamType::Duration => "a duration such as 30s, 5m or 1h30m",
            ParamType::Quantity => "a Kubernetes quantity such as 512Mi or 250m",
            ParamType::Promql => "a PromQL expression",
            ParamType::StringMap => "a map of strings to strings",
            ParamType::Bool => "true or false",
        }
    }
}

/// One parameter an action accepts.
#[derive(Debug, Clone, Copy)]
pub struct Param {
    /// The parameter's name under `params:`.
    pub name: &'static str,
    /// The type its value must have.
    pub ty: ParamType,
    /// Whether the step must set it.
    pub required: bool,
}

const fn param(name: &'static str, ty: ParamType, required: bool) -> Param {
    Param { name, ty, required }
}

use TargetKind as K;

impl Action {
    /// Every built-in action.
    pub const ALL: [Action; 12] = [
        Action::Scale,
        Action::RolloutRestart,
        Action::RolloutUndo,
        Action::PatchResources,
        Action::Cordon,
        Action::Uncordon,
        Action::Evict,
        Action::DeletePod,
        Action::Annotate,
        Action::CaptureLogs,
        Action::Notify,
        Action::WaitFor,
    ];

    /// The name used in YAML, logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Scale => "scale",
            Action::RolloutRestart => "rollout_restart",
            Action::RolloutUndo => "rollout_undo",
            Action::PatchResources => "patch_resources",
            Action::Cordon => "cordon",
            Action::Uncordon => "uncordon",
            Action::Evict => "evict",
            Action::DeletePod => "delete_pod",
            Action::Annotate => "annotate",
            Action::CaptureLogs => "capture_logs",
            Action::Notify => "notify",
            Action::WaitFor => "wait_for",
        }
    }

    /// The least risk a step running this action may declare. A step may declare more, never
    /// less: the declared risk is what the gate checks.
    pub fn intrinsic_risk(self) -> Risk {
        match self {
            Action::CaptureLogs | Action::Notify | Action::WaitFor => Risk::None,
            Action::Annotate
            | Action::Scale
            | Action::RolloutRestart
            | Action::Cordon
            | Action::Uncordon
            | Action::DeletePod => Risk::Low,
            Action::RolloutUndo | Action::PatchResources | Action::Evict => Risk::Medium,
        }
    }

    /// The target kinds this action can act on; `None` means it does not touch the target
    /// (or works on any kind).
    pub fn target_kinds(self) -> Option<&'static [TargetKind]> {
        match self {
            Action::Scale => Some(&[K::Deployment, K::StatefulSet, K::ReplicaSet]),
            Action::RolloutRestart | Action::RolloutUndo | Action::PatchResources => {
                Some(&[K::Deployment, K::StatefulSet, K::DaemonSet])
            }
            Action::Cordon | Action::Uncordon => Some(&[K::Node]),
            Action::Evict => Some(&[K::Pod, K::Node]),
            Action::DeletePod => Some(&[K::Pod]),
            Action::CaptureLogs => Some(&[
                K::Deployment,
                K::StatefulSet,
                K::DaemonSet,
                K::ReplicaSet,
                K::Job,
                K::Pod,
            ]),
            Action::Annotate | Action::Notify | Action::WaitFor => None,
        }
    }

    /// The parameters this action accepts under `params:`.
    pub fn params(self) -> &'static [Param] {
        use ParamType as T;
        match self {
            Action::Scale => {
                const {
                    &[
                        param("replicas", T::Count, false),
                        param("delta", T::Count, false),
                        param("min", T::Count, false),
                        param("max", T::Count, false),
                    ]
                }
            }
            Action::RolloutRestart => &[],
            Action::RolloutUndo => const { &[param("toRevision", T::Count, false)] },
            Action::PatchResources => {
                const {
                    &[
                        param("container", T::String, false),
                        param("memoryRequest", T::Quantity, false),
                        param("memoryLimit", T::Quantity, false),
                        param("cpuRequest", T::Quantity, false),
                        param("cpuLimit", T::Quantity, false),
                        param("memoryLimitFactor", T::String, false),
                    ]
                }
            }
            Action::Cordon | Action::Uncordon => &[],
            Action::Evict => {
                const {
                    &[
                        param("selector", T::String, false),
                        param("skipCritical", T::Bool, false),
                        param("maxPods", T::Count, false),
                    ]
                }
            }
            Action::DeletePod => const { &[param("gracePeriod", T::Duration, false)] },
            Action::Annotate => const { &[param("annotations", T::StringMap, true)] },
            Action::CaptureLogs => {
                const {
                    &[
                        param("container", T::String, false),
                        param("tailLines", T::Count, false),
                        param("since", T::Duration, false),
                        param("previous", T::Bool, false),
                        param("maxPods", T::Count, false),
                    ]
                }
            }
            Action::Notify => {
                const {
                    &[
                        param("url", T::String, true),
                        param("message", T::String, false),
                        param("format", T::String, false),
                    ]
                }
            }
            Action::WaitFor => {
                const {
                    &[
                        param("promql", T::Promql, true),
                        param("timeout", T::Duration, false),
                        param("interval", T::Duration, false),
                    ]
                }
            }
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn action_names_match_their_serde_names() {
        for action in Action::ALL {
            let json = serde_json::to_string(&action).expect("serialize");
            assert_eq!(json, format!("\"{}\"", action.as_str()));
        }
    }

    #[test]
    fn node_actions_only_apply_to_nodes() {
        assert_eq!(Action::Cordon.target_kinds(), Some(&[TargetKind::Node][..]));
        assert!(
            !Action::RolloutUndo
                .target_kinds()
                .expect("kinds")
                .contains(&TargetKind::Node)
        );
    }

    #[test]
    fn parameter_names_are_unique_per_action() {
        for action in Action::ALL {
            let mut names: Vec<_> = action.params().iter().map(|p| p.name).collect();
            names.sort_unstable();
            let before = names.len();
            names.dedup();
            assert_eq!(before, names.len(), "{action} repeats a parameter");
        }
    }
}
