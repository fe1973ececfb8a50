//! The active set of playbooks and policies, swapped atomically on reload.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::Playbook;
use super::load::Loaded;
use crate::diagnostic::Diagnostic;
use crate::policy::Policy;

/// A consistent, validated set of playbooks and policies. Cheap to clone; members are shared.
#[derive(Debug, Clone, Default)]
pub struct PlaybookSet {
    playbooks: BTreeMap<String, Arc<Playbook>>,
    policies: BTreeMap<String, Arc<Policy>>,
    generation: u64,
}

/// What changed between two sets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SetDiff {
    /// Playbooks only in the new set.
    pub added: Vec<String>,
    /// Playbooks only in the old set.
    pub removed: Vec<String>,
    /// Playbooks in both whose content changed.
    pub changed: Vec<String>,
    /// How many playbooks are the same in both.
    pub unchanged: usize,
    /// Policies added, removed or changed.
    pub policies_changed: Vec<String>,
}

impl SetDiff {
    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty()
            && self.removed.is_empty()
            && self.changed.is_empty()
            && self.policies_changed.is_empty()
    }
}

impl PlaybookSet {
    /// The set from a load, or every diagnostic when any is an error: an invalid change is
    /// refused whole, never applied in part.
    pub fn from_loaded(loaded: Loaded) -> Result<Self, Vec<Diagnostic>> {
        if loaded.has_errors() {
            return Err(loaded.diagnostics);
        }
        Ok(PlaybookSet {
            playbooks: loaded
                .playbooks
                .into_iter()
                .map(|p| (p.name.clone(), p))
                .collect(),
            policies: loaded
                .policies
                .into_iter()
                .map(|p| (p.name.clone(), p))
                .collect(),
            generation: 0,
        })
    }

    /// The playbook named `name`.
    pub fn playbook(&self, name: &str) -> Option<&Arc<Playbook>> {
        self.playbooks.get(name)
    }

    /// Every playbook, by name.
    pub fn playbooks(&self) -> impl ExactSizeIterator<Item = &Arc<Playbook>> {
        self.playbooks.values()
    }

    /// The policy named `name`.
    pub fn policy(&self, name: &str) -> Option<&Arc<Policy>> {
        self.policies.get(name)
    }

    /// Every policy, by name.
    pub fn policies(&self) -> impl ExactSizeIterator<Item = &Arc<Policy>> {
        self.policies.values()
    }

    /// How many reloads produced this set (0 for the first).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Makes `self` the successor of `previous`: every playbook and policy whose digest did not
    /// change is replaced by `previous`'s own `Arc`, so state keyed by it (timers, cooldowns)
    /// and pointer identity survive an unrelated edit. Returns what changed.
    pub fn succeed(&mut self, previous: &PlaybookSet) -> SetDiff {
        self.generation = previous.generation + 1;
        let mut diff = SetDiff::default();
        for (name, playbook) in &mut self.playbooks {
            match previous.playbooks.get(name) {
                Some(old) if old.digest == playbook.digest => {
                    *playbook = Arc::clone(old);
                    diff.unchanged += 1;
                }
                Some(_) => diff.changed.push(name.clone()),
                None => diff.added.push(name.clone()),
            }
        }
        diff.removed = previous
            .playbooks
            .keys()
            .filter(|name| !self.playbooks.contains_key(*name))
            .cloned()
            .collect();
        for (name, policy) in &mut self.policies {
            match previous.policies.get(name) {
                Some(old) if old.digest == policy.digest => *policy = Arc::clone(old),
                _ => diff.policies_changed.push(name.clone()),
            }
        }
        diff.policies_changed.extend(
            previous
                .policies
                .keys()
                .filter(|name| !self.policies.contains_key(*name))
                .cloned(),
        );
        diff
    }
}
