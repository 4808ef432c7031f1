use serde::{Deserialize, Serialize};

/// Identifies one request on a runner connection; chosen by the server, unique per connection.
pub type RequestId = u64;

/// A message from the server to a runner.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    /// Generate a completion for a rendered prompt; answered by `Piece`s then `Done` or `Failed`.
    Complete(CompletionRequest),
    /// Stop a completion (its prompt evaluation included) and free its slot; answered by `Done`.
    Cancel { id: RequestId },
    /// Turn text into token ids (special tokens parsed, BOS added as the model wants).
    Tokenize { id: RequestId, text: String },
    /// Turn token ids back into text.
    Detokenize { id: RequestId, tokens: Vec<i32> },
    /// Ask whether the engine loop is responsive; answered by `Healthy`.
    Health { id: RequestId },
    /// Turn a structured-output format into a GBNF grammar the model can sample under;
    /// answered by `Grammar` or, when it cannot be turned into one, `Failed`.
    CompileFormat { id: RequestId, format: OutputFormat },
    /// Embed each input (special tokens parsed, BOS added as the model wants); answered by
    /// `Embeddings` or `Failed`. An input longer than the context is cut to fit.
    Embed { id: RequestId, inputs: Vec<String> },
    /// Finish in-flight work quickly and exit.
    Shutdown,
}

/// One completion to run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CompletionRequest {
    /// The request's id on this connection.
    pub id: RequestId,
    /// The fully rendered prompt; special tokens in it are parsed.
    pub prompt: String,
    /// How to pick each next token.
    pub sampling: SamplingOptions,
    /// Most tokens to generate; negative means until a stop or the context is full.
    pub num_predict: i32,
    /// Tokens at the start of the prompt kept when a too-long prompt is cut.
    pub num_keep: u32,
    /// Strings that end generation; matched across token boundaries and never emitted.
    pub stop: Vec<String>,
    /// Return the prompt and generated token ids in `Done` (for `/api/generate`'s `context`).
    pub return_tokens: bool,
    /// A GBNF grammar (from `CompileFormat`) every generated token must keep valid.
    pub grammar: Option<String>,
    /// Images placed in the prompt, in prompt order; only a runner with a vision projector
    /// takes them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<PromptImage>,
}

/// An image inside a prompt.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PromptImage {
    /// Byte offset in the prompt where the image goes (a `char` boundary).
    pub offset: usize,
    /// The image file (one of [`ImageFormat`]), base64.
    pub data: String,
}

/// The image file formats a vision runner reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageFormat {
    /// PNG.
    Png,
    /// JPEG.
    Jpeg,
    /// GIF (its first frame).
    Gif,
    /// Windows bitmap.
    Bmp,
    /// WebP, which the runner decodes itself (llama.cpp's decoder does not read it).
    WebP,
}

impl ImageFormat {
    /// The format an image file's first bytes announce, if it is one of these.
    pub fn sniff(bytes: &[u8]) -> Option<Self> {
        const SIGNATURES: [(&[u8], ImageFormat); 5] = [
            (b"\x89PNG\r\n\x1a\n", ImageFormat::Png),
            (&[0xff, 0xd8, 0xff], ImageFormat::Jpeg),
            (b"GIF87a", ImageFormat::Gif),
            (b"GIF89a", ImageFormat::Gif),
            (b"BM", ImageFormat::Bmp),
        ];
        if bytes.len() >= 12 && bytes.starts_with(b"RIFF") && &bytes[8..12] == b"WEBP" {
            return Some(Self::WebP);
        }
        SIGNATURES
            .iter()
            .find(|(signature, _)| bytes.starts_with(signature))
            .map(|&(_, format)| format)
    }
}

/// A structured-output format, as `format` gives it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "schema", rename_all = "snake_case")]
pub enum OutputFormat {
    /// Any JSON object.
    Json,
    /// JSON that validates against this schema (its JSON text).
    Schema(String),
    /// A tool call: `prefix`, JSON valid for `schema`, then `suffix` (the template's tags).
    ToolCall {
        schema: String,
        prefix: String,
        suffix: String,
    },
}

impl CompletionRequest {
    /// The most prompt tokens a context of `context_length` takes for this request: the rest is
    /// kept free to generate in (`num_predict` tokens, at most half the context; a quarter when
    /// unbounded). The runner cuts a longer prompt to this, so the server fits chats to it too.
    pub fn prompt_budget(context_length: usize, num_predict: i32) -> usize {
        let reserve = match num_predict {
            n if n > 0 => (n as usize).min(context_length / 2),
            _ => context_length / 4,
        }
        .max(1);
        context_length.saturating_sub(reserve)
    }
}

/// Sampling parameters, with Ollama's meaning and defaults.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SamplingOptions {
    /// Softmax temperature; 0 or less means greedy.
    pub temperature: f32,
    /// Keep the k most likely tokens; 0 or less disables.
    pub top_k: i32,
    /// Nucleus sampling threshold; 1 disables.
    pub top_p: f32,
    /// Minimum probability relative to the best token; 0 disables.
    pub min_p: f32,
    /// Locally typical sampling; 1 disables.
    pub typical_p: f32,
    /// How many recent tokens the penalties look at; -1 means the whole context.
    pub repeat_last_n: i32,
    /// Multiplicative penalty on repeated tokens; 1 disables.
    pub repeat_penalty: f32,
    /// Additive penalty on tokens that appeared at all.
    pub presence_penalty: f32,
    /// Additive penalty proportional to how often a token appeared.
    pub frequency_penalty: f32,
    /// Random seed; negative means a fresh random seed.
    pub seed: i64,
}

impl Default for SamplingOptions {
    fn default() -> Self {
        Self {
            temperature: 0.8,
            top_k: 40,
            top_p: 0.9,
            min_p: 0.0,
            typical_p: 1.0,
            repeat_last_n: 64,
            repeat_penalty: 1.0,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            seed: -1,
        }
    }
}

/// A message from a runner to the server.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum RunnerMessage {
    /// First message on a connection, before the model loads.
    Hello { protocol: u32, pid: u32 },
    /// The model is loaded and the runner accepts requests.
    Loaded(ModelFacts),
    /// The model could not be loaded; the runner exits after sending this.
    LoadFailed { error: String },
    /// A piece of generated text (always whole UTF-8 characters, never part of a stop string).
    Piece { id: RequestId, text: String },
    /// A completion ended normally (or was cancelled).
    Done { id: RequestId, metrics: CompletionMetrics },
    /// A request failed.
    Failed { id: RequestId, error: String },
    /// A completion's input cannot be used (an image that does not decode, a prompt with
    /// images longer than the context); nothing was generated.
    Rejected { id: RequestId, error: String },
    /// Answer to `Tokenize`.
    Tokens { id: RequestId, tokens: Vec<i32> },
    /// Answer to `Detokenize`.
    Text { id: RequestId, text: String },
    /// Answer to `Health`.
    Healthy { id: RequestId, busy_slots: u32 },
    /// Answer to `CompileFormat`: the GBNF grammar.
    Grammar { id: RequestId, grammar: String },
    /// Answer to `Embed`: one vector per input (as the model pools them, not normalised)
    /// and the tokens evaluated in all.
    Embeddings {
        id: RequestId,
        vectors: Vec<Vec<f32>>,
        prompt_tokens: u32,
    },
}

/// What the runner learned about the model while loading it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ModelFacts {
    /// Context length of each slot, in tokens.
    pub context_length: u32,
    /// Context length the model was trained with.
    pub training_context_length: u32,
    /// Concurrent sequences the runner decodes together.
    pub parallel: u32,
    /// Bytes of weights.
    pub model_bytes: u64,
    /// Layers offloaded to a GPU.
    pub gpu_layers: u32,
    /// Seconds the load took, measured by the runner.
    pub load_seconds: f64,
}

/// Why generation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DoneReason {
    /// End of generation token or a stop string.
    Stop,
    /// `num_predict` reached or the context is full.
    Length,
    /// The server cancelled the request.
    Cancelled,
}

/// Counts and timings of one completion, durations in nanoseconds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CompletionMetrics {
    /// Why generation ended.
    pub done_reason: DoneReason,
    /// Time the request waited in the runner for a free slot.
    #[serde(default)]
    pub queue_duration_ns: u64,
    /// Prompt tokens, including those served from the cache.
    pub prompt_eval_count: u32,
    /// Prompt tokens reused from the cache and not evaluated again.
    pub prompt_cached_count: u32,
    /// Time spent evaluating the prompt.
    pub prompt_eval_duration_ns: u64,
    /// Tokens generated.
    pub eval_count: u32,
    /// Time spent generating.
    pub eval_duration_ns: u64,
    /// Prompt tokens dropped because the prompt did not fit the context.
    pub truncated_tokens: u32,
    /// Prompt then generated token ids, when the request asked for them.
    pub tokens: Option<Vec<i32>>,
}
