//! The live evaluation loop: every PromQL-based trigger of the active playbook set is evaluated
//! on its own interval, at most `concurrency` queries at a time, each under the evaluator's
//! timeout, until cancelled.
//!
//! Signal states belong to a playbook's content: they survive a reload that leaves the playbook
//! unchanged (same digest), start afresh when it changes, and go when it is removed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwap;
use chrono::Utc;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::SignalQueries;
use super::evaluate::Evaluator;
use super::evaluation::PlaybookEvent;
use super::state::Tracker;
use crate::playbook::PlaybookSet;

/// How the loop runs.
#[derive(Debug, Clone, Copy)]
pub struct LiveOptions {
    /// At most this many queries in flight.
    pub concurrency: usize,
    /// How often the loop looks for triggers that are due.
    pub tick: Duration,
}

impl Default for LiveOptions {
    fn default() -> Self {
        LiveOptions {
            concurrency: 8,
            tick: Duration::from_millis(250),
        }
    }
}

struct Entry {
    digest: String,
    queries: Arc<SignalQueries>,
    tracker: Arc<Mutex<Tracker>>,
    due: Instant,
    interval: Duration,
    running: bool,
}

/// Evaluates the triggers of the set in `active` until `cancel` fires, sending every signal
/// event to `events` (a closed channel stops the loop).
pub async fn run(
    active: Arc<ArcSwap<PlaybookSet>>,
    evaluator: Evaluator,
    options: LiveOptions,
    cancel: CancellationToken,
    events: mpsc::Sender<PlaybookEvent>,
) {
    let permits = Arc::new(Semaphore::new(options.concurrency.max(1)));
    let mut entries: HashMap<String, Entry> = HashMap::new();
    let mut tasks: JoinSet<String> = JoinSet::new();
    let mut tick = tokio::time::interval(options.tick);
    loop {
        tokio::select! {
            () = cancel.cancelled() => break,
            _ = tick.tick() => {}
            Some(done) = tasks.join_next() => {
                if let Ok(name) = done && let Some(entry) = entries.get_mut(&name) {
                    entry.running = false;
                }
                continue;
            }
        }
        if events.is_closed() {
            break;
        }
        sync_entries(&active.load(), &mut entries);
        let now = Instant::now();
        for (name, entry) in entries
            .iter_mut()
            .filter(|(_, e)| !e.running && e.due <= now)
        {
            entry.running = true;
            entry.due = now + entry.interval;
            let (name, evaluator, permits, events) = (
                name.clone(),
                evaluator.clone(),
                Arc::clone(&permits),
                events.clone(),
            );
            let (queries, tracker) = (Arc::clone(&entry.queries), Arc::clone(&entry.tracker));
            tasks.spawn(async move {
                let Ok(_permit) = permits.acquire().await else {
                    return name;
                };
                let at = Utc::now();
                let observation = evaluator.observe(&queries, at).await;
                let changes = tracker
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .observe(at, observation);
                for event in changes {
                    let event = PlaybookEvent {
                        playbook: name.clone(),
                        event,
                    };
                    if events.send(event).await.is_err() {
                        break;
                    }
                }
                name
            });
        }
    }
    tasks.shutdown().await;
}

/// Brings the tracked triggers in line with `set`: new and changed playbooks start afresh,
/// unchanged ones keep their state, removed ones go.
fn sync_entries(set: &PlaybookSet, entries: &mut HashMap<String, Entry>) {
    entries.retain(|name, entry| set.playbook(name).is_some_and(|p| p.digest == entry.digest));
    for playbook in set.playbooks() {
        if entries.contains_key(&playbook.name) {
            continue;
        }
        let Some(queries) = super::queries(&playbook.trigger.kind) else {
            continue;
        };
        entries.insert(
            playbook.name.clone(),
            Entry {
                digest: playbook.digest.clone(),
                queries: Arc::new(queries),
                tracker: Arc::new(Mutex::new(Tracker::new(
                    playbook.trigger.for_,
                    playbook.trigger.keep_firing_for,
                ))),
                due: Instant::now(),
                interval: playbook.trigger.interval,
                running: false,
            },
        );
    }
}
