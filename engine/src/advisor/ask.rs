//! The advisor as a remediation consults it: one [`Advisor`] per engine keeps the client of
//! the policy's current `advisor:` configuration (so its budget, breaker and cache carry over
//! from incident to incident, and start afresh when the configuration changes) and the runbook
//! retrieval index of the current playbook set (rebuilt when the set is reloaded).
//!
//! [`Advisor::ask`] takes a gathered brief and returns what the journal records: the
//! deterministic correlation, the candidate playbooks and how they were found, and the
//! [`Consultation`]. What an accepted advice may change is a [`Caution`]: a lower ceiling, an
//! approval for every step — never anything else.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwap;
use serde_json::{Value, json};

use super::brief::Brief;
use super::client::Client;
use super::config::Config;
use super::consult::{self, Consultation, Outcome, Question, Shown};
use super::context::Candidate;
use super::redact::Redactions;
use super::retrieve::{Method, Ranking, Retriever};
use crate::correlate::{Correlation, correlate};
use crate::gate::Caution;
use crate::playbook::PlaybookSet;
use crate::risk::Risk;

/// How many retrieved playbooks join those whose triggers fired.
pub const RETRIEVED: usize = 3;

/// The advisor of one engine. Cheap to clone: clones share the client and the index.
#[derive(Clone, Default)]
pub struct Advisor {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    /// The active playbook set, when the engine has one to share.
    set: Option<Arc<ArcSwap<PlaybookSet>>>,
    /// Where embeddings are cached.
    cache_dir: Option<PathBuf>,
    client: Mutex<Option<Client>>,
    /// The index and the set it was built from.
    retriever: Mutex<Option<(Arc<PlaybookSet>, Arc<Retriever>)>>,
}

impl std::fmt::Debug for Advisor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Advisor")
            .field("cache_dir", &self.inner.cache_dir)
            .finish_non_exhaustive()
    }
}

/// What one consultation produced, for the journal.
#[derive(Debug, Clone)]
pub struct Asked {
    /// Salve's own correlation of the brief's signals.
    pub correlation: Correlation,
    /// The playbooks the model was offered.
    pub candidates: Vec<Candidate>,
    /// How the retrieved ones were ranked.
    pub method: Method,
    /// Why embeddings were configured but not used, if so.
    pub fallback: Option<String>,
    /// The consultation.
    pub consultation: Consultation,
}

impl Advisor {
    /// An advisor that reads candidate playbooks from `set` (without one, only the playbooks
    /// of the incident's signals are candidates) and caches embeddings under `cache_dir`.
    pub fn new(set: Option<Arc<ArcSwap<PlaybookSet>>>, cache_dir: Option<PathBuf>) -> Self {
        Advisor {
            inner: Arc::new(Inner {
                set,
                cache_dir,
                client: Mutex::new(None),
                retriever: Mutex::new(None),
            }),
        }
    }

    /// The active playbook set, when there is one.
    pub fn set(&self) -> Option<Arc<PlaybookSet>> {
        self.inner.set.as_ref().map(|set| set.load_full())
    }

    /// The client for `config`: the one in use when the configuration is unchanged, else a
    /// new one.
    fn client(&self, config: &Config) -> super::Result<Client> {
        let mut current = lock(&self.inner.client);
        if let Some(client) = current.as_ref().filter(|c| c.config() == config) {
            return Ok(client.clone());
        }
        let client = Client::new(config.clone())?;
        *current = Some(client.clone());
        Ok(client)
    }

    /// The retrieval index of `set`, built once per set.
    fn retriever(&self, set: &Arc<PlaybookSet>) -> Arc<Retriever> {
        let mut current = lock(&self.inner.retriever);
        if let Some((built_for, retriever)) = current.as_ref()
            && Arc::ptr_eq(built_for, set)
        {
            return Arc::clone(retriever);
        }
        let retriever = Arc::new(Retriever::of_set(set));
        *current = Some((Arc::clone(set), Arc::clone(&retriever)));
        retriever
    }

    /// The candidates for `brief` ([`candidates`] with the best [`RETRIEVED`] of the
    /// current set), and how they were ranked.
    async fn candidates(
        &self,
        client: Option<&Client>,
        brief: &Brief,
    ) -> (Vec<Candidate>, Ranking) {
        let set = self.set();
        let ranking = match &set {
            Some(set) => {
                let cache_dir = self.inner.cache_dir.as_deref();
                self.retriever(set)
                    .rank(client, cache_dir, &brief.query(), RETRIEVED)
                    .await
            }
            None => Ranking {
                ranked: Vec::new(),
                method: Method::Lexical,
                fallback: None,
            },
        };
        let retrieved: Vec<String> = ranking.ranked.iter().map(|r| r.name.clone()).collect();
        let names = candidates(brief, set.as_deref(), &retrieved);
        (described(&names, set.as_deref()), ranking)
    }

    /// Asks the model configured by `config` about `brief` (whose first signal is the
    /// incident's own), under the incident's current `ceiling` and approvals.
    pub async fn ask(
        &self,
        config: &Config,
        brief: &Brief,
        fingerprint: &str,
        ceiling: Risk,
        approval_required: bool,
    ) -> Asked {
        let correlation = correlate(brief);
        let client = self.client(config);
        let (candidates, ranking) = self.candidates(client.as_ref().ok(), brief).await;
        let consultation = match &client {
            Ok(client) => {
                let question = Question {
                    brief,
                    correlation: &correlation.reason,
                    candidates: &candidates,
                    ceiling,
                    approval_required,
                    fingerprint,
                };
                consult::consult(client, &question).await
            }
            Err(error) => Consultation {
                outcome: Outcome::Rejected {
                    reason: consult::failure_reason(error),
                    message: error.to_string(),
                },
                shown: Shown {
                    ids: Vec::new(),
                    redactions: Redactions::default(),
                    shortened: Vec::new(),
                    bytes: 0,
                    digest: String::new(),
                    text: String::new(),
                },
                model: None,
                cached: false,
                tokens: 0,
                took: Duration::ZERO,
            },
        };
        Asked {
            correlation,
            candidates,
            method: ranking.method,
            fallback: ranking.fallback,
            consultation,
        }
    }
}

impl Asked {
    /// What the advice asks of the incident whose ceiling is `ceiling`: nothing when there is
    /// no advice.
    pub fn caution(&self, ceiling: Risk) -> Caution {
        match self.consultation.advice() {
            Some(advice) => Caution {
                ceiling: Some(advice.ceiling(ceiling)).filter(|asked| *asked < ceiling),
                approval: advice.requires_approval(),
            },
            None => Caution::default(),
        }
    }

    /// The journal entry's detail: the consultation, the correlation, the candidates.
    pub fn to_json(&self, caution: Caution) -> Value {
        let mut detail = self.consultation.to_json();
        detail["caution"] = caution_json(caution);
        let id = |i: &usize| format!("sig-{}", i + 1);
        detail["correlation"] = json!({
            "root": id(&self.correlation.root),
            "related": self.correlation.related.iter().map(id).collect::<Vec<_>>(),
            "shared": self.correlation.shared,
            "reason": self.correlation.reason,
        });
        detail["candidates"] = json!(
            self.candidates
                .iter()
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>()
        );
        detail["retrieval"] = json!({
            "method": self.method.as_str(),
            "fallback": self.fallback,
        });
        detail
    }
}

/// The playbooks a model is shown for `brief`: those of its signals (their triggers fired;
/// with a `set`, only those in it), in signal order, then `retrieved` (best first), each once.
/// `salve advise-eval` scores the same list.
pub fn candidates(brief: &Brief, set: Option<&PlaybookSet>, retrieved: &[String]) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    let fired = brief
        .signals
        .iter()
        .map(|s| &s.playbook)
        .filter(|name| set.is_none_or(|set| set.playbook(name).is_some()));
    for name in fired.chain(retrieved) {
        if !names.contains(name) {
            names.push(name.clone());
        }
    }
    names
}

/// `names` with their descriptions from `set`, as the context shows candidates.
pub fn described(names: &[String], set: Option<&PlaybookSet>) -> Vec<Candidate> {
    names
        .iter()
        .map(|name| Candidate {
            name: name.clone(),
            description: set
                .and_then(|s| s.playbook(name))
                .and_then(|p| p.description.clone())
                .unwrap_or_default(),
        })
        .collect()
}

/// A caution as the journal keeps it.
pub fn caution_json(caution: Caution) -> Value {
    json!({"ceiling": caution.ceiling, "approval": caution.approval})
}

/// A caution read back from the journal (nothing asked when it cannot be read).
pub fn caution_from_json(value: &Value) -> Caution {
    Caution {
        ceiling: serde_json::from_value(value["ceiling"].clone()).unwrap_or_default(),
        approval: value["approval"] == json!(true),
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
