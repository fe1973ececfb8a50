//! The `AutonomyPolicy` document as written in YAML: how far Salve may act on its own.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::playbook::spec::Metadata;
use crate::risk::Risk;

/// How far Salve may act without a human: the risk ceiling, dry-run, freezes and limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schemars(title = "AutonomyPolicy")]
pub struct PolicyDocument {
    /// Always `salve.dev/v1`.
    #[schemars(extend("const" = "salve.dev/v1"))]
    pub api_version: String,
    /// Always `AutonomyPolicy`.
    #[schemars(extend("const" = "AutonomyPolicy"))]
    pub kind: String,
    /// The policy's name.
    pub metadata: Metadata,
    /// The policy itself.
    pub spec: PolicySpec,
}

/// The body of an autonomy policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PolicySpec {
    /// Steps at or below this risk run on their own; riskier ones wait for a human.
    pub max_autonomous_risk: Risk,
    /// Run every step as a server-side dry run (default true: the safe first install).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dry_run: Option<bool>,
    /// Lower ceilings for some namespaces; an override can only lower the global ceiling.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub overrides: Vec<NamespaceOverride>,
    /// Windows in which nothing above `none` runs on its own.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub freeze: Vec<FreezeWindow>,
    /// Rate limits and the circuit breaker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<Limits>,
    /// How approvals for steps above the ceiling work.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<Approval>,
    /// The LLM advisor (off when absent): an OpenAI-compatible endpoint that may explain and
    /// rank, never act, and only ever make Salve more cautious.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advisor: Option<Advisor>,
}

/// A lower ceiling for some namespaces.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NamespaceOverride {
    /// The namespaces this override applies to.
    pub namespaces: Vec<String>,
    /// Their ceiling (only effective when lower than the global one).
    pub max_autonomous_risk: Risk,
}

/// A recurring window in which Salve does not act on its own (a change freeze).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FreezeWindow {
    /// When the window opens (cron: 5 fields, or 6-7 with seconds first).
    pub schedule: String,
    /// How long it stays open.
    pub duration: String,
    /// Only these namespaces are frozen (default: all).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
}

/// Rate limits and the circuit breaker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Limits {
    /// At most this many actions per rolling hour (default 30).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actions_per_hour: Option<u32>,
    /// At most this many incidents remediated at once (default 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrent_incidents: Option<u32>,
    /// Stop acting after consecutive failures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub circuit_breaker: Option<CircuitBreaker>,
}

/// Opens after `failures` consecutive action failures; half-opens after `reset`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CircuitBreaker {
    /// Consecutive failures that open the breaker (default 3).
    pub failures: u32,
    /// How long it stays open before one trial action is allowed (default 5m).
    pub reset: String,
}

/// How approvals work.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Approval {
    /// No answer within this long means rejected (default 300s).
    pub timeout: String,
}

/// The LLM advisor: an OpenAI-compatible endpoint Salve may consult. Salve works fully without
/// it; a slow, failing or wrong advisor changes nothing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Advisor {
    /// Whether it is consulted (default true when the block is present; `false` keeps the
    /// settings and turns it off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// The endpoint's base URL, http or https, such as `https://api.openai.com/v1` or
    /// `http://vllm.ai.svc:8000/v1`; Salve calls `{baseUrl}/chat/completions` and
    /// `{baseUrl}/embeddings`.
    pub base_url: String,
    /// The chat model.
    pub model: String,
    /// Where the API key is read from: `{file: /path}` (a mounted Secret) or `{env: VAR}`;
    /// never the key itself. Leave it out for an endpoint that needs none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<ApiKey>,
    /// The longest one call may take, retries included (default 20s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// Further attempts after a 429, a 5xx or a connection error (default 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
    /// Calls and tokens per rolling hour; a call over it is refused without being sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<AdvisorBudget>,
    /// Stop calling a failing endpoint for a while.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub circuit_breaker: Option<AdvisorCircuitBreaker>,
    /// The embeddings model, for ranking runbooks by meaning (default: a local lexical
    /// ranking).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embeddings: Option<AdvisorEmbeddings>,
    /// How long an answer for the same incident and evidence is reused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<AdvisorCache>,
    /// More to redact from everything the advisor is sent, on top of the built-in patterns
    /// (tokens, keys, passwords, emails, IP addresses): regular expressions in the Rust
    /// `regex` syntax (`(?i)` for case-insensitive), at most 1024 bytes each. A match is
    /// replaced whole by `[REDACTED:policy-N]`, N counting from 1 in this list.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub redact: Vec<String>,
}

/// Where the advisor's API key is read from: `{file: /path}` or `{env: VAR}`. A key written
/// in the policy is read only to be refused (its schema accepts one so that the refusal comes
/// with a clear message that does not quote it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ApiKey {
    /// `{file: /path}` or `{env: VAR}`.
    From(ApiKeyFrom),
    /// The key written in the policy: always refused (it would end up in Git and in logs).
    Literal(LiteralKey),
}

impl JsonSchema for ApiKey {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ApiKey".into()
    }

    /// [`ApiKeyFrom`]'s schema, also accepting a scalar: the compiler refuses it without
    /// quoting it, where a schema error would show the value.
    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let mut schema = ApiKeyFrom::json_schema(generator);
        schema.insert(
            "type".into(),
            serde_json::json!(["object", "string", "number"]),
        );
        schema.insert(
            "description".into(),
            "Where the API key is read from: `{file: /path}` (a mounted Secret) or `{env: VAR}`. \
             Never the key itself: a key written here is refused."
                .into(),
        );
        schema
    }
}

/// A file or an environment variable holding the API key (exactly one of the two).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ApiKeyFrom {
    /// A file holding the key, such as a mounted Secret (relative paths are from the policy
    /// file's directory); read at each call, so a rotated Secret is picked up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// An environment variable holding the key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
}

/// A key written into the policy: read only to refuse it. Its `Debug` hides it.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct LiteralKey(pub serde_json::Value);

impl std::fmt::Debug for LiteralKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LiteralKey(<redacted>)")
    }
}

/// The advisor's hourly budget.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AdvisorBudget {
    /// Calls per rolling hour, each counted once whatever its retries (default 60).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calls_per_hour: Option<u32>,
    /// Tokens per rolling hour, as the endpoint reports them (default 200000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_hour: Option<u64>,
}

/// Opens after `failures` consecutive failed calls; lets one trial call through after `reset`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AdvisorCircuitBreaker {
    /// Consecutive failed calls (timeouts, connection errors, 5xx and 429 after the retries,
    /// malformed answers) that open it (default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failures: Option<u32>,
    /// How long it stays open (default 5m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reset: Option<String>,
}

/// The embeddings endpoint (`{baseUrl}/embeddings`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AdvisorEmbeddings {
    /// The embeddings model.
    pub model: String,
}

/// The advisor's answer cache.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AdvisorCache {
    /// How long an answer is reused (default 1h; 0s turns the cache off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<String>,
    /// At most this many answers are kept, the oldest dropped first (default 1000; 0 turns
    /// the cache off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entries: Option<u32>,
}
