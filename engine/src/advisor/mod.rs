//! The LLM advisor: root-cause correlation by a model behind an OpenAI-compatible endpoint
//! (OpenAI, vLLM, Ollama, llama.cpp's server, DashScope's compatible mode), as an advisor only.
//!
//! The advisor only advises. Salve detects, correlates, plans, gates and heals without it; it
//! is off unless a policy's `advisor:` block turns it on ([`crate::policy::advisor`]), and
//! every way it can fail ends as an [`Error`] the caller discards. The [`Client`] guarantees:
//!
//! - **Bounded in time.** A call never takes longer than its `timeout` (default 20 s), every
//!   attempt and wait included.
//! - **Retries only what may pass.** A 429, a 5xx or a connection error is tried again
//!   (`retries`, default 2) after an exponential backoff with jitter, or after the endpoint's
//!   `Retry-After` when it gives one in seconds; a wait that would pass the deadline is not
//!   taken. Any other 4xx is final at once.
//! - **Bounded in cost.** An hourly budget of calls and tokens (the endpoint's
//!   `usage.total_tokens`, else an estimate of a token per four bytes of text): a call over it
//!   is refused locally, and nothing is sent.
//! - **Leaves a failing endpoint alone.** After `failures` consecutive failed calls (timeouts,
//!   connection errors, 429s and 5xx that outlast the retries, malformed answers) the circuit
//!   breaker opens and refuses calls locally for `reset`; then one trial call is let through,
//!   and its success closes the breaker.
//! - **Does not ask twice.** An answer is kept under the caller's cache key (the incident's
//!   fingerprint and a digest of its evidence) for the cache's time-to-live; asking again
//!   within it sends nothing. The cache is bounded; the oldest answer goes first.
//! - **Keeps the key secret.** The API key is read from a file or an environment variable at
//!   each call, sent only in the `Authorization: Bearer` header (marked sensitive), never
//!   logged, never in an error (text the endpoint sends back is scrubbed of it), and shown by
//!   no `Debug`. Redirects are not followed, so the key goes nowhere but the configured URL.
//!
//! What a model may answer is bounded by [`answer`]: a JSON object of six fields checked
//! against the incident (its signals, the evidence it was shown, the candidate playbooks), which
//! can only lower the risk ceiling or ask for an approval; anything else is rejected with a
//! reason. What it is shown is built by [`context`], redacted by [`redact`].
//!
//! During a remediation ([`crate::executor`]), [`gather`] collects an incident's [`brief`]
//! (its signals and those firing beside it, events, rollout history, logs), [`ask`] adds
//! Salve's own correlation ([`crate::correlate`]) and the candidate playbooks ([`retrieve`]:
//! those whose triggers fired and the best matches of their runbooks), and [`consult`] asks
//! and checks. The executor journals the outcome before any step; an accepted advice may only
//! add caution ([`crate::gate::Caution`]). [`eval`] scores the same pieces on labelled
//! scenarios (`salve advise-eval`).

pub mod answer;
pub mod ask;
pub mod backoff;
pub mod breaker;
pub mod brief;
pub mod budget;
pub mod cache;
pub mod client;
pub mod config;
pub mod consult;
pub mod context;
pub mod eval;
pub mod gather;
pub mod key;
pub mod redact;
pub mod retrieve;
pub mod wire;

pub use client::{Chat, Client, Completion, Embeddings, Error, Result};
pub use config::Config;
pub use key::{ApiKey, ApiKeySource};
pub use wire::{JsonSchemaFormat, Message, Role};
