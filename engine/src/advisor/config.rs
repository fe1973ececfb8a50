//! What the advisor's client needs to know: the endpoint, the model, where the API key lives,
//! and its limits. Compiled from a policy's `advisor:` block ([`crate::policy::advisor`]) or
//! built in code with [`Config::new`].

use std::time::Duration;

use reqwest::Url;

use super::backoff::Backoff;
use super::key::ApiKeySource;
use super::redact::Redactor;

/// Defaults that apply when the `advisor:` block leaves a setting out.
pub mod defaults {
    use std::time::Duration;

    /// `timeout`: the whole call, retries included.
    pub const TIMEOUT: Duration = Duration::from_secs(20);
    /// `retries`.
    pub const RETRIES: u32 = 2;
    /// `budget.callsPerHour`.
    pub const CALLS_PER_HOUR: u32 = 60;
    /// `budget.tokensPerHour`.
    pub const TOKENS_PER_HOUR: u64 = 200_000;
    /// `circuitBreaker.failures`.
    pub const BREAKER_FAILURES: u32 = 3;
    /// `circuitBreaker.reset`.
    pub const BREAKER_RESET: Duration = Duration::from_secs(5 * 60);
    /// `cache.ttl`.
    pub const CACHE_TTL: Duration = Duration::from_secs(60 * 60);
    /// `cache.entries`.
    pub const CACHE_ENTRIES: usize = 1000;
}

/// A validated advisor configuration. Its `Debug` shows where the API key is read from, never
/// the key.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The endpoint's base URL, such as `https://api.openai.com/v1` or `http://vllm:8000/v1`;
    /// requests go to `{base_url}/chat/completions` and `{base_url}/embeddings`.
    pub base_url: Url,
    /// The chat model.
    pub model: String,
    /// Where the API key is read from, at every call (so a rotated Secret is picked up);
    /// `None` sends no `Authorization` header (a local Ollama or llama.cpp server).
    pub api_key: Option<ApiKeySource>,
    /// The longest one call may take, all its attempts and waits included.
    pub timeout: Duration,
    /// Further attempts after a 429, a 5xx or a connection error.
    pub retries: u32,
    /// The waits between attempts when the endpoint gives no `Retry-After`.
    pub backoff: Backoff,
    /// Calls and tokens per rolling hour.
    pub budget: BudgetLimits,
    /// When to stop calling a failing endpoint, and for how long.
    pub breaker: BreakerSettings,
    /// The embeddings model, when one is configured.
    pub embeddings: Option<EmbeddingsConfig>,
    /// How answers are reused.
    pub cache: CacheSettings,
    /// What is redacted from everything the advisor is sent: the built-in patterns and the
    /// policy's own (`redact:`).
    pub redact: Redactor,
}

/// Calls and tokens per rolling hour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BudgetLimits {
    /// Calls that reach the network (each call counts once, whatever its retries).
    pub calls_per_hour: u32,
    /// Tokens, as the endpoint reports them (or estimated from the text when it does not).
    pub tokens_per_hour: u64,
}

/// The circuit breaker's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerSettings {
    /// Consecutive failed calls that open it.
    pub failures: u32,
    /// How long it stays open before one trial call is let through.
    pub reset: Duration,
}

/// The embeddings endpoint's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmbeddingsConfig {
    /// The embeddings model.
    pub model: String,
}

/// The answer cache's settings; a zero `ttl` or `entries` turns it off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheSettings {
    /// How long an answer is reused.
    pub ttl: Duration,
    /// At most this many answers are kept (the oldest goes first).
    pub entries: usize,
}

impl Config {
    /// A configuration for `model` at `base_url`, without an API key, with every default.
    pub fn new(base_url: Url, model: impl Into<String>) -> Self {
        Config {
            base_url,
            model: model.into(),
            api_key: None,
            timeout: defaults::TIMEOUT,
            retries: defaults::RETRIES,
            backoff: Backoff::default(),
            budget: BudgetLimits {
                calls_per_hour: defaults::CALLS_PER_HOUR,
                tokens_per_hour: defaults::TOKENS_PER_HOUR,
            },
            breaker: BreakerSettings {
                failures: defaults::BREAKER_FAILURES,
                reset: defaults::BREAKER_RESET,
            },
            embeddings: None,
            cache: CacheSettings {
                ttl: defaults::CACHE_TTL,
                entries: defaults::CACHE_ENTRIES,
            },
            redact: Redactor::default(),
        }
    }

    /// The URL of `path` under the base URL: `endpoint("chat/completions")`.
    pub fn endpoint(&self, path: &str) -> Url {
        let mut url = self.base_url.clone();
        let joined = format!("{}/{path}", url.path().trim_end_matches('/'));
        url.set_path(&joined);
        url
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_keep_the_base_path_with_or_without_a_trailing_slash() {
        for base in ["http://127.0.0.1:8000/v1", "http://127.0.0.1:8000/v1/"] {
            let config = Config::new(Url::parse(base).expect("url"), "m");
            assert_eq!(
                config.endpoint("chat/completions").as_str(),
                "http://127.0.0.1:8000/v1/chat/completions"
            );
        }
        let root = Config::new(Url::parse("http://localhost:11434").expect("url"), "m");
        assert_eq!(
            root.endpoint("embeddings").as_str(),
            "http://localhost:11434/embeddings"
        );
    }
}
