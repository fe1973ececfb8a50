//! The LLM advisor's client against a real local HTTP server speaking the OpenAI
//! chat-completions and embeddings protocols: scripted answers (status, headers, body, delay),
//! every request recorded (headers and body), so each test asserts on what the endpoint
//! actually received — including that nothing was sent when the client refused locally.
//!
//! # Against a real endpoint
//!
//! With `SALVE_TEST_LLM_URL` (the base URL, such as `https://api.openai.com/v1` or
//! `http://localhost:11434/v1`), `SALVE_TEST_LLM_MODEL` and, when the endpoint needs one,
//! `SALVE_TEST_LLM_KEY` set, [`a_real_endpoint_answers`] also asks that endpoint; without them
//! it prints a note and passes. (`SALVE_TEST_LLM_EMBEDDINGS_MODEL` adds an embeddings call.)
//!
//! ```text
//! SALVE_TEST_LLM_URL=http://localhost:11434/v1 SALVE_TEST_LLM_MODEL=qwen2.5:0.5b \
//!   cargo test --test tests -- advisor::
//! ```

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use reqwest::Url;
use salve::advisor::backoff::Backoff;
use salve::advisor::breaker;
use salve::advisor::config::EmbeddingsConfig;
use salve::advisor::{ApiKeySource, Chat, Client, Config, Error, JsonSchemaFormat, Message};
use serde_json::{Value, json};

/// The key the tests configure; it must reach the server only as `Authorization: Bearer`.
pub(crate) const KEY: &str = "sk-test-7f3a9c2e51d84b06";

/// One scripted answer.
#[derive(Debug, Clone)]
pub(crate) struct Answer {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: String,
    delay: Duration,
}

impl Answer {
    pub(crate) fn new(status: u16, body: impl Into<String>) -> Self {
        Answer {
            status,
            headers: Vec::new(),
            body: body.into(),
            delay: Duration::ZERO,
        }
    }

    /// A chat completion answering `content`, reporting `tokens` used.
    pub(crate) fn chat(content: &str, tokens: u64) -> Self {
        Answer::new(
            200,
            json!({
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "created": 1_700_000_000,
                "model": "test-model-0125",
                "choices": [{
                    "index": 0,
                    "message": {"role": "assistant", "content": content},
                    "finish_reason": "stop",
                }],
                "usage": {"prompt_tokens": tokens / 2, "completion_tokens": tokens - tokens / 2, "total_tokens": tokens},
            })
            .to_string(),
        )
    }

    pub(crate) fn header(mut self, name: &'static str, value: &str) -> Self {
        self.headers.push((name, value.to_string()));
        self
    }

    pub(crate) fn after(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
}

/// One request the server received.
#[derive(Debug, Clone)]
pub(crate) struct Received {
    pub(crate) path: String,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: String,
    at: Instant,
}

impl Received {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub(crate) fn json(&self) -> Value {
        serde_json::from_str(&self.body).expect("the request body is JSON")
    }
}

#[derive(Debug, Default)]
struct Script {
    answers: VecDeque<Answer>,
    received: Vec<Received>,
}

/// A local OpenAI-compatible endpoint that answers from a script.
pub(crate) struct LlmServer {
    pub(crate) base_url: Url,
    script: Arc<Mutex<Script>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for LlmServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl LlmServer {
    pub(crate) async fn start() -> LlmServer {
        let script = Arc::new(Mutex::new(Script::default()));
        let app = Router::new()
            .fallback(answer)
            .with_state(Arc::clone(&script));
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("bind a loopback port");
        let addr = listener.local_addr().expect("its address");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        LlmServer {
            base_url: Url::parse(&format!("http://{addr}/v1")).expect("a URL"),
            script,
            task,
        }
    }

    pub(crate) fn script(&self, answers: impl IntoIterator<Item = Answer>) {
        self.lock().answers.extend(answers);
    }

    pub(crate) fn received(&self) -> Vec<Received> {
        self.lock().received.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Script> {
        self.script.lock().expect("the script")
    }

    /// A client of this server, configured as [`LlmServer::config`] and then by `tweak`.
    fn client(&self, dir: &tempfile::TempDir, tweak: impl FnOnce(&mut Config)) -> Client {
        let mut config = self.config(dir);
        tweak(&mut config);
        Client::new(config).expect("a client")
    }

    /// A client configuration for this server: the key from a file in `dir`, fast backoff.
    fn config(&self, dir: &tempfile::TempDir) -> Config {
        let key = dir.path().join("api-key");
        std::fs::write(&key, format!("{KEY}\n")).expect("write the key file");
        let mut config = Config::new(self.base_url.clone(), "test-model");
        config.api_key = Some(ApiKeySource::File(key));
        config.timeout = Duration::from_secs(5);
        config.backoff = Backoff {
            base: Duration::from_millis(20),
            max: Duration::from_millis(100),
        };
        config
    }
}

async fn answer(
    State(script): State<Arc<Mutex<Script>>>,
    request: axum::extract::Request,
) -> Response {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, 1 << 20)
        .await
        .unwrap_or_default();
    let scripted = {
        let mut script = script.lock().expect("the script");
        script.received.push(Received {
            path: parts.uri.path().to_string(),
            headers: parts
                .headers
                .iter()
                .map(|(n, v)| {
                    (
                        n.as_str().to_string(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect(),
            body: String::from_utf8_lossy(&body).into_owned(),
            at: Instant::now(),
        });
        script.answers.pop_front()
    };
    let scripted = scripted.unwrap_or_else(|| Answer::new(599, "no scripted answer left"));
    tokio::time::sleep(scripted.delay).await;
    let mut response = (
        StatusCode::from_u16(scripted.status).expect("a status"),
        scripted.body,
    )
        .into_response();
    response.headers_mut().insert(
        "content-type",
        "application/json".parse().expect("a header"),
    );
    for (name, value) in scripted.headers {
        response
            .headers_mut()
            .insert(name, value.parse().expect("a header"));
    }
    response
}

fn question() -> Chat {
    Chat {
        messages: vec![
            Message::system("You rank root causes. Answer in JSON."),
            Message::user("Pod api-1 restarted 5 times in 10 minutes (OOMKilled)."),
        ],
        ..Chat::default()
    }
}

fn keyed(key: &str) -> Chat {
    Chat {
        cache_key: Some(key.to_string()),
        ..question()
    }
}

/// Asserts that nothing the server received, and nothing in `texts`, carries the key outside
/// the `Authorization` header.
pub(crate) fn assert_key_only_in_authorization(server: &LlmServer, texts: &[String]) {
    for request in server.received() {
        assert!(
            !request.body.contains(KEY),
            "key in a body: {}",
            request.body
        );
        for (name, value) in &request.headers {
            if name == "authorization" {
                assert_eq!(value, &format!("Bearer {KEY}"));
            } else {
                assert!(!value.contains(KEY), "key in header {name}");
            }
        }
        assert!(!request.path.contains(KEY), "key in the path");
    }
    for text in texts {
        assert!(!text.contains(KEY), "key in {text}");
    }
}

#[tokio::test]
async fn a_good_answer_is_returned_from_an_openai_shaped_request() {
    let server = LlmServer::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let client = server.client(&dir, |_| {});
    server.script([Answer::chat(r#"{"rootCause": "s1"}"#, 420)]);
    let schema = json!({"type": "object", "properties": {"rootCause": {"type": "string"}}, "required": ["rootCause"]});
    let chat = Chat {
        response_format: Some(JsonSchemaFormat {
            name: "advice".into(),
            schema: schema.clone(),
            strict: true,
        }),
        ..question()
    };

    let completion = client.chat(&chat).await.expect("an answer");

    assert_eq!(completion.content, r#"{"rootCause": "s1"}"#);
    assert_eq!(completion.model, "test-model-0125");
    assert_eq!(completion.finish_reason.as_deref(), Some("stop"));
    assert_eq!(
        (completion.tokens, completion.tokens_estimated),
        (420, false)
    );
    assert_eq!((completion.attempts, completion.cached), (1, false));
    let received = server.received();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].path, "/v1/chat/completions");
    assert_eq!(received[0].header("content-type"), Some("application/json"));
    assert_eq!(
        received[0].json(),
        json!({
            "model": "test-model",
            "messages": [
                {"role": "system", "content": "You rank root causes. Answer in JSON."},
                {"role": "user", "content": "Pod api-1 restarted 5 times in 10 minutes (OOMKilled)."},
            ],
            "temperature": 0.0,
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "advice", "schema": schema, "strict": true},
            },
        })
    );
    assert_eq!(client.usage(), (1, 420));
    assert_key_only_in_authorization(&server, &[format!("{completion:?}")]);
}

#[tokio::test]
async fn a_429_is_retried_after_the_wait_the_endpoint_asks_for() {
    let server = LlmServer::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let client = server.client(&dir, |_| {});
    server.script([
        Answer::new(429, r#"{"error": {"message": "slow down"}}"#).header("retry-after", "1"),
        Answer::chat("ok", 10),
    ]);

    let completion = client.chat(&question()).await.expect("an answer");

    assert_eq!(
        (completion.content.as_str(), completion.attempts),
        ("ok", 2)
    );
    let received = server.received();
    assert_eq!(received.len(), 2);
    let waited = received[1].at - received[0].at;
    assert!(
        waited >= Duration::from_secs(1),
        "Retry-After: 1 not honoured: {waited:?}"
    );
    assert_eq!(received[0].body, received[1].body, "the same request again");
    assert_eq!(client.usage(), (1, 10), "one call, whatever its retries");
}

#[tokio::test]
async fn a_retry_after_past_the_deadline_is_not_waited_for() {
    let server = LlmServer::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let client = server.client(&dir, |config| {
        config.timeout = Duration::from_secs(2);
    });
    server.script([Answer::new(429, "{}").header("retry-after", "30")]);

    let started = Instant::now();
    let error = client.chat(&question()).await.expect_err("rate limited");

    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(error.to_string(), "rate limited (429) after 1 attempt");
    assert_eq!(server.received().len(), 1);
}

#[tokio::test]
async fn server_errors_exhaust_the_retries() {
    let server = LlmServer::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let client = server.client(&dir, |_| {});
    server.script([
        Answer::new(500, r#"{"error": {"message": "upstream crashed"}}"#),
        Answer::new(503, "overloaded"),
        Answer::new(502, r#"{"error": {"message": "bad gateway"}}"#),
        Answer::chat("never reached", 1),
    ]);

    let error = client.chat(&question()).await.expect_err("5xx every time");

    assert!(
        matches!(
            error,
            Error::Server {
                status: 502,
                attempts: 3,
                ..
            }
        ),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        "server error (502) after 3 attempts: bad gateway"
    );
    assert_eq!(server.received().len(), 3, "1 attempt + 2 retries");
}

#[tokio::test]
async fn a_slow_answer_times_out_within_the_timeout() {
    let server = LlmServer::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let client = server.client(&dir, |config| {
        config.timeout = Duration::from_millis(300);
    });
    server.script([Answer::chat("too late", 1).after(Duration::from_secs(3))]);

    let started = Instant::now();
    let error = client.chat(&question()).await.expect_err("too slow");

    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_millis(1500),
        "{took:?}"
    );
    assert!(matches!(error, Error::TimedOut { .. }), "{error:?}");
    assert_eq!(error.to_string(), "timed out after 300ms");
    assert_eq!(server.received().len(), 1, "no time left to retry");
}

#[tokio::test]
async fn a_400_is_final_at_once() {
    let server = LlmServer::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let client = server.client(&dir, |_| {});
    server.script([
        Answer::new(
            400,
            r#"{"error": {"message": "response_format json_schema is not supported", "type": "invalid_request_error"}}"#,
        ),
        Answer::chat("never reached", 1),
    ]);

    let error = client.chat(&question()).await.expect_err("refused");

    assert_eq!(
        error.to_string(),
        "the endpoint refused the request (400): response_format json_schema is not supported"
    );
    assert_eq!(server.received().len(), 1, "a 400 is not retried");
    assert_eq!(
        client.breaker(),
        breaker::State::Closed { failures: 0 },
        "an endpoint that answers is up"
    );
}

#[tokio::test]
async fn the_breaker_opens_after_failures_and_recovers_after_reset() {
    let server = LlmServer::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let client = server.client(&dir, |config| {
        config.retries = 0;
        config.breaker.failures = 3;
        config.breaker.reset = Duration::from_millis(200);
    });
    server.script([
        Answer::new(500, "down"),
        Answer::new(200, "not json"),
        Answer::new(503, "down"),
    ]);

    for _ in 0..3 {
        let error = client.chat(&question()).await.expect_err("failing");
        assert!(error.is_endpoint_failure(), "{error:?}");
    }
    // Open: refused locally, the server sees nothing.
    let error = client.chat(&question()).await.expect_err("open");
    assert!(
        matches!(error, Error::CircuitOpen { failures: 3, .. }),
        "{error:?}"
    );
    assert!(
        error.to_string().starts_with("circuit open until ")
            && error.to_string().ends_with(" after 3 consecutive failures"),
        "{error}"
    );
    assert!(error.is_local_refusal());
    assert_eq!(server.received().len(), 3);

    // After `reset`, one trial goes through; its success closes the breaker.
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(client.breaker(), breaker::State::HalfOpen { trial: false });
    server.script([Answer::chat("back", 5), Answer::chat("again", 5)]);
    assert_eq!(
        client.chat(&question()).await.expect("the trial").content,
        "back"
    );
    assert_eq!(client.breaker(), breaker::State::Closed { failures: 0 });
    assert_eq!(
        client.chat(&question()).await.expect("closed").content,
        "again"
    );
    assert_eq!(server.received().len(), 5);
}

#[tokio::test]
async fn a_failed_trial_opens_the_breaker_again() {
    let server = LlmServer::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let client = server.client(&dir, |config| {
        config.retries = 0;
        config.breaker.failures = 1;
        config.breaker.reset = Duration::from_millis(150);
    });
    server.script([Answer::new(500, "down"), Answer::new(500, "still down")]);

    client.chat(&question()).await.expect_err("fails, opens");
    tokio::time::sleep(Duration::from_millis(200)).await;
    client.chat(&question()).await.expect_err("the trial fails");
    let error = client.chat(&question()).await.expect_err("open again");
    assert!(matches!(error, Error::CircuitOpen { .. }), "{error:?}");
    assert_eq!(server.received().len(), 2);
}

/// A caller that gives up on the half-open breaker's trial call (its own deadline, a
/// shutdown) must not leave the breaker waiting for a trial that never ends.
#[tokio::test]
async fn a_cancelled_trial_frees_the_half_open_slot() {
    let server = LlmServer::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let client = server.client(&dir, |config| {
        config.retries = 0;
        config.breaker.failures = 1;
        config.breaker.reset = Duration::from_millis(100);
    });
    server.script([
        Answer::new(500, "down"),
        Answer::chat("slow", 1).after(Duration::from_secs(2)),
        Answer::chat("back", 1),
    ]);

    client.chat(&question()).await.expect_err("fails, opens");
    tokio::time::sleep(Duration::from_millis(150)).await;
    let abandoned =
        tokio::time::timeout(Duration::from_millis(100), client.chat(&question())).await;
    assert!(abandoned.is_err(), "the caller gave up first");
    assert_eq!(client.breaker(), breaker::State::HalfOpen { trial: false });
    assert_eq!(
        client.chat(&question()).await.expect("a new trial").content,
        "back"
    );
    assert_eq!(server.received().len(), 3);
}

#[tokio::test]
async fn an_exhausted_budget_refuses_locally() {
    let server = LlmServer::start().await;
    let dir = tempfile::tempdir().expect("tempdir");

    // Calls.
    let client = server.client(&dir, |config| {
        config.budget.calls_per_hour = 2;
    });
    server.script([
        Answer::chat("1", 10),
        Answer::chat("2", 10),
        Answer::chat("3", 10),
    ]);
    client.chat(&question()).await.expect("first");
    client.chat(&question()).await.expect("second");
    let error = client.chat(&question()).await.expect_err("over budget");
    assert!(
        error
            .to_string()
            .starts_with("over the hourly budget of 2 calls (the next call fits in "),
        "{error}"
    );
    assert_eq!(server.received().len(), 2, "the third call was not sent");

    // Tokens: the first answer reports more than the hour allows.
    let server = LlmServer::start().await;
    let client = server.client(&dir, |config| {
        config.budget.tokens_per_hour = 1000;
    });
    server.script([Answer::chat("long", 990), Answer::chat("never", 1)]);
    client.chat(&question()).await.expect("first");
    let error = client.chat(&question()).await.expect_err("over budget");
    assert!(
        matches!(
            error,
            Error::OverTokenBudget {
                limit: 1000,
                used: 990,
                ..
            }
        ),
        "{error:?}"
    );
    assert!(
        error
            .to_string()
            .starts_with("over the hourly budget of 1000 tokens (990 used"),
        "{error}"
    );
    assert_eq!(server.received().len(), 1);
    assert_eq!(
        client.breaker(),
        breaker::State::Closed { failures: 0 },
        "a local refusal says nothing about the endpoint"
    );
}

#[tokio::test]
async fn a_cached_answer_sends_no_request() {
    let server = LlmServer::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let client = server.client(&dir, |config| {
        config.cache.ttl = Duration::from_millis(300);
    });
    server.script([
        Answer::chat("first", 10),
        Answer::chat("other incident", 10),
        Answer::chat("not cached", 10),
    ]);

    let first = client
        .chat(&keyed("incident-1/evidence-a"))
        .await
        .expect("asked");
    let again = client
        .chat(&keyed("incident-1/evidence-a"))
        .await
        .expect("cached");
    assert_eq!(server.received().len(), 1, "the same key asks once");
    assert_eq!(
        (again.content.as_str(), again.cached, again.attempts),
        ("first", true, 0)
    );
    assert!(!first.cached);
    assert_eq!(client.usage(), (1, 10), "a cached answer costs nothing");

    let other = client
        .chat(&keyed("incident-1/evidence-b"))
        .await
        .expect("asked");
    assert_eq!(other.content, "other incident", "new evidence asks again");
    let uncached = client.chat(&question()).await.expect("asked");
    assert_eq!(uncached.content, "not cached", "no key, no cache");
    assert_eq!(server.received().len(), 3);

    tokio::time::sleep(Duration::from_millis(350)).await;
    server.script([Answer::chat("after the ttl", 10)]);
    let expired = client
        .chat(&keyed("incident-1/evidence-a"))
        .await
        .expect("asked again");
    assert_eq!(
        (expired.content.as_str(), expired.cached),
        ("after the ttl", false)
    );
    assert_eq!(server.received().len(), 4);
}

#[tokio::test]
async fn the_api_key_is_sent_only_in_the_authorization_header() {
    let server = LlmServer::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = server.config(&dir);
    config.embeddings = Some(EmbeddingsConfig {
        model: "test-embed".into(),
    });
    let client = Client::new(config).expect("a client");
    // An endpoint (or a proxy) that quotes the key back in its error pages.
    server.script([
        Answer::chat("fine", 5),
        Answer::new(
            401,
            format!(r#"{{"error": {{"message": "invalid key {KEY}"}}}}"#),
        ),
        Answer::new(500, format!("upstream rejected Bearer {KEY}")),
        Answer::new(500, format!("upstream rejected Bearer {KEY}")),
        Answer::new(500, format!("upstream rejected Bearer {KEY}")),
        Answer::new(
            200,
            json!({"data": [{"index": 0, "embedding": [0.5]}]}).to_string(),
        ),
    ]);

    let ok = client.chat(&question()).await.expect("an answer");
    let refused = client.chat(&question()).await.expect_err("401");
    let failed = client.chat(&question()).await.expect_err("500s");
    let embedded = client
        .embed(&["text".to_string()])
        .await
        .expect("embeddings");

    assert_eq!(
        refused.to_string(),
        "the endpoint refused the request (401): invalid key <redacted>"
    );
    assert_eq!(
        failed.to_string(),
        "server error (500) after 3 attempts: upstream rejected Bearer <redacted>"
    );
    assert_eq!(server.received().len(), 6);
    assert_key_only_in_authorization(
        &server,
        &[
            format!("{ok:?}"),
            format!("{refused} {refused:?}"),
            format!("{failed} {failed:?}"),
            format!("{embedded:?}"),
            format!("{client:?}"),
        ],
    );
    assert!(
        format!("{client:?}").contains("api-key"),
        "Debug names the key's file"
    );
}

#[tokio::test]
async fn no_key_configured_sends_no_authorization() {
    let server = LlmServer::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let client = server.client(&dir, |config| {
        config.api_key = None;
    });
    server.script([Answer::chat("local model", 3)]);
    client.chat(&question()).await.expect("an answer");
    assert_eq!(server.received()[0].header("authorization"), None);
}

#[tokio::test]
async fn an_unreadable_key_refuses_locally_and_is_read_at_each_call() {
    let server = LlmServer::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = server.config(&dir);
    let path = dir.path().join("rotated");
    config.api_key = Some(ApiKeySource::File(path.clone()));
    let client = Client::new(config).expect("a client");

    let error = client.chat(&question()).await.expect_err("no key yet");
    assert!(matches!(error, Error::ApiKey(_)), "{error:?}");
    assert!(
        salve::diagnostic::chain(&error).contains("cannot read the API key file"),
        "{error}"
    );
    assert_eq!(server.received().len(), 0);

    // The Secret is mounted (or rotated): the next call reads it.
    std::fs::write(&path, "sk-rotated-1\n").expect("write the key");
    server.script([Answer::chat("ok", 1)]);
    client.chat(&question()).await.expect("an answer");
    assert_eq!(
        server.received()[0].header("authorization"),
        Some("Bearer sk-rotated-1")
    );
}

#[tokio::test]
async fn embeddings_come_back_in_the_inputs_order() {
    let server = LlmServer::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = server.config(&dir);
    config.embeddings = Some(EmbeddingsConfig {
        model: "test-embed".into(),
    });
    let client = Client::new(config).expect("a client");
    server.script([Answer::new(
        200,
        json!({
            "object": "list",
            "model": "test-embed",
            "data": [
                {"object": "embedding", "index": 1, "embedding": [0.0, 1.0]},
                {"object": "embedding", "index": 0, "embedding": [1.0, 0.0]},
            ],
            "usage": {"prompt_tokens": 9, "total_tokens": 9},
        })
        .to_string(),
    )]);
    let inputs = [
        "pod keeps restarting due to memory pressure".to_string(),
        "OOMKill loop on payment-service".to_string(),
    ];

    let embeddings = client.embed(&inputs).await.expect("embeddings");

    assert_eq!(embeddings.vectors, vec![vec![1.0, 0.0], vec![0.0, 1.0]]);
    assert_eq!((embeddings.tokens, embeddings.tokens_estimated), (9, false));
    let received = server.received();
    assert_eq!(received[0].path, "/v1/embeddings");
    assert_eq!(
        received[0].json(),
        json!({"model": "test-embed", "input": inputs})
    );

    let no_model = server.client(&dir, |_| {});
    let error = no_model
        .embed(&inputs)
        .await
        .expect_err("no embeddings model");
    assert_eq!(error.to_string(), "no embeddings model is configured");
    assert_eq!(server.received().len(), 1);
}

#[tokio::test]
async fn a_malformed_answer_is_an_error_and_not_retried() {
    let server = LlmServer::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let client = server.client(&dir, |_| {});
    server.script([
        Answer::new(200, "<html>gateway login</html>"),
        Answer::new(200, json!({"choices": []}).to_string()),
        Answer::new(
            200,
            json!({"choices": [{"message": {"content": "no usage"}}]}).to_string(),
        ),
    ]);

    let error = client.chat(&question()).await.expect_err("html");
    assert!(
        error
            .to_string()
            .starts_with("malformed answer: not a chat completion"),
        "{error}"
    );
    let error = client.chat(&question()).await.expect_err("no choices");
    assert_eq!(
        error.to_string(),
        "malformed answer: a chat completion without choices"
    );
    assert_eq!(
        server.received().len(),
        2,
        "a malformed answer is not asked again"
    );
    assert_eq!(client.breaker(), breaker::State::Closed { failures: 2 });

    // An answer without usage counts an estimate: a token per 4 bytes of prompt and answer.
    let completion = client.chat(&question()).await.expect("an answer");
    assert!(completion.tokens_estimated);
    let prompt = "You rank root causes. Answer in JSON.".len().div_ceil(4)
        + "Pod api-1 restarted 5 times in 10 minutes (OOMKilled)."
            .len()
            .div_ceil(4);
    assert_eq!(
        completion.tokens,
        (prompt + "no usage".len().div_ceil(4)) as u64
    );
    assert_eq!(
        completion.model, "test-model",
        "the configured model when none is named"
    );
    let (calls, spent) = client.usage();
    assert_eq!(calls, 3, "malformed answers count as calls");
    assert_eq!(
        spent,
        2 * prompt as u64 + completion.tokens,
        "a malformed answer keeps its prompt's estimate; an answer without usage counts its \
         whole estimate"
    );
}

#[tokio::test]
async fn an_unreachable_endpoint_is_retried_then_an_error() {
    // A port that was just free: nothing listens there.
    let port = std::net::TcpListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let mut config = Config::new(
        Url::parse(&format!("http://127.0.0.1:{port}/v1")).expect("a URL"),
        "test-model",
    );
    config.retries = 1;
    config.backoff = Backoff {
        base: Duration::from_millis(10),
        max: Duration::from_millis(20),
    };
    let client = Client::new(config).expect("a client");

    let error = client.chat(&question()).await.expect_err("nobody there");

    assert!(
        matches!(error, Error::Unreachable { attempts: 2, .. }),
        "{error:?}"
    );
    assert!(
        error.to_string().starts_with(&format!(
            "cannot reach http://127.0.0.1:{port}/v1/chat/completions after 2 attempts: "
        )),
        "{error}"
    );
    assert_eq!(client.breaker(), breaker::State::Closed { failures: 1 });
}

/// `SALVE_TEST_LLM_URL`, `SALVE_TEST_LLM_MODEL`, `SALVE_TEST_LLM_KEY`: a real endpoint.
#[tokio::test]
async fn a_real_endpoint_answers() {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let (Some(url), Some(model)) = (var("SALVE_TEST_LLM_URL"), var("SALVE_TEST_LLM_MODEL")) else {
        eprintln!(
            "skipped: set SALVE_TEST_LLM_URL and SALVE_TEST_LLM_MODEL (and SALVE_TEST_LLM_KEY) \
             to run the advisor client against a real endpoint"
        );
        return;
    };
    let mut config = Config::new(
        Url::parse(&url).expect("SALVE_TEST_LLM_URL is a URL"),
        model,
    );
    if var("SALVE_TEST_LLM_KEY").is_some() {
        config.api_key = Some(ApiKeySource::Env("SALVE_TEST_LLM_KEY".into()));
    }
    config.timeout = Duration::from_secs(60);
    config.embeddings =
        var("SALVE_TEST_LLM_EMBEDDINGS_MODEL").map(|model| EmbeddingsConfig { model });
    let client = Client::new(config).expect("a client");
    let chat = Chat {
        messages: vec![
            Message::system("Answer with a JSON object only."),
            Message::user(r#"Reply with {"status": "ok"}."#),
        ],
        cache_key: Some("real-endpoint".into()),
        ..Chat::default()
    };

    let completion = client.chat(&chat).await.expect("the endpoint answers");

    eprintln!(
        "{} answered in {} tokens: {}",
        completion.model, completion.tokens, completion.content
    );
    assert!(!completion.content.trim().is_empty());
    assert!(completion.tokens > 0);
    let cached = client.chat(&chat).await.expect("cached");
    assert!(cached.cached);
    if client.config().embeddings.is_some() {
        let embeddings = client
            .embed(&["OOMKill loop on payment-service".into()])
            .await
            .expect("embeddings");
        assert_eq!(embeddings.vectors.len(), 1);
        assert!(!embeddings.vectors[0].is_empty());
    }
}

/// `salve validate` reports the `advisor:` block's problems at their place and never prints a
/// key written into the policy.
#[test]
fn salve_validate_reports_advisor_errors_at_their_place() {
    let dir = tempfile::tempdir().expect("tempdir");
    let policy = dir.path().join("policy.yaml");
    std::fs::write(
        &policy,
        concat!(
            "apiVersion: salve.dev/v1\n",
            "kind: AutonomyPolicy\n",
            "metadata: {name: with-advisor}\n",
            "spec:\n",
            "  maxAutonomousRisk: low\n",
            "  advisor:\n",
            "    baseUrl: https://api.openai.com/v1\n",
            "    model: gpt-4o-mini\n",
            "    apiKey: sk-proj-5ecret5ecret\n",
            "    budget: {callsPerHour: 0}\n",
        ),
    )
    .expect("write the policy");

    let (code, stdout, stderr) = super::run(
        std::process::Command::new(env!("CARGO_BIN_EXE_salve"))
            .args(["validate", policy.to_str().expect("a UTF-8 path")]),
    );

    let text = format!("{stdout}{stderr}");
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("policy.yaml:9:13: error: spec.advisor.apiKey: the API key itself must not be written in a policy"),
        "{text}"
    );
    assert!(
        text.contains(
            "policy.yaml:10:28: error: spec.advisor.budget.callsPerHour: 0 would refuse every call"
        ),
        "{text}"
    );
    assert!(!text.contains("5ecret"), "{text}");
}
