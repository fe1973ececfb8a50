//! The advisor's HTTP client for any OpenAI-compatible endpoint: `POST {baseUrl}/chat/completions`
//! and `POST {baseUrl}/embeddings`, with a deadline per call, retries, an hourly budget, a
//! circuit breaker and an answer cache. Every way a call can go wrong ends as an [`Error`]
//! within the call's `timeout`; none panics and none carries the API key.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};
use reqwest::Url;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use serde_json::Value;

use super::backoff::{self, jitter};
use super::breaker::{self, Breaker, Refusal};
use super::budget::{Budget, Exhausted, Reservation, estimate_tokens};
use super::cache::Cache;
use super::config::Config;
use super::key::{ApiKey, KeyError};
use super::wire::{
    ChatRequest, ChatResponse, EmbeddingsRequest, EmbeddingsResponse, JsonSchemaFormat, Message,
    ResponseFormat,
};
use crate::check::format_duration;

/// The largest answer read; a bigger one is malformed.
const MAX_ANSWER: usize = 32 * 1024 * 1024;
/// How much of an error answer an [`Error`] quotes.
const EXCERPT: usize = 300;

/// Why a call gave no answer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The call took its whole `timeout`, attempts and waits included.
    #[error("timed out after {}", format_duration(*after))]
    TimedOut {
        /// The timeout.
        after: Duration,
    },
    /// The endpoint answered 429 to every attempt (or asked to wait past the deadline).
    #[error("rate limited (429) after {}", plural(*attempts))]
    RateLimited {
        /// Attempts made.
        attempts: u32,
    },
    /// The endpoint answered 5xx to every attempt.
    #[error("server error ({status}) after {}: {message}", plural(*attempts))]
    Server {
        /// The last status.
        status: u16,
        /// Attempts made.
        attempts: u32,
        /// The start of the last answer's error message.
        message: String,
    },
    /// The endpoint refused the request (a 4xx other than 429): not retried.
    #[error("the endpoint refused the request ({status}): {message}")]
    Refused {
        /// The status.
        status: u16,
        /// The start of its error message.
        message: String,
    },
    /// No connection, or it broke, on every attempt.
    #[error("cannot reach {url} after {}: {reason}", plural(*attempts))]
    Unreachable {
        /// The URL called.
        url: Url,
        /// Attempts made.
        attempts: u32,
        /// The last error.
        reason: String,
    },
    /// A success status with an answer Salve cannot read.
    #[error("malformed answer: {reason}")]
    Malformed {
        /// What is wrong with it.
        reason: String,
    },
    /// The hour's calls are spent: refused locally, nothing sent.
    #[error(
        "over the hourly budget of {limit} calls (the next call fits in {})",
        format_duration(*frees_in)
    )]
    OverCallBudget {
        /// `budget.callsPerHour`.
        limit: u32,
        /// When the oldest call of the hour leaves the window.
        frees_in: Duration,
    },
    /// The call's tokens do not fit in what is left of the hour's: refused locally.
    #[error(
        "over the hourly budget of {limit} tokens ({used} used in the last hour, this call needs about {needed})"
    )]
    OverTokenBudget {
        /// `budget.tokensPerHour`.
        limit: u64,
        /// Tokens used in the last hour.
        used: u64,
        /// The call's estimate.
        needed: u64,
    },
    /// The circuit breaker is open: refused locally, nothing sent.
    #[error(
        "circuit open until {} after {failures} consecutive failures",
        until.to_rfc3339_opts(SecondsFormat::Secs, true)
    )]
    CircuitOpen {
        /// When it half-opens.
        until: DateTime<Utc>,
        /// The failures that opened it.
        failures: u32,
    },
    /// The breaker is half-open and its one trial call is under way: refused locally.
    #[error("circuit half-open: its one trial call is under way")]
    TrialUnderWay,
    /// The API key could not be read: nothing sent.
    #[error("no API key")]
    ApiKey(#[source] KeyError),
    /// `embed` without an `embeddings` model configured.
    #[error("no embeddings model is configured")]
    NoEmbeddingsModel,
    /// The HTTP client could not be set up.
    #[error("cannot set up the HTTP client")]
    Setup(#[source] reqwest::Error),
    /// The request could not be encoded.
    #[error("cannot encode the request")]
    Encode(#[source] serde_json::Error),
}

/// The advisor client's results.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Whether this says the endpoint is unhealthy (it counts toward opening the breaker).
    pub fn is_endpoint_failure(&self) -> bool {
        matches!(
            self,
            Error::TimedOut { .. }
                | Error::RateLimited { .. }
                | Error::Server { .. }
                | Error::Unreachable { .. }
                | Error::Malformed { .. }
        )
    }

    /// Whether the call was refused locally, before anything was sent.
    pub fn is_local_refusal(&self) -> bool {
        matches!(
            self,
            Error::OverCallBudget { .. }
                | Error::OverTokenBudget { .. }
                | Error::CircuitOpen { .. }
                | Error::TrialUnderWay
                | Error::ApiKey(_)
                | Error::NoEmbeddingsModel
                | Error::Encode(_)
        )
    }
}

fn plural(attempts: u32) -> String {
    if attempts == 1 {
        "1 attempt".into()
    } else {
        format!("{attempts} attempts")
    }
}

/// A question for the chat model.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Chat {
    /// The conversation, instructions first.
    pub messages: Vec<Message>,
    /// The answer's required shape, sent as `response_format` when given.
    pub response_format: Option<JsonSchemaFormat>,
    /// Reuse an answer given under this key within the cache's time-to-live (the incident's
    /// fingerprint and a digest of its evidence); `None` always asks.
    pub cache_key: Option<String>,
}

/// The chat model's answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    /// The answer's text (JSON, when a schema was asked for; the caller validates it).
    pub content: String,
    /// The model that answered, as the endpoint names it.
    pub model: String,
    /// Why it stopped (`stop`, `length`...), when the endpoint says.
    pub finish_reason: Option<String>,
    /// Tokens the call used.
    pub tokens: u64,
    /// Whether `tokens` is an estimate (the endpoint reported no usage).
    pub tokens_estimated: bool,
    /// Requests sent for it (0 for a cached answer).
    pub attempts: u32,
    /// Whether it came from the cache.
    pub cached: bool,
}

/// The embeddings of some texts.
#[derive(Debug, Clone, PartialEq)]
pub struct Embeddings {
    /// One vector per input, in the inputs' order.
    pub vectors: Vec<Vec<f32>>,
    /// Tokens the call used.
    pub tokens: u64,
    /// Whether `tokens` is an estimate.
    pub tokens_estimated: bool,
    /// Requests sent for it.
    pub attempts: u32,
}

/// A client for one OpenAI-compatible endpoint. Cheap to clone (clones share the budget,
/// breaker and cache). Its `Debug` shows the configuration, which names where the key is read
/// from, never the key.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    config: Config,
    http: reqwest::Client,
    state: Mutex<State>,
}

struct State {
    budget: Budget,
    breaker: Breaker,
    cache: Cache<Completion>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

/// What one attempt got back.
struct Reply {
    status: u16,
    retry_after: Option<Duration>,
    body: Vec<u8>,
    too_big: bool,
}

/// What a successful call parsed, before the budget and cache see it.
struct Answered<T> {
    value: T,
    tokens: Tokens,
    attempts: u32,
}

/// Tokens a call used: as the endpoint reported them, else estimated from the text sent and
/// received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Tokens {
    count: u64,
    estimated: bool,
}

impl Tokens {
    fn reported_or(reported: Option<u64>, estimate: impl FnOnce() -> u64) -> Self {
        match reported {
            Some(count) => Tokens {
                count,
                estimated: false,
            },
            None => Tokens {
                count: estimate(),
                estimated: true,
            },
        }
    }
}

impl Client {
    /// A client for `config`. Nothing is sent, and the key is not read, until a call.
    pub fn new(config: Config) -> Result<Self> {
        let http = reqwest::Client::builder()
            // An API endpoint does not redirect; following one could carry the key elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("salve/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(Error::Setup)?;
        let state = State {
            budget: Budget::new(config.budget),
            breaker: Breaker::new(config.breaker),
            cache: Cache::new(config.cache),
        };
        Ok(Client {
            inner: Arc::new(Inner {
                config,
                http,
                state: Mutex::new(state),
            }),
        })
    }

    /// Its configuration.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The breaker's state now.
    pub fn breaker(&self) -> breaker::State {
        self.state().breaker.state(Instant::now())
    }

    /// Calls and tokens spent in the last hour.
    pub fn usage(&self) -> (u32, u64) {
        self.state().budget.usage(Instant::now())
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Asks the chat model, at temperature 0.
    pub async fn chat(&self, chat: &Chat) -> Result<Completion> {
        if let Some(key) = &chat.cache_key
            && let Some(mut hit) = self.state().cache.get(key, Instant::now())
        {
            hit.cached = true;
            hit.attempts = 0;
            return Ok(hit);
        }
        let config = &self.inner.config;
        let request = ChatRequest {
            model: &config.model,
            messages: &chat.messages,
            temperature: 0.0,
            response_format: chat.response_format.as_ref().map(|schema| ResponseFormat {
                kind: "json_schema",
                json_schema: schema,
            }),
        };
        let body = serde_json::to_vec(&request).map_err(Error::Encode)?;
        let prompt: u64 = chat
            .messages
            .iter()
            .map(|m| estimate_tokens(&m.content))
            .sum();
        let parse = |bytes: &[u8]| {
            let ((response, content), reported) = parse_chat(bytes)?;
            let tokens = Tokens::reported_or(reported, || prompt + estimate_tokens(&content));
            Ok(((response, content), tokens))
        };
        let answered = self.send("chat/completions", body, prompt, parse).await?;
        let (response, content) = answered.value;
        let completion = Completion {
            tokens: answered.tokens.count,
            tokens_estimated: answered.tokens.estimated,
            model: response.model.unwrap_or_else(|| config.model.clone()),
            finish_reason: response
                .choices
                .into_iter()
                .next()
                .and_then(|c| c.finish_reason),
            content,
            attempts: answered.attempts,
            cached: false,
        };
        if let Some(key) = &chat.cache_key {
            self.state()
                .cache
                .insert(key.clone(), completion.clone(), Instant::now());
        }
        Ok(completion)
    }

    /// The embeddings of `inputs`, with the configured embeddings model.
    pub async fn embed(&self, inputs: &[String]) -> Result<Embeddings> {
        let model = &self
            .inner
            .config
            .embeddings
            .as_ref()
            .ok_or(Error::NoEmbeddingsModel)?
            .model;
        let request = EmbeddingsRequest {
            model,
            input: inputs,
        };
        let body = serde_json::to_vec(&request).map_err(Error::Encode)?;
        let estimate: u64 = inputs.iter().map(|i| estimate_tokens(i)).sum();
        let count = inputs.len();
        let answered = self
            .send("embeddings", body, estimate, |bytes| {
                let (vectors, reported) = parse_embeddings(bytes, count)?;
                Ok((vectors, Tokens::reported_or(reported, || estimate)))
            })
            .await?;
        Ok(Embeddings {
            vectors: answered.value,
            tokens: answered.tokens.count,
            tokens_estimated: answered.tokens.estimated,
            attempts: answered.attempts,
        })
    }

    /// One call: the key, the breaker and the budget first (a refusal sends nothing), then
    /// attempts until an answer, a final error or the deadline; the outcome goes to the
    /// breaker and the budget.
    async fn send<T>(
        &self,
        path: &str,
        body: Vec<u8>,
        estimate: u64,
        parse: impl Fn(&[u8]) -> Result<(T, Tokens), String>,
    ) -> Result<Answered<T>> {
        let (key, authorization) = match &self.inner.config.api_key {
            Some(source) => {
                let key = source.read().map_err(Error::ApiKey)?;
                let authorization = bearer(&key)
                    .ok_or_else(|| Error::ApiKey(KeyError::NotHeaderSafe(source.clone())))?;
                (Some(key), Some(authorization))
            }
            None => (None, None),
        };
        let reservation = self.admit(estimate)?;
        let mut pending = Pending {
            client: self,
            armed: true,
        };
        let outcome = self
            .attempts(path, body, authorization.as_ref(), key.as_ref(), parse)
            .await;
        pending.armed = false;

        let mut state = self.state();
        match &outcome {
            Ok(answered) => {
                state.breaker.succeeded();
                state
                    .budget
                    .settle(reservation, Some(answered.tokens.count));
            }
            Err(error) => {
                if error.is_endpoint_failure() {
                    state.breaker.failed(Instant::now());
                } else {
                    // The endpoint answered on purpose (a 4xx): it is up.
                    state.breaker.succeeded();
                }
                state.budget.settle(reservation, None);
            }
        }
        outcome
    }

    /// Lets a call through the breaker and into the budget, or refuses it.
    fn admit(&self, estimate: u64) -> Result<Reservation> {
        let now = Instant::now();
        let mut state = self.state();
        state.breaker.allow(now).map_err(|refusal| match refusal {
            Refusal::Open { until, failures } => Error::CircuitOpen {
                until: wall_time(until, now),
                failures,
            },
            Refusal::TrialUnderWay => Error::TrialUnderWay,
        })?;
        state.budget.reserve(now, estimate).map_err(|exhausted| {
            state.breaker.abandoned();
            match exhausted {
                Exhausted::Calls { limit, frees_in } => Error::OverCallBudget { limit, frees_in },
                Exhausted::Tokens {
                    limit,
                    used,
                    needed,
                } => Error::OverTokenBudget {
                    limit,
                    used,
                    needed,
                },
            }
        })
    }

    async fn attempts<T>(
        &self,
        path: &str,
        body: Vec<u8>,
        authorization: Option<&HeaderValue>,
        key: Option<&ApiKey>,
        parse: impl Fn(&[u8]) -> Result<(T, Tokens), String>,
    ) -> Result<Answered<T>> {
        let config = &self.inner.config;
        let url = config.endpoint(path);
        let deadline = Instant::now() + config.timeout;
        let timed_out = Error::TimedOut {
            after: config.timeout,
        };
        let redact = |text: &str| key.map_or_else(|| text.to_string(), |k| k.redact(text));
        let mut attempt = 0;
        loop {
            attempt += 1;
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(timed_out);
            }
            let sent = self.attempt(&url, &body, authorization);
            let (error, retry_after) = match tokio::time::timeout(remaining, sent).await {
                Err(_) => return Err(timed_out),
                Ok(Err(e)) => {
                    let reason = redact(&crate::diagnostic::chain(&e));
                    let error = Error::Unreachable {
                        url: url.clone(),
                        attempts: attempt,
                        reason,
                    };
                    (error, None)
                }
                Ok(Ok(reply)) if (200..300).contains(&reply.status) => {
                    if reply.too_big {
                        return Err(Error::Malformed {
                            reason: format!("larger than {} MiB", MAX_ANSWER >> 20),
                        });
                    }
                    let (value, tokens) =
                        parse(&reply.body).map_err(|reason| Error::Malformed {
                            reason: redact(&reason),
                        })?;
                    return Ok(Answered {
                        value,
                        tokens,
                        attempts: attempt,
                    });
                }
                Ok(Ok(reply)) => {
                    let message = redact(&error_message(&reply.body));
                    let error = match reply.status {
                        429 => Error::RateLimited { attempts: attempt },
                        500..=599 => Error::Server {
                            status: reply.status,
                            attempts: attempt,
                            message,
                        },
                        status => return Err(Error::Refused { status, message }),
                    };
                    (error, reply.retry_after)
                }
            };
            if attempt > config.retries {
                return Err(error);
            }
            let wait = retry_after.unwrap_or_else(|| config.backoff.delay(attempt - 1, jitter()));
            if Instant::now() + wait >= deadline {
                tracing::warn!(
                    endpoint = %url, attempt, %error, wait = %format_duration(wait),
                    "advisor call failed; the wait before a retry would pass its deadline"
                );
                return Err(error);
            }
            tracing::warn!(
                endpoint = %url, attempt, %error, wait = %format_duration(wait),
                "advisor call failed; retrying"
            );
            tokio::time::sleep(wait).await;
        }
    }

    async fn attempt(
        &self,
        url: &Url,
        body: &[u8],
        authorization: Option<&HeaderValue>,
    ) -> reqwest::Result<Reply> {
        let mut request = self
            .inner
            .http
            .post(url.clone())
            .header(CONTENT_TYPE, "application/json")
            .body(body.to_vec());
        if let Some(authorization) = authorization {
            request = request.header(AUTHORIZATION, authorization.clone());
        }
        let mut response = request.send().await?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(backoff::retry_after);
        let mut body = Vec::new();
        let mut too_big = false;
        while let Some(chunk) = response.chunk().await? {
            if body.len() + chunk.len() > MAX_ANSWER {
                too_big = true;
                break;
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Reply {
            status,
            retry_after,
            body,
            too_big,
        })
    }
}

/// Frees a half-open breaker's trial slot when a call is dropped before it ends (its caller
/// was cancelled), so the breaker cannot stay half-open with no trial ever finishing.
struct Pending<'a> {
    client: &'a Client,
    armed: bool,
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.client.state().breaker.abandoned();
        }
    }
}

/// The `Authorization` header for `key`, marked sensitive (kept out of HTTP-level logs), or
/// `None` when the key cannot be a header value.
fn bearer(key: &ApiKey) -> Option<HeaderValue> {
    let mut value = HeaderValue::from_str(&format!("Bearer {}", key.expose())).ok()?;
    value.set_sensitive(true);
    Some(value)
}

/// `instant` (after `now`) on the wall clock.
fn wall_time(instant: Instant, now: Instant) -> DateTime<Utc> {
    let ahead = instant.saturating_duration_since(now);
    chrono::TimeDelta::from_std(ahead)
        .ok()
        .and_then(|ahead| Utc::now().checked_add_signed(ahead))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// The error message of an error answer: OpenAI's `{"error": {"message": ...}}`, else the
/// start of the body.
fn error_message(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let message = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| match &v["error"] {
            Value::String(s) => Some(s.clone()),
            error => error["message"].as_str().map(str::to_string),
        })
        .unwrap_or_else(|| text.trim().to_string());
    if message.is_empty() {
        return "(no message)".into();
    }
    excerpt(&message)
}

fn excerpt(text: &str) -> String {
    if text.chars().count() <= EXCERPT {
        return text.to_string();
    }
    let short: String = text.chars().take(EXCERPT).collect();
    format!("{short}...")
}

/// A chat completion and its first choice's text.
fn parse_chat(body: &[u8]) -> Result<((ChatResponse, String), Option<u64>), String> {
    let response: ChatResponse = serde_json::from_slice(body)
        .map_err(|e| format!("not a chat completion: {}", excerpt(&e.to_string())))?;
    let first = response
        .choices
        .first()
        .ok_or_else(|| "a chat completion without choices".to_string())?;
    let Some(content) = first.message.content.clone() else {
        return Err(format!(
            "the answer has no text (finish_reason: {})",
            first.finish_reason.as_deref().unwrap_or("none")
        ));
    };
    let tokens = response.usage.as_ref().and_then(|u| u.total_tokens);
    Ok(((response, content), tokens))
}

/// The vectors of an embeddings answer, in the inputs' order.
fn parse_embeddings(body: &[u8], count: usize) -> Result<(Vec<Vec<f32>>, Option<u64>), String> {
    let response: EmbeddingsResponse = serde_json::from_slice(body)
        .map_err(|e| format!("not an embeddings answer: {}", excerpt(&e.to_string())))?;
    if response.data.len() != count {
        return Err(format!(
            "{} embeddings for {count} inputs",
            response.data.len()
        ));
    }
    let mut vectors: Vec<Option<Vec<f32>>> = vec![None; count];
    for (position, data) in response.data.into_iter().enumerate() {
        let index = data.index.unwrap_or(position);
        match vectors.get_mut(index) {
            Some(slot @ None) => *slot = Some(data.embedding),
            _ => {
                return Err(format!(
                    "embedding index {index} is out of range or repeated"
                ));
            }
        }
    }
    let tokens = response.usage.as_ref().and_then(|u| u.total_tokens);
    Ok((vectors.into_iter().flatten().collect(), tokens))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_messages_prefer_the_endpoints_own() {
        assert_eq!(
            error_message(br#"{"error": {"message": "model not found", "type": "x"}}"#),
            "model not found"
        );
        assert_eq!(error_message(br#"{"error": "overloaded"}"#), "overloaded");
        assert_eq!(error_message(b"  upstream down \n"), "upstream down");
        assert_eq!(error_message(b""), "(no message)");
        assert_eq!(error_message(&[b'x'; 1000]).len(), EXCERPT + 3);
    }

    #[test]
    fn a_chat_answer_needs_a_choice_with_text() {
        let good = br#"{"model": "m", "choices": [{"message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}], "usage": {"total_tokens": 12}}"#;
        let ((response, content), tokens) = parse_chat(good).expect("parses");
        assert_eq!((content.as_str(), tokens), ("hi", Some(12)));
        assert_eq!(response.model.as_deref(), Some("m"));
        assert!(parse_chat(br#"{"choices": []}"#).is_err());
        let refusal =
            br#"{"choices": [{"message": {"content": null}, "finish_reason": "content_filter"}]}"#;
        assert_eq!(
            parse_chat(refusal).err().as_deref(),
            Some("the answer has no text (finish_reason: content_filter)")
        );
        assert!(parse_chat(b"<html>").is_err());
    }

    #[test]
    fn embeddings_come_back_in_input_order_or_not_at_all() {
        let shuffled =
            br#"{"data": [{"index": 1, "embedding": [2.0]}, {"index": 0, "embedding": [1.0]}]}"#;
        let (vectors, tokens) = parse_embeddings(shuffled, 2).expect("parses");
        assert_eq!((vectors, tokens), (vec![vec![1.0], vec![2.0]], None));
        let repeated =
            br#"{"data": [{"index": 0, "embedding": [2.0]}, {"index": 0, "embedding": [1.0]}]}"#;
        assert!(parse_embeddings(repeated, 2).is_err());
        assert!(parse_embeddings(shuffled, 3).is_err());
    }

    #[test]
    fn attempts_read_as_english() {
        assert_eq!(
            Error::RateLimited { attempts: 1 }.to_string(),
            "rate limited (429) after 1 attempt"
        );
        assert_eq!(
            Error::TimedOut {
                after: Duration::from_secs(20)
            }
            .to_string(),
            "timed out after 20s"
        );
        assert_eq!(
            Error::OverCallBudget {
                limit: 60,
                frees_in: Duration::from_secs(120)
            }
            .to_string(),
            "over the hourly budget of 60 calls (the next call fits in 2m)"
        );
    }
}
