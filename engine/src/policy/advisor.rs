//! Compiles a policy's `advisor:` block into the advisor's [`Config`], reporting every problem
//! at its place. The block is checked even when `enabled: false`, so turning it on later does
//! not bring surprises.

use std::net::IpAddr;
use std::path::Path;

use reqwest::Url;

use super::spec::{self, ApiKey};
use crate::advisor::backoff::Backoff;
use crate::advisor::config::{
    BreakerSettings, BudgetLimits, CacheSettings, Config, EmbeddingsConfig, defaults,
};
use crate::advisor::key::ApiKeySource;
use crate::advisor::redact::{self, Pattern, Redactor};
use crate::check::Checker;

/// Compiles `advisor` (the policy's block, if any). `None` when it is absent or disabled, or
/// has an error (reported to `checker`).
pub fn compile(advisor: Option<&spec::Advisor>, checker: &mut Checker<'_>) -> Option<Config> {
    let advisor = advisor?;
    let base_url = base_url(checker, &advisor.base_url);
    if advisor.model.trim().is_empty() {
        let d = checker
            .at("/spec/advisor/model", "the model name is empty")
            .expected("the model the endpoint serves, such as gpt-4o-mini or qwen2.5:7b");
        checker.push(d);
    }
    let api_key = advisor
        .api_key
        .as_ref()
        .and_then(|key| api_key(checker, key));
    if let (Some(url), Some(_)) = (&base_url, &api_key)
        && url.scheme() == "http"
        && !is_loopback(url)
    {
        let d = checker
            .at(
                "/spec/advisor/baseUrl",
                "the API key would cross the network unencrypted (http to a host that is not this machine)",
            )
            .expected("an https URL, or http only to a loopback address or a sidecar")
            .warning();
        checker.push(d);
    }

    let timeout = checker.duration_or(
        "/spec/advisor/timeout",
        advisor.timeout.as_ref(),
        defaults::TIMEOUT,
        true,
    );
    let budget = advisor.budget.as_ref();
    let budget = BudgetLimits {
        calls_per_hour: budget
            .and_then(|b| b.calls_per_hour)
            .unwrap_or(defaults::CALLS_PER_HOUR),
        tokens_per_hour: budget
            .and_then(|b| b.tokens_per_hour)
            .unwrap_or(defaults::TOKENS_PER_HOUR),
    };
    let breaker = advisor.circuit_breaker.as_ref();
    let breaker = BreakerSettings {
        failures: breaker
            .and_then(|b| b.failures)
            .unwrap_or(defaults::BREAKER_FAILURES),
        reset: checker.duration_or(
            "/spec/advisor/circuitBreaker/reset",
            breaker.and_then(|b| b.reset.as_ref()),
            defaults::BREAKER_RESET,
            true,
        ),
    };
    for (pointer, is_zero) in [
        (
            "/spec/advisor/budget/callsPerHour",
            budget.calls_per_hour == 0,
        ),
        (
            "/spec/advisor/budget/tokensPerHour",
            budget.tokens_per_hour == 0,
        ),
        (
            "/spec/advisor/circuitBreaker/failures",
            breaker.failures == 0,
        ),
    ] {
        if is_zero {
            let d = checker
                .at(pointer, "0 would refuse every call")
                .expected("at least 1 (set `enabled: false` to turn the advisor off)");
            checker.push(d);
        }
    }
    let embeddings = advisor.embeddings.as_ref().map(|e| {
        if e.model.trim().is_empty() {
            let d = checker
                .at("/spec/advisor/embeddings/model", "the model name is empty")
                .expected(
                    "the embeddings model the endpoint serves, such as text-embedding-3-small",
                );
            checker.push(d);
        }
        EmbeddingsConfig {
            model: e.model.clone(),
        }
    });
    let cache = advisor.cache.as_ref();
    let cache = CacheSettings {
        ttl: checker.duration_or(
            "/spec/advisor/cache/ttl",
            cache.and_then(|c| c.ttl.as_ref()),
            defaults::CACHE_TTL,
            false,
        ),
        entries: cache
            .and_then(|c| c.entries)
            .map_or(defaults::CACHE_ENTRIES, |n| n as usize),
    };

    let redact = redact_patterns(checker, &advisor.redact);

    if checker.has_errors() || advisor.enabled == Some(false) {
        return None;
    }
    Some(Config {
        base_url: base_url?,
        model: advisor.model.clone(),
        api_key,
        timeout,
        retries: advisor.retries.unwrap_or(defaults::RETRIES),
        backoff: Backoff::default(),
        budget,
        breaker,
        embeddings,
        cache,
        redact,
    })
}

/// The policy's `redact:` patterns, each compiled or reported at its place. A message never
/// quotes the pattern: it may be a literal secret.
fn redact_patterns(checker: &mut Checker<'_>, patterns: &[String]) -> Redactor {
    let mut compiled = Vec::with_capacity(patterns.len());
    for (i, source) in patterns.iter().enumerate() {
        match Pattern::new(source) {
            Ok(pattern) => compiled.push(pattern),
            Err(e) => {
                let expected = match e {
                    redact::Error::TooLong { .. } => format!(
                        "at most {} bytes: match the secret's shape, not a list of values",
                        redact::MAX_PATTERN_BYTES
                    ),
                    redact::Error::Invalid { .. } => {
                        "a regular expression in the Rust `regex` syntax, such as `cust-\\d{6}`"
                            .to_string()
                    }
                    redact::Error::MatchesEmpty => {
                        "a pattern that needs at least one character, such as `\\d+` rather than `\\d*`"
                            .to_string()
                    }
                };
                let d = checker
                    .at(&format!("/spec/advisor/redact/{i}"), e.to_string())
                    .expected(expected);
                checker.push(d);
            }
        }
    }
    Redactor::new(compiled)
}

fn base_url(checker: &mut Checker<'_>, text: &str) -> Option<Url> {
    const POINTER: &str = "/spec/advisor/baseUrl";
    const EXPECTED: &str = "an http or https URL such as https://api.openai.com/v1";
    // The URL is not quoted back: a mistyped one may hold a credential.
    let url = match Url::parse(text.trim()) {
        Ok(url) => url,
        Err(e) => {
            let d = checker
                .at(POINTER, format!("not a URL: {e}"))
                .expected(EXPECTED);
            checker.push(d);
            return None;
        }
    };
    let problem = if !matches!(url.scheme(), "http" | "https") {
        Some(format!("`{}:` URLs are not supported", url.scheme()))
    } else if !url.username().is_empty() || url.password().is_some() {
        Some("credentials in the URL would be logged and stored: put the key in `apiKey`".into())
    } else if url.query().is_some() || url.fragment().is_some() {
        Some("a base URL takes no query (`?`) or fragment (`#`)".into())
    } else {
        None
    };
    if let Some(problem) = problem {
        let d = checker.at(POINTER, problem).expected(EXPECTED);
        checker.push(d);
        return None;
    }
    Some(url)
}

fn is_loopback(url: &Url) -> bool {
    match url.host_str() {
        Some("localhost") => true,
        Some(host) => host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback()),
        None => false,
    }
}

fn api_key(checker: &mut Checker<'_>, key: &ApiKey) -> Option<ApiKeySource> {
    const POINTER: &str = "/spec/advisor/apiKey";
    const EXPECTED: &str = "`{file: /path/to/key}` (a mounted Secret) or `{env: VARIABLE}`";
    let from = match key {
        // Never quoted back, in any message.
        ApiKey::Literal(_) => {
            let d = checker
                .at(
                    POINTER,
                    "the API key itself must not be written in a policy: it would be kept in Git \
                     and shown wherever the policy is",
                )
                .expected(EXPECTED);
            checker.push(d);
            return None;
        }
        ApiKey::From(from) => from,
    };
    match (&from.file, &from.env) {
        (Some(file), None) => {
            if file.trim().is_empty() {
                checker.error(&format!("{POINTER}/file"), "the file name is empty");
                return None;
            }
            let base = checker.file().parent().unwrap_or(Path::new("."));
            Some(ApiKeySource::File(base.join(file)))
        }
        (None, Some(env)) => {
            if !is_env_name(env) {
                // Not quoted back: a key pasted here by mistake must not reach the output.
                let d = checker
                    .at(
                        &format!("{POINTER}/env"),
                        "not an environment variable name",
                    )
                    .expected("letters, digits and `_`, not starting with a digit");
                checker.push(d);
                return None;
            }
            Some(ApiKeySource::Env(env.clone()))
        }
        (Some(_), Some(_)) => {
            let d = checker
                .at(POINTER, "both `file` and `env`: which one holds the key?")
                .expected(EXPECTED);
            checker.push(d);
            None
        }
        (None, None) => {
            let d = checker
                .at(POINTER, "names neither a `file` nor an `env` variable")
                .expected(EXPECTED);
            checker.push(d);
            None
        }
    }
}

fn is_env_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};
    use std::time::Duration;

    use crate::advisor::key::ApiKeySource;
    use crate::diagnostic::{Diagnostic, Severity};
    use crate::playbook::load::{Loaded, load_text};
    use crate::policy::Policy;

    const HEAD: &str = "apiVersion: salve.dev/v1\nkind: AutonomyPolicy\nmetadata: {name: p}\nspec:\n  maxAutonomousRisk: low\n";

    /// Loads a policy whose spec ends with `advisor` (lines from line 6).
    fn load(advisor: &str) -> (Option<Policy>, Vec<Diagnostic>) {
        let mut loaded = Loaded::default();
        load_text(
            Path::new("policies/p.yaml"),
            &format!("{HEAD}{advisor}"),
            &mut loaded,
        );
        let policy = loaded.policies.first().map(|p| (**p).clone());
        (policy, loaded.diagnostics)
    }

    fn errors(diagnostics: &[Diagnostic]) -> Vec<(u32, u32, String)> {
        diagnostics
            .iter()
            .filter(|d| d.is_error())
            .map(|d| (d.pos.line, d.pos.column, d.message.clone()))
            .collect()
    }

    #[test]
    fn absent_or_disabled_means_off() {
        let (policy, diagnostics) = load("");
        assert!(diagnostics.is_empty(), "{diagnostics:#?}");
        assert_eq!(policy.expect("loads").advisor, None);
        let (policy, diagnostics) = load(
            "  advisor: {enabled: false, baseUrl: 'https://api.openai.com/v1', model: gpt-4o-mini}\n",
        );
        assert!(diagnostics.is_empty(), "{diagnostics:#?}");
        assert_eq!(policy.expect("loads").advisor, None);
    }

    #[test]
    fn a_minimal_block_gets_every_default() {
        let (policy, diagnostics) = load(
            "  advisor:\n    baseUrl: https://api.openai.com/v1/\n    model: gpt-4o-mini\n    apiKey: {file: secrets/openai}\n",
        );
        assert!(diagnostics.is_empty(), "{diagnostics:#?}");
        let config = policy.expect("loads").advisor.expect("on");
        assert_eq!(
            config.endpoint("chat/completions").as_str(),
            "https://api.openai.com/v1/chat/completions"
        );
        assert_eq!(config.model, "gpt-4o-mini");
        assert_eq!(
            config.api_key,
            Some(ApiKeySource::File(PathBuf::from("policies/secrets/openai"))),
            "relative to the policy's directory"
        );
        assert_eq!(config.timeout, Duration::from_secs(20));
        assert_eq!(config.retries, 2);
        assert_eq!(
            (config.budget.calls_per_hour, config.budget.tokens_per_hour),
            (60, 200_000)
        );
        assert_eq!(
            (config.breaker.failures, config.breaker.reset),
            (3, Duration::from_secs(300))
        );
        assert_eq!(
            (config.cache.ttl, config.cache.entries),
            (Duration::from_secs(3600), 1000)
        );
        assert_eq!(config.embeddings, None);
    }

    #[test]
    fn every_setting_is_read() {
        let (policy, diagnostics) = load(concat!(
            "  advisor:\n",
            "    enabled: true\n",
            "    baseUrl: http://127.0.0.1:11434/v1\n",
            "    model: qwen2.5:7b\n",
            "    apiKey: {env: OLLAMA_KEY}\n",
            "    timeout: 5s\n",
            "    retries: 0\n",
            "    budget: {callsPerHour: 10, tokensPerHour: 5000}\n",
            "    circuitBreaker: {failures: 1, reset: 30s}\n",
            "    embeddings: {model: nomic-embed-text}\n",
            "    cache: {ttl: 0s, entries: 5}\n",
        ));
        assert!(diagnostics.is_empty(), "{diagnostics:#?}");
        let config = policy.expect("loads").advisor.expect("on");
        assert_eq!(config.api_key, Some(ApiKeySource::Env("OLLAMA_KEY".into())));
        assert_eq!(
            (config.timeout, config.retries),
            (Duration::from_secs(5), 0)
        );
        assert_eq!(
            (config.budget.calls_per_hour, config.budget.tokens_per_hour),
            (10, 5000)
        );
        assert_eq!(
            (config.breaker.failures, config.breaker.reset),
            (1, Duration::from_secs(30))
        );
        assert_eq!(
            config.embeddings.map(|e| e.model).as_deref(),
            Some("nomic-embed-text")
        );
        assert_eq!(
            (config.cache.ttl, config.cache.entries),
            (Duration::ZERO, 5)
        );
    }

    #[test]
    fn a_key_written_in_the_policy_is_refused_and_never_quoted() {
        let (policy, diagnostics) = load(
            "  advisor:\n    baseUrl: https://api.openai.com/v1\n    model: m\n    apiKey: sk-proj-abcdef123456\n",
        );
        assert!(policy.is_none());
        assert_eq!(diagnostics.len(), 1, "{diagnostics:#?}");
        let d = &diagnostics[0];
        assert_eq!((d.pos.line, d.pos.column), (9, 13));
        assert!(
            d.message
                .starts_with("the API key itself must not be written"),
            "{d}"
        );
        assert!(!format!("{d} {d:?}").contains("abcdef"), "{d:?}");
        // A numeric key too, and the message is the same.
        let (_, diagnostics) = load(
            "  advisor: {baseUrl: 'https://api.openai.com/v1', model: m, apiKey: 9876543210}\n",
        );
        assert_eq!(diagnostics.len(), 1, "{diagnostics:#?}");
        assert!(diagnostics[0].message.starts_with("the API key itself"));
        assert!(!diagnostics[0].to_string().contains("98765"));
    }

    #[test]
    fn a_typo_in_the_key_source_is_an_unknown_field_at_its_place() {
        let (_, diagnostics) = load(
            "  advisor:\n    baseUrl: https://api.openai.com/v1\n    model: m\n    apiKey: {flie: /run/key}\n",
        );
        let found: Vec<_> = diagnostics
            .iter()
            .map(|d| {
                (
                    d.pos.line,
                    d.pos.column,
                    d.message.as_str(),
                    d.help.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            found,
            [
                (9, 14, "unknown field `flie`", Some("did you mean `file`?")),
                (9, 13, "names neither a `file` nor an `env` variable", None),
            ],
            "{diagnostics:#?}"
        );
    }

    #[test]
    fn every_problem_is_reported_at_its_place_in_one_pass() {
        let (policy, diagnostics) = load(concat!(
            "  advisor:\n",                                   // 6
            "    baseUrl: ftp://example.com/v1\n",            // 7
            "    model: ''\n",                                // 8
            "    apiKey: {file: /run/key, env: KEY}\n",       // 9
            "    timeout: soon\n",                            // 10
            "    budget: {callsPerHour: 0}\n",                // 11
            "    circuitBreaker: {failures: 0, reset: 0s}\n", // 12
            "    embeddings: {model: ' '}\n",                 // 13
            "    cache: {ttl: forever}\n",                    // 14
        ));
        assert!(policy.is_none());
        let found = errors(&diagnostics);
        let at = |line: u32, text: &str| {
            assert!(
                found.iter().any(|(l, _, m)| *l == line && m.contains(text)),
                "no `{text}` at line {line}: {found:#?}"
            );
        };
        at(7, "`ftp:` URLs are not supported");
        at(8, "the model name is empty");
        at(9, "both `file` and `env`");
        at(10, "`soon` is not a duration");
        at(11, "0 would refuse every call");
        at(12, "0 would refuse every call");
        at(12, "must be longer than zero");
        at(13, "the model name is empty");
        at(14, "`forever` is not a duration");
        assert_eq!(found.len(), 9, "{found:#?}");
    }

    #[test]
    fn urls_with_credentials_or_queries_and_bad_env_names_are_refused_without_echo() {
        for (advisor, message) in [
            (
                "{baseUrl: 'https://user:hunter2@api.example.com/v1', model: m}",
                "credentials in the URL",
            ),
            (
                "{baseUrl: 'https://api.example.com/v1?key=hunter2', model: m}",
                "no query",
            ),
            (
                "{baseUrl: 'api.example.com/hunter2', model: m}",
                "not a URL",
            ),
            (
                "{baseUrl: 'https://api.example.com/v1', model: m, apiKey: {env: 'sk-hunter2'}}",
                "not an environment variable name",
            ),
            (
                "{baseUrl: 'https://api.example.com/v1', model: m, apiKey: {}}",
                "names neither a `file` nor an `env` variable",
            ),
        ] {
            let (policy, diagnostics) = load(&format!("  advisor: {advisor}\n"));
            assert!(policy.is_none(), "{advisor}");
            assert_eq!(diagnostics.len(), 1, "{diagnostics:#?}");
            let d = &diagnostics[0];
            assert!(d.message.contains(message), "{d}");
            assert!(!d.to_string().contains("hunter2"), "{d}");
        }
    }

    #[test]
    fn a_key_sent_over_plain_http_to_another_host_is_a_warning() {
        let (policy, diagnostics) = load(
            "  advisor: {baseUrl: 'http://vllm.ai.svc:8000/v1', model: m, apiKey: {env: KEY}}\n",
        );
        assert!(policy.is_some_and(|p| p.advisor.is_some()));
        assert_eq!(diagnostics.len(), 1, "{diagnostics:#?}");
        assert_eq!(diagnostics[0].severity, Severity::Warning);
        assert!(
            diagnostics[0].message.contains("unencrypted"),
            "{:?}",
            diagnostics[0]
        );
        for local in [
            "http://localhost:11434/v1",
            "http://127.0.0.1:8080",
            "http://[::1]:8000/v1",
        ] {
            let (_, diagnostics) = load(&format!(
                "  advisor: {{baseUrl: '{local}', model: m, apiKey: {{env: KEY}}}}\n"
            ));
            assert!(diagnostics.is_empty(), "{local}: {diagnostics:#?}");
        }
        let (_, diagnostics) = load("  advisor: {baseUrl: 'http://ollama:11434/v1', model: m}\n");
        assert!(
            diagnostics.is_empty(),
            "no key, nothing to leak: {diagnostics:#?}"
        );
    }

    #[test]
    fn redact_patterns_are_compiled_in_order_and_carried_into_the_config() {
        let (policy, diagnostics) = load(concat!(
            "  advisor:\n",
            "    baseUrl: https://api.openai.com/v1\n",
            "    model: m\n",
            "    redact:\n",
            "      - 'cust-\\d{6}'\n",
            "      - '(?i)project apollo'\n",
        ));
        assert!(diagnostics.is_empty(), "{diagnostics:#?}");
        let config = policy.expect("loads").advisor.expect("on");
        assert_eq!(config.redact.policy_patterns().len(), 2);
        assert_eq!(
            config
                .redact
                .redact("cust-123456 on Project Apollo, bob@example.com"),
            "[REDACTED:policy-1] on [REDACTED:policy-2], [REDACTED:email]"
        );
        let (policy, _) = load("  advisor: {baseUrl: 'https://api.openai.com/v1', model: m}\n");
        let config = policy.expect("loads").advisor.expect("on");
        assert!(config.redact.policy_patterns().is_empty(), "built-ins only");
    }

    #[test]
    fn bad_redact_patterns_are_reported_at_their_line_without_quoting_them() {
        let long = format!("      - '{}'\n", "hunter2|".repeat(200));
        let (policy, diagnostics) = load(&format!(
            "{}{}{}",
            concat!(
                "  advisor:\n",                             // 6
                "    baseUrl: https://api.openai.com/v1\n", // 7
                "    model: m\n",                           // 8
                "    redact:\n",                            // 9
                "      - 'ok-\\d+'\n",                      // 10
                "      - '(hunter2'\n",                     // 11
                "      - 'x*'\n",                           // 12
            ),
            long,                            // 13
            "      - '(?:\\w{100}){100}'\n", // 14
        ));
        assert!(policy.is_none());
        let found = errors(&diagnostics);
        assert_eq!(
            found
                .iter()
                .map(|(line, column, message)| (*line, *column, message.as_str()))
                .collect::<Vec<_>>()[..3],
            [
                (
                    11,
                    9,
                    "not a valid regular expression: unclosed group (at character 1)"
                ),
                (12, 9, "the pattern matches empty text"),
                (
                    13,
                    9,
                    "the pattern is 1600 bytes long, more than the 1024 allowed"
                ),
            ],
            "{diagnostics:#?}"
        );
        assert_eq!(found.len(), 4, "{found:#?}");
        assert_eq!(found[3].0, 14);
        assert!(found[3].2.contains("exceeds size limit"), "{:?}", found[3]);
        for d in &diagnostics {
            assert!(!d.to_string().contains("hunter2"), "{d}");
        }
        assert_eq!(
            diagnostics[0].field.as_deref(),
            Some("spec.advisor.redact[1]"),
            "{:?}",
            diagnostics[0]
        );
    }

    #[test]
    fn unknown_fields_in_the_block_are_named_with_a_suggestion() {
        let (_, diagnostics) = load(
            "  advisor:\n    baseUrl: https://api.openai.com/v1\n    model: m\n    retry: 3\n",
        );
        assert_eq!(diagnostics.len(), 1, "{diagnostics:#?}");
        assert_eq!(diagnostics[0].message, "unknown field `retry`");
        assert_eq!(
            diagnostics[0].help.as_deref(),
            Some("did you mean `retries`?")
        );
    }
}
