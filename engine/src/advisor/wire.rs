//! The OpenAI-compatible wire format: what is sent to `/chat/completions` and `/embeddings`
//! and the parts of the answers Salve reads. Unknown fields in answers are ignored, so
//! OpenAI, vLLM, Ollama, llama.cpp's server and DashScope's compatible mode all parse.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Who says a [`Message`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The instructions.
    System,
    /// The question (the incident's context).
    User,
    /// An earlier answer.
    Assistant,
}

/// One chat message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// Who says it.
    pub role: Role,
    /// What it says.
    pub content: String,
}

impl Message {
    /// A system message.
    pub fn system(content: impl Into<String>) -> Self {
        Message {
            role: Role::System,
            content: content.into(),
        }
    }

    /// A user message.
    pub fn user(content: impl Into<String>) -> Self {
        Message {
            role: Role::User,
            content: content.into(),
        }
    }
}

/// The answer's required shape: sent as `response_format: {type: json_schema, json_schema:
/// {name, schema, strict}}` (the endpoint may ignore it; the caller validates the answer).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JsonSchemaFormat {
    /// The schema's name (letters, digits, `_` and `-`).
    pub name: String,
    /// The JSON Schema the answer must match.
    pub schema: Value,
    /// Asks the endpoint to enforce the schema exactly.
    pub strict: bool,
}

/// The body of `POST /chat/completions`.
#[derive(Debug, Serialize)]
pub(crate) struct ChatRequest<'a> {
    pub(crate) model: &'a str,
    pub(crate) messages: &'a [Message],
    /// Always 0: the same incident should get the same advice.
    pub(crate) temperature: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) response_format: Option<ResponseFormat<'a>>,
}

#[derive(Debug, Serialize)]
pub(crate) struct ResponseFormat<'a> {
    #[serde(rename = "type")]
    pub(crate) kind: &'static str,
    pub(crate) json_schema: &'a JsonSchemaFormat,
}

/// The answer of `/chat/completions`.
#[derive(Debug, Deserialize)]
pub(crate) struct ChatResponse {
    #[serde(default)]
    pub(crate) model: Option<String>,
    pub(crate) choices: Vec<Choice>,
    #[serde(default)]
    pub(crate) usage: Option<Usage>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct Choice {
    pub(crate) message: ChoiceMessage,
    #[serde(default)]
    pub(crate) finish_reason: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct ChoiceMessage {
    #[serde(default)]
    pub(crate) content: Option<String>,
}

/// Token counts, as the endpoint reports them.
#[derive(Debug, Deserialize)]
pub(crate) struct Usage {
    #[serde(default)]
    pub(crate) total_tokens: Option<u64>,
}

/// The body of `POST /embeddings`.
#[derive(Debug, Serialize)]
pub(crate) struct EmbeddingsRequest<'a> {
    pub(crate) model: &'a str,
    pub(crate) input: &'a [String],
}

/// The answer of `/embeddings`.
#[derive(Debug, Deserialize)]
pub(crate) struct EmbeddingsResponse {
    pub(crate) data: Vec<EmbeddingData>,
    #[serde(default)]
    pub(crate) usage: Option<Usage>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct EmbeddingData {
    pub(crate) embedding: Vec<f32>,
    #[serde(default)]
    pub(crate) index: Option<usize>,
}
