//! The Ollama JSON types, field by field as `ollama-api.md` defines them.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::template::Message;

/// `POST /api/generate`.
#[derive(Debug, Default, Deserialize)]
pub struct GenerateRequest {
    /// Model name.
    pub model: String,
    /// Prompt text; empty loads (or, with `keep_alive: 0`, unloads) the model.
    #[serde(default)]
    pub prompt: String,
    /// Text after the insertion point (fill-in-the-middle).
    #[serde(default)]
    pub suffix: String,
    /// Overrides the model's system prompt.
    #[serde(default)]
    pub system: String,
    /// Overrides the model's template.
    #[serde(default)]
    pub template: String,
    /// Token ids from an earlier response, prepended to the prompt.
    #[serde(default)]
    pub context: Option<Vec<i32>>,
    /// Send the prompt as is, without a template.
    #[serde(default)]
    pub raw: bool,
    /// Stream (default) or answer once.
    #[serde(default)]
    pub stream: Option<bool>,
    /// Structured output: `"json"` or a JSON Schema.
    #[serde(default)]
    pub format: Option<Value>,
    /// Images (base64).
    #[serde(default)]
    pub images: Option<Vec<String>>,
    /// Thinking.
    #[serde(default)]
    pub think: Option<Value>,
    /// Per-request options.
    #[serde(default)]
    pub options: Option<Map<String, Value>>,
    /// How long the model stays loaded afterwards.
    #[serde(default)]
    pub keep_alive: Option<Value>,
    /// Render the prompt and return it without running the model.
    #[serde(default, rename = "_debug_render_only")]
    pub debug_render_only: bool,
}

/// `POST /api/chat`.
#[derive(Debug, Default, Deserialize)]
pub struct ChatRequest {
    /// Model name.
    pub model: String,
    /// The conversation; empty loads (or unloads) the model.
    #[serde(default)]
    pub messages: Vec<Message>,
    /// Stream (default) or answer once.
    #[serde(default)]
    pub stream: Option<bool>,
    /// Tool definitions.
    #[serde(default)]
    pub tools: Option<Vec<Value>>,
    /// herd's extension: `auto`, `none`, `required` or `{"type": "function", "function": {"name"}}`.
    #[serde(default)]
    pub tool_choice: Option<Value>,
    /// Structured output: `"json"` or a JSON Schema.
    #[serde(default)]
    pub format: Option<Value>,
    /// Thinking.
    #[serde(default)]
    pub think: Option<Value>,
    /// `think` on a model that cannot reason is ignored instead of refused (Anthropic layer).
    #[serde(skip)]
    pub relax_thinking: bool,
    /// Per-request options.
    #[serde(default)]
    pub options: Option<Map<String, Value>>,
    /// How long the model stays loaded afterwards.
    #[serde(default)]
    pub keep_alive: Option<Value>,
    /// Render the prompt and return it without running the model.
    #[serde(default, rename = "_debug_render_only")]
    pub debug_render_only: bool,
}

/// `POST /api/embed`.
#[derive(Debug, Default, Deserialize)]
pub struct EmbedRequest {
    /// Model name.
    pub model: String,
    /// A string or a list of strings.
    #[serde(default)]
    pub input: Value,
    /// Cut inputs longer than the context (default) instead of refusing them.
    #[serde(default)]
    pub truncate: Option<bool>,
    /// Keep only the first this many dimensions (normalised again).
    #[serde(default)]
    pub dimensions: Option<i64>,
    /// Per-request options.
    #[serde(default)]
    pub options: Option<Map<String, Value>>,
    /// How long the model stays loaded afterwards.
    #[serde(default)]
    pub keep_alive: Option<Value>,
}

/// `POST /api/embed`'s answer, durations in nanoseconds.
#[derive(Debug, Serialize)]
pub struct EmbedResponse {
    /// Model name as requested.
    pub model: String,
    /// One L2-normalised vector per input.
    pub embeddings: Vec<Vec<f32>>,
    /// Request start to answer.
    pub total_duration: u64,
    /// Time to get a runner.
    pub load_duration: u64,
    /// Tokens read.
    pub prompt_eval_count: u64,
}

/// `POST /api/embeddings` (legacy).
#[derive(Debug, Default, Deserialize)]
pub struct EmbeddingsRequest {
    /// Model name.
    pub model: String,
    /// The text; empty loads the model.
    #[serde(default)]
    pub prompt: String,
    /// Per-request options.
    #[serde(default)]
    pub options: Option<Map<String, Value>>,
    /// How long the model stays loaded afterwards.
    #[serde(default)]
    pub keep_alive: Option<Value>,
}

/// The metrics of a final chunk, in nanoseconds.
#[derive(Debug, Default, Serialize)]
pub struct Metrics {
    /// Why generation ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub done_reason: Option<String>,
    /// Request start to final chunk.
    #[serde(skip_serializing_if = "is_zero")]
    pub total_duration: u64,
    /// Time to get a runner.
    #[serde(skip_serializing_if = "is_zero")]
    pub load_duration: u64,
    /// Prompt tokens.
    #[serde(skip_serializing_if = "is_zero")]
    pub prompt_eval_count: u64,
    /// Prompt evaluation time.
    #[serde(skip_serializing_if = "is_zero")]
    pub prompt_eval_duration: u64,
    /// Generated tokens.
    #[serde(skip_serializing_if = "is_zero")]
    pub eval_count: u64,
    /// Generation time.
    #[serde(skip_serializing_if = "is_zero")]
    pub eval_duration: u64,
    /// herd's extra: prompt tokens dropped to fit the context.
    #[serde(skip_serializing_if = "is_zero")]
    pub prompt_truncated_tokens: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// One line of a `/api/generate` answer.
#[derive(Debug, Serialize)]
pub struct GenerateChunk {
    /// Model name as requested.
    pub model: String,
    /// RFC 3339 time.
    pub created_at: String,
    /// Text piece.
    pub response: String,
    /// Reasoning piece (`think`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thinking: Option<String>,
    /// Whether this is the last line.
    pub done: bool,
    /// Token ids of prompt and answer (final line, not in raw mode).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub context: Option<Vec<i32>>,
    /// Final metrics.
    #[serde(flatten)]
    pub metrics: Option<Metrics>,
}

/// The assistant message of a chat chunk.
#[derive(Debug, Serialize)]
pub struct ChatMessageOut {
    /// Always `assistant`.
    pub role: &'static str,
    /// Text piece.
    pub content: String,
    /// Reasoning piece (`think`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thinking: Option<String>,
    /// Whole tool calls: `[{"id", "function": {"index", "name", "arguments"}}]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<Value>>,
}

/// One line of a `/api/chat` answer.
#[derive(Debug, Serialize)]
pub struct ChatChunk {
    /// Model name as requested.
    pub model: String,
    /// RFC 3339 time.
    pub created_at: String,
    /// The message piece.
    pub message: ChatMessageOut,
    /// Whether this is the last line.
    pub done: bool,
    /// Final metrics.
    #[serde(flatten)]
    pub metrics: Option<Metrics>,
}

/// `POST /api/create`.
#[derive(Debug, Default, Deserialize)]
pub struct CreateRequest {
    /// Name of the new model (`name` is the legacy spelling).
    #[serde(alias = "name")]
    pub model: String,
    /// An existing model, or a server-side path.
    #[serde(default)]
    pub from: Option<String>,
    /// File name -> digest of an uploaded blob.
    #[serde(default)]
    pub files: Option<Map<String, Value>>,
    /// Adapter file name -> digest.
    #[serde(default)]
    pub adapters: Option<Map<String, Value>>,
    /// Go template.
    #[serde(default)]
    pub template: Option<String>,
    /// System prompt.
    #[serde(default)]
    pub system: Option<String>,
    /// Default options.
    #[serde(default)]
    pub parameters: Option<Map<String, Value>>,
    /// Messages prepended to every chat.
    #[serde(default)]
    pub messages: Option<Vec<Message>>,
    /// License text(s).
    #[serde(default)]
    pub license: Option<Value>,
    /// Quantization (not supported).
    #[serde(default, alias = "quantization")]
    pub quantize: Option<String>,
    /// Stream (default) or answer once.
    #[serde(default)]
    pub stream: Option<bool>,
}

/// `POST /api/show`.
#[derive(Debug, Deserialize)]
pub struct ShowRequest {
    /// Model name (`name` is the legacy spelling).
    #[serde(alias = "name")]
    pub model: String,
    /// Include large arrays in `model_info`.
    #[serde(default)]
    pub verbose: bool,
}

/// `POST /api/copy`.
#[derive(Debug, Deserialize)]
pub struct CopyRequest {
    /// Existing model.
    pub source: String,
    /// New name.
    pub destination: String,
}

/// A body naming one model: `DELETE /api/delete`, `POST /api/export`.
#[derive(Debug, Deserialize)]
pub struct ModelRequest {
    /// Model name (`name` is the legacy spelling).
    #[serde(alias = "name")]
    pub model: String,
}

/// `POST /api/pull` and `POST /api/push`.
#[derive(Debug, Deserialize)]
pub struct TransferRequest {
    /// Model name (`name` is the legacy spelling).
    #[serde(alias = "name")]
    pub model: String,
    /// Allow a plain-http registry.
    #[serde(default)]
    pub insecure: Option<bool>,
    /// Stream progress lines (default true).
    #[serde(default)]
    pub stream: Option<bool>,
}

/// `details` of a model in tags, show and ps.
#[derive(Clone, Debug, Serialize)]
pub struct ModelDetails {
    /// The model it was created from, if any.
    pub parent_model: String,
    /// `gguf`.
    pub format: String,
    /// Architecture.
    pub family: String,
    /// Families.
    pub families: Option<Vec<String>>,
    /// Parameter count, human form.
    pub parameter_size: String,
    /// Quantization.
    pub quantization_level: String,
}
