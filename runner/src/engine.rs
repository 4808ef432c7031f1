//! The only user of llama.cpp: owns the model and its context on one thread and runs the
//! decode loop. Several requests share each `decode` call (continuous batching): every
//! generating slot adds its next token, and slots still reading their prompt fill the rest
//! of the batch with prompt chunks. Each slot remembers the tokens in its KV cache, so a
//! request that repeats a prefix (the next turn of a chat) skips evaluating it again, and a
//! prefix cached in another slot (a system prompt shared by many conversations) is copied
//! from there instead of being evaluated again.

use std::collections::VecDeque;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use herd_proto::{
    CompletionMetrics, CompletionRequest, DoneReason, ModelFacts, OutputFormat, RequestId, RunnerMessage, ServerMessage,
};
use llama_cpp_2::context::params::{LlamaContextParams, LlamaPoolingType};
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::{LlamaModelParams, LlamaSplitMode};
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;
use tokio::sync::mpsc::UnboundedSender;

use crate::output::{Emit, TextOutput};
use crate::sampling::{SlotSampler, JSON_GRAMMAR};
use crate::vision::{is_image_position, PromptPiece, Vision};

/// How the model is loaded; fixed for the life of the runner.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Path of the GGUF file.
    pub model_path: PathBuf,
    /// Context length of each slot, in tokens (clamped to the training context).
    pub context_length: u32,
    /// Number of slots decoded together.
    pub parallel: u32,
    /// CPU threads for llama.cpp.
    pub threads: i32,
    /// Most tokens in one decode call.
    pub batch_size: u32,
    /// Layers to offload to a GPU.
    pub gpu_layers: u32,
    /// The GPU that takes them.
    pub main_gpu: u32,
    /// A LoRA adapter GGUF to apply at full scale.
    pub lora_path: Option<PathBuf>,
    /// A vision projector (mmproj GGUF) for prompts with images.
    pub projector_path: Option<PathBuf>,
}

/// Most prompt tokens one decode call takes while other slots are generating: a long prompt
/// is read in these steps so that every generating stream still gets a token per step.
const PREFILL_CHUNK_WHILE_DECODING: usize = 128;

/// A prefix in another slot is copied only when it saves at least this many tokens: the
/// copy moves the whole sequence, so tiny savings are not worth it.
const MIN_COPIED_PREFIX: usize = 32;

/// Sends runner messages to the connection writer.
type Events = UnboundedSender<RunnerMessage>;

/// Loads the model, reports the outcome, then serves `commands` until they end or `Shutdown`.
pub fn run(config: EngineConfig, commands: Receiver<ServerMessage>, events: Events) {
    let started = Instant::now();
    let backend = match LlamaBackend::init() {
        Ok(backend) => backend,
        Err(e) => return load_failed(&events, format!("llama.cpp backend init failed: {e}")),
    };
    // A runner built without a GPU backend, or on a machine without the driver, runs on the CPU.
    let gpu_layers = if config.gpu_layers > 0 && !backend.supports_gpu_offload() {
        tracing::warn!(
            requested = config.gpu_layers,
            "no GPU backend available (built without `cuda`, or no driver); running on the CPU"
        );
        0
    } else {
        config.gpu_layers
    };
    let mut model_params = LlamaModelParams::default().with_n_gpu_layers(gpu_layers);
    if gpu_layers > 0 {
        // One GPU, the one the server chose (llama.cpp refuses a main GPU it does not have).
        model_params = model_params
            .with_main_gpu(config.main_gpu as i32)
            .with_split_mode(LlamaSplitMode::None);
    }
    let mut model = match LlamaModel::load_from_file(&backend, &config.model_path, &model_params) {
        Ok(model) => model,
        Err(e) => return load_failed(&events, format!("unable to load model: {e}")),
    };
    // llama.cpp owns the adapter with the model; the handle only has to reach the context.
    let mut adapter = match config.lora_path.as_ref().map(|path| model.lora_adapter_init(path)) {
        None => None,
        Some(Ok(adapter)) => Some(adapter),
        Some(Err(e)) => return load_failed(&events, format!("unable to load LoRA adapter: {e}")),
    };
    let context_length = config.context_length.clamp(16, model.n_ctx_train().max(16));
    let parallel = config.parallel.max(1);
    let total_context = NonZeroU32::new(context_length * parallel);
    let ctx_params = LlamaContextParams::default()
        .with_n_ctx(total_context)
        .with_n_batch(config.batch_size)
        .with_n_ubatch(config.batch_size)
        .with_n_seq_max(parallel)
        .with_swa_full(false)
        .with_n_threads(config.threads)
        .with_n_threads_batch(config.threads);
    let mut ctx = match model.new_context(&backend, ctx_params) {
        Ok(ctx) => ctx,
        Err(e) => return load_failed(&events, format!("unable to create context: {e}")),
    };
    if let Some(adapter) = adapter.as_mut() {
        if let Err(e) = ctx.lora_adapter_set(adapter, 1.0) {
            return load_failed(&events, format!("unable to apply LoRA adapter: {e}"));
        }
    }
    let vision = match config.projector_path.as_deref() {
        None => None,
        Some(path) => match Vision::load(path, &model, config.threads, gpu_layers > 0) {
            Ok(vision) => Some(vision),
            Err(error) => return load_failed(&events, error),
        },
    };
    let facts = ModelFacts {
        context_length,
        training_context_length: model.n_ctx_train(),
        parallel,
        model_bytes: model.size(),
        gpu_layers: gpu_layers.min(model.n_layer() + 1),
        load_seconds: started.elapsed().as_secs_f64(),
    };
    tracing::info!(?facts, "model loaded");
    if events.send(RunnerMessage::Loaded(facts)).is_err() {
        return;
    }
    let mut engine = Engine::new(
        &backend,
        &model,
        ctx,
        EngineShape {
            context_length,
            parallel,
            batch_size: config.batch_size,
            threads: config.threads,
        },
        vision,
        events,
    );
    engine.serve(&commands);
}

/// The model's attention window (`<arch>.attention.sliding_window`), 0 when it has none.
fn sliding_window(model: &LlamaModel) -> u32 {
    let architecture = model.meta_val_str("general.architecture").unwrap_or_default();
    model
        .meta_val_str(&format!("{architecture}.attention.sliding_window"))
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn load_failed(events: &Events, error: String) {
    tracing::error!("{error}");
    let _ = events.send(RunnerMessage::LoadFailed { error });
}

/// `grammar` with literal text before and after it: its `root` rule renamed, a new root
/// around it.
fn wrap_grammar(grammar: &str, prefix: &str, suffix: &str) -> String {
    let literal = |text: &str| {
        let escaped: String = text
            .chars()
            .map(|c| match c {
                '"' => "\\\"".to_string(),
                '\\' => "\\\\".to_string(),
                '\n' => "\\n".to_string(),
                '\r' => "\\r".to_string(),
                '\t' => "\\t".to_string(),
                c => c.to_string(),
            })
            .collect();
        format!("\"{escaped}\"")
    };
    let body: Vec<String> = grammar
        .lines()
        .map(|line| match line.strip_prefix("root ::=") {
            Some(rest) => format!("herd-wrapped ::={rest}"),
            None => line.to_string(),
        })
        .collect();
    let sequence: Vec<String> = [literal(prefix), "herd-wrapped".to_string(), literal(suffix)]
        .into_iter()
        .filter(|part| part != "\"\"")
        .collect();
    format!("root ::= {}\n{}\n", sequence.join(" "), body.join("\n"))
}

/// How the model's embeddings are pooled into one vector: the GGUF's `<arch>.pooling_type`,
/// else the last token's (what Ollama's runner falls back to for generative models).
fn pooling_type(model: &LlamaModel) -> LlamaPoolingType {
    let architecture = model.meta_val_str("general.architecture").unwrap_or_default();
    let declared = model
        .meta_val_str(&format!("{architecture}.pooling_type"))
        .ok()
        .and_then(|v| v.parse::<i32>().ok())
        .map(LlamaPoolingType::from);
    match declared {
        Some(pooling @ (LlamaPoolingType::Mean | LlamaPoolingType::Cls | LlamaPoolingType::Last)) => pooling,
        _ => LlamaPoolingType::Last,
    }
}

/// A request in flight, bound to a slot.
struct Active {
    id: RequestId,
    /// The (possibly truncated) prompt.
    prompt: Vec<LlamaToken>,
    sampler: SlotSampler,
    /// The structured-output grammar, consulted only for tokens the sampler picks.
    grammar: Option<LlamaSampler>,
    output: TextOutput,
    generated: Vec<LlamaToken>,
    /// The token sampled last, not yet in the KV cache.
    next_token: Option<LlamaToken>,
    /// Index in the current batch whose logits this slot samples from.
    logits_index: Option<i32>,
    num_predict: i32,
    return_tokens: bool,
    cached_count: u32,
    truncated: u32,
    /// KV cells the prompt's images fill beyond their positions (M-RoPE models).
    extra_cells: usize,
    /// How long the request waited for this slot.
    queued: Duration,
    prefill_started: Instant,
    first_token_at: Option<Instant>,
}

/// One KV-cache sequence and what it holds.
struct Slot {
    seq: i32,
    /// Tokens whose keys and values are in this sequence, in order.
    cached: Vec<LlamaToken>,
    active: Option<Active>,
    /// When a request last took this slot: new prompts go to the least recently used one.
    last_used: Instant,
}

/// The sizes the engine was loaded with.
struct EngineShape {
    context_length: u32,
    parallel: u32,
    batch_size: u32,
    threads: i32,
}

struct Engine<'m> {
    backend: &'m LlamaBackend,
    model: &'m LlamaModel,
    ctx: LlamaContext<'m>,
    /// A second context that pools embeddings, made on the first `Embed`.
    embedding_ctx: Option<LlamaContext<'m>>,
    threads: i32,
    slots: Vec<Slot>,
    /// Requests with no slot yet, and when each arrived.
    waiting: VecDeque<(CompletionRequest, Instant)>,
    batch: LlamaBatch<'static>,
    batch_size: usize,
    context_length: u32,
    /// Positions a sliding-window layer attends to (0: none); its cache keeps only these.
    sliding_window: u32,
    /// The vision projector, when the model has one.
    vision: Option<Vision>,
    events: Events,
    piece_buf: Vec<u8>,
}

impl<'m> Engine<'m> {
    fn new(
        backend: &'m LlamaBackend,
        model: &'m LlamaModel,
        ctx: LlamaContext<'m>,
        shape: EngineShape,
        vision: Option<Vision>,
        events: Events,
    ) -> Self {
        let EngineShape {
            context_length,
            parallel,
            batch_size,
            threads,
        } = shape;
        let slots = (0..parallel as i32)
            .map(|seq| Slot {
                seq,
                cached: Vec::new(),
                active: None,
                last_used: Instant::now(),
            })
            .collect();
        Self {
            backend,
            model,
            ctx,
            embedding_ctx: None,
            threads,
            slots,
            waiting: VecDeque::new(),
            batch: LlamaBatch::new(batch_size as usize, parallel as i32),
            batch_size: batch_size as usize,
            context_length,
            sliding_window: sliding_window(model),
            vision,
            events,
            piece_buf: Vec::with_capacity(32),
        }
    }

    fn busy(&self) -> bool {
        !self.waiting.is_empty() || self.slots.iter().any(|s| s.active.is_some())
    }

    fn serve(&mut self, commands: &Receiver<ServerMessage>) {
        loop {
            // Block only when there is nothing to decode; otherwise take what has arrived.
            let timeout = if self.busy() {
                Duration::ZERO
            } else {
                Duration::from_secs(3600)
            };
            let mut next = commands.recv_timeout(timeout);
            loop {
                match next {
                    Ok(ServerMessage::Shutdown) | Err(RecvTimeoutError::Disconnected) => return,
                    Ok(message) => self.handle(message),
                    Err(RecvTimeoutError::Timeout) => break,
                }
                next = commands.recv_timeout(Duration::ZERO);
            }
            self.assign_waiting();
            self.step();
        }
    }

    fn send(&self, message: RunnerMessage) {
        // The connection task ends only when the server is gone, and then so are we.
        let _ = self.events.send(message);
    }

    fn handle(&mut self, message: ServerMessage) {
        match message {
            ServerMessage::Complete(request) => self.waiting.push_back((request, Instant::now())),
            ServerMessage::Cancel { id } => self.cancel(id),
            ServerMessage::Tokenize { id, text } => {
                let tokens = self.tokenize(&text).into_iter().map(|t| t.0).collect();
                self.send(RunnerMessage::Tokens { id, tokens });
            }
            ServerMessage::Detokenize { id, tokens } => {
                let tokens: Vec<LlamaToken> = tokens.into_iter().map(LlamaToken).collect();
                let bytes = self.model.vocab().detokenize(&tokens, false, false);
                let text = String::from_utf8_lossy(&bytes).into_owned();
                self.send(RunnerMessage::Text { id, text });
            }
            ServerMessage::Health { id } => {
                let busy_slots = self.slots.iter().filter(|s| s.active.is_some()).count() as u32;
                self.send(RunnerMessage::Healthy { id, busy_slots });
            }
            ServerMessage::CompileFormat { id, format } => match self.compile_format(&format) {
                Ok(grammar) => self.send(RunnerMessage::Grammar { id, grammar }),
                Err(error) => self.send(RunnerMessage::Failed { id, error }),
            },
            ServerMessage::Embed { id, inputs } => match self.embed(&inputs) {
                Ok((vectors, prompt_tokens)) => self.send(RunnerMessage::Embeddings {
                    id,
                    vectors,
                    prompt_tokens,
                }),
                Err(error) => self.send(RunnerMessage::Failed { id, error }),
            },
            ServerMessage::Shutdown => {}
        }
    }

    /// The GBNF grammar for a structured-output format, checked to load.
    fn compile_format(&self, format: &OutputFormat) -> Result<String, String> {
        let from_schema = |schema: &str, what: &str| {
            llama_cpp_2::json_schema_to_grammar(schema).map_err(|_| {
                format!(
                    "invalid JSON schema in {what}: llama.cpp cannot turn it into a grammar \
                     (an unsupported keyword, a reference to nothing or a contradiction)"
                )
            })
        };
        let grammar = match format {
            OutputFormat::Json => JSON_GRAMMAR.to_string(),
            OutputFormat::Schema(schema) => from_schema(schema, "format")?,
            OutputFormat::ToolCall { schema, prefix, suffix } => {
                wrap_grammar(&from_schema(schema, "the tool parameters")?, prefix, suffix)
            }
        };
        LlamaSampler::grammar(self.model, &grammar, "root")
            .map_err(|e| format!("invalid JSON schema in format: its grammar does not load: {e}"))?;
        Ok(grammar)
    }

    /// Embeds each input in the pooling context, one sequence at a time; returns the vectors
    /// and the tokens evaluated. Inputs longer than the context are cut to fit.
    fn embed(&mut self, inputs: &[String]) -> Result<(Vec<Vec<f32>>, u32), String> {
        if self.embedding_ctx.is_none() {
            let params = LlamaContextParams::default()
                .with_n_ctx(NonZeroU32::new(self.context_length))
                .with_n_batch(self.context_length)
                .with_n_ubatch(self.context_length)
                .with_n_seq_max(1)
                .with_embeddings(true)
                .with_pooling_type(pooling_type(self.model))
                .with_n_threads(self.threads)
                .with_n_threads_batch(self.threads);
            let ctx = self
                .model
                .new_context(self.backend, params)
                .map_err(|e| format!("unable to create the embedding context: {e}"))?;
            self.embedding_ctx = Some(ctx);
        }
        let limit = self.context_length as usize;
        let mut tokenized = Vec::with_capacity(inputs.len());
        for input in inputs {
            let mut tokens = self.tokenize(input);
            tokens.truncate(limit);
            tokenized.push(tokens);
        }
        let ctx = self.embedding_ctx.as_mut().expect("made above");
        let mut batch = LlamaBatch::new(limit, 1);
        let mut vectors = Vec::with_capacity(inputs.len());
        let mut evaluated = 0;
        for tokens in tokenized {
            if tokens.is_empty() {
                return Err("cannot embed an input that has no tokens".into());
            }
            ctx.clear_kv_cache();
            batch.clear();
            batch
                .add_sequence(&tokens, 0, false)
                .map_err(|e| format!("embedding batch: {e}"))?;
            ctx.decode(&mut batch)
                .map_err(|e| format!("llama.cpp decode failed: {e}"))?;
            let vector = ctx
                .embeddings_seq_ith(0)
                .map_err(|_| "llama.cpp produced no pooled embedding".to_string())?;
            vectors.push(vector.to_vec());
            evaluated += tokens.len() as u32;
        }
        Ok((vectors, evaluated))
    }

    fn tokenize(&self, text: &str) -> Vec<LlamaToken> {
        self.model.vocab().tokenize(text.as_bytes(), true, true)
    }

    fn cancel(&mut self, id: RequestId) {
        if let Some(pos) = self.waiting.iter().position(|(r, _)| r.id == id) {
            self.waiting.remove(pos);
            self.send(RunnerMessage::Done {
                id,
                metrics: cancelled_metrics(),
            });
            return;
        }
        if let Some(index) = self
            .slots
            .iter()
            .position(|s| s.active.as_ref().is_some_and(|a| a.id == id))
        {
            self.finish(index, DoneReason::Cancelled);
        }
    }

    /// Binds waiting requests to free slots (see [`Engine::place`]).
    fn assign_waiting(&mut self) {
        while self.slots.iter().any(|s| s.active.is_none()) {
            let Some((request, arrived)) = self.waiting.pop_front() else {
                return;
            };
            let grammar = match request
                .grammar
                .as_deref()
                .map(|g| LlamaSampler::grammar(self.model, g, "root"))
            {
                None => None,
                Some(Ok(grammar)) => Some(grammar),
                Some(Err(e)) => {
                    self.send(RunnerMessage::Failed {
                        id: request.id,
                        error: format!("the format's grammar does not load: {e}"),
                    });
                    continue;
                }
            };
            if !request.images.is_empty() {
                self.start_with_images(&request, arrived, grammar);
                continue;
            }
            let (prompt, truncated) = self.prompt_tokens(&request);
            if prompt.is_empty() {
                self.send(RunnerMessage::Failed {
                    id: request.id,
                    error: "empty prompt".into(),
                });
                continue;
            }
            let (index, reused) = self.place(&prompt);
            let slot = &mut self.slots[index];
            slot.last_used = Instant::now();
            let mut sampler = SlotSampler::new(&request.sampling, self.context_length, self.model.n_vocab());
            sampler.accept_many(prompt.iter());
            slot.active = Some(Active {
                id: request.id,
                sampler,
                grammar,
                output: TextOutput::new(&request.stop),
                generated: Vec::new(),
                next_token: None,
                logits_index: None,
                num_predict: request.num_predict,
                return_tokens: request.return_tokens,
                cached_count: reused as u32,
                truncated,
                extra_cells: 0,
                prompt,
                queued: arrived.elapsed(),
                prefill_started: Instant::now(),
                first_token_at: None,
            });
        }
    }

    /// Starts a request whose prompt holds images in the free slot whose cache serves the
    /// longest prefix of it (images included: the same image at the same place), else the
    /// least recently used one: the rest of the prompt is evaluated at once (mtmd decodes
    /// images itself, so they do not join the shared batch) and the first token is sampled.
    /// Input that cannot be used is `Rejected`.
    fn start_with_images(&mut self, request: &CompletionRequest, arrived: Instant, grammar: Option<LlamaSampler>) {
        let id = request.id;
        let prefill_started = Instant::now();
        let pieces = match self.image_prompt(request) {
            Ok(pieces) => pieces,
            Err(error) => return self.send(RunnerMessage::Rejected { id, error }),
        };
        let record: Vec<LlamaToken> = pieces.iter().flat_map(PromptPiece::record).copied().collect();
        let Some((index, reusable)) = (0..self.slots.len())
            .filter(|&i| self.slots[i].active.is_none())
            .map(|i| (i, self.reusable_with_images(&self.slots[i], &pieces, &record)))
            .max_by_key(|&(i, reusable)| (reusable, std::cmp::Reverse(self.slots[i].last_used)))
        else {
            return;
        };
        let kept = self.keep_prefix(index, reusable);
        if kept > 0 {
            tracing::info!(slot = index, tokens = kept, "reused a cached prompt prefix with images");
        }
        let (slot, Some(vision)) = (&mut self.slots[index], self.vision.as_mut()) else {
            return;
        };
        slot.last_used = Instant::now();
        if let Err(error) = vision.evaluate(&mut self.ctx, slot.seq, &pieces, kept, self.batch_size) {
            let _ = self.ctx.clear_kv_cache_seq(Some(slot.seq as u32), None, None);
            slot.cached.clear();
            return self.send(RunnerMessage::Failed { id, error });
        }
        let extra_cells = pieces.iter().map(|p| p.cells().saturating_sub(p.positions())).sum();
        slot.cached = record.clone();
        let mut sampler = SlotSampler::new(&request.sampling, self.context_length, self.model.n_vocab());
        sampler.accept_many(record.iter().filter(|&&t| !is_image_position(t)));
        slot.active = Some(Active {
            id,
            sampler,
            grammar,
            output: TextOutput::new(&request.stop),
            generated: Vec::new(),
            next_token: None,
            logits_index: None,
            num_predict: request.num_predict,
            return_tokens: request.return_tokens,
            cached_count: kept as u32,
            truncated: 0,
            extra_cells,
            prompt: record,
            queued: prefill_started - arrived,
            prefill_started,
            first_token_at: None,
        });
        // The last decode left this prompt's final logits at the end of its output.
        self.sample(index, -1);
    }

    /// How much of an image prompt (`pieces`, recorded as `record`) the slot's cache serves:
    /// never into an image (its embeddings are evaluated whole), never the last position
    /// (its logits give the first token), and nothing where an image takes more cells than
    /// positions (M-RoPE), whose cache cannot be cut by position.
    fn reusable_with_images(&self, slot: &Slot, pieces: &[PromptPiece], record: &[LlamaToken]) -> usize {
        if pieces.iter().any(|piece| piece.cells() != piece.positions()) {
            return 0;
        }
        let reusable = self.reusable_prefix(slot, record).min(record.len().saturating_sub(1));
        let mut position = 0;
        for piece in pieces {
            let end = position + piece.positions();
            if matches!(piece, PromptPiece::Image { .. }) && position < reusable && reusable < end {
                return position;
            }
            position = end;
        }
        reusable
    }

    /// A prompt with images cut into text and image pieces, checked to fit the context.
    fn image_prompt(&self, request: &CompletionRequest) -> Result<Vec<PromptPiece>, String> {
        let vision = self
            .vision
            .as_ref()
            .ok_or("this model has no vision projector, so it cannot read images")?;
        let pieces = vision.pieces(self.model, &request.prompt, &request.images, self.batch_size)?;
        let cells: usize = pieces.iter().map(PromptPiece::cells).sum();
        let limit = CompletionRequest::prompt_budget(self.context_length as usize, request.num_predict);
        if cells > limit {
            return Err(format!(
                "the prompt and its images take {cells} tokens, more than the {limit} a context of {} \
                 leaves for them",
                self.context_length
            ));
        }
        Ok(pieces)
    }

    /// Picks a free slot for `prompt` and prepares its cache; returns the slot and how many
    /// prompt tokens its cache now holds. The free slot with the longest reusable prefix wins
    /// (the least recently used one when none has any). A longer prefix in another slot, busy
    /// or not, is copied into it. A free slot that would lose a conversation's tail to serve
    /// only the start of this prompt (a shared system prompt) keeps it: its prefix is copied
    /// to the least recently used free slot instead.
    fn place(&mut self, prompt: &[LlamaToken]) -> (usize, usize) {
        // At least the last prompt token is evaluated again: its logits give the first token.
        let reuse: Vec<usize> = self
            .slots
            .iter()
            .map(|slot| self.reusable_prefix(slot, prompt).min(prompt.len() - 1))
            .collect();
        let free = || (0..self.slots.len()).filter(|&i| self.slots[i].active.is_none());
        let Some(best_free) = free().max_by_key(|&i| (reuse[i], std::cmp::Reverse(self.slots[i].last_used))) else {
            return (0, 0);
        };
        let least_recent_other = free()
            .filter(|&i| i != best_free)
            .min_by_key(|&i| self.slots[i].last_used);
        let donor = (0..self.slots.len())
            .filter(|&i| i != best_free)
            .max_by_key(|&i| reuse[i])
            .filter(|&i| reuse[i] >= reuse[best_free] + MIN_COPIED_PREFIX);
        let keeps_a_tail = self.slots[best_free].cached.len() >= reuse[best_free] + MIN_COPIED_PREFIX;
        match (donor, least_recent_other) {
            (Some(donor), _) => (best_free, self.copy_prefix(donor, best_free, reuse[donor])),
            (None, Some(spare)) if keeps_a_tail && reuse[best_free] >= MIN_COPIED_PREFIX => {
                (spare, self.copy_prefix(best_free, spare, reuse[best_free]))
            }
            (None, _) => (best_free, self.keep_prefix(best_free, reuse[best_free])),
        }
    }

    /// How many leading tokens of `prompt` the slot's cache can serve. A sliding-window cache
    /// (llama-server's default, and faster than a full one) has dropped positions older than
    /// the window: a prefix is reusable only while the window before its end is still cached,
    /// as llama-server checks.
    fn reusable_prefix(&self, slot: &Slot, prompt: &[LlamaToken]) -> usize {
        let common = common_prefix(&slot.cached, prompt);
        if self.sliding_window > 0 && common > 0 {
            let oldest_cached = self.ctx.kv_cache_seq_pos_min(slot.seq);
            if oldest_cached > (common as i32 - self.sliding_window as i32).max(0) {
                return 0;
            }
        }
        common
    }

    /// Drops what the slot caches beyond its first `keep` tokens; returns how many it keeps.
    fn keep_prefix(&mut self, index: usize, keep: usize) -> usize {
        let slot = &mut self.slots[index];
        let kept = match self.ctx.kv_cache_seq_rm(slot.seq, Some(keep as u32), None) {
            Ok(()) => keep,
            Err(_) => {
                let _ = self.ctx.clear_kv_cache_seq(Some(slot.seq as u32), None, None);
                0
            }
        };
        slot.cached.truncate(kept);
        kept
    }

    /// Replaces slot `to`'s cache with the first `count` tokens of slot `from`'s; returns how
    /// many tokens `to` now holds. llama.cpp copies between per-sequence caches whole, before
    /// the next decode; the copied tokens beyond `count` are dropped at once.
    fn copy_prefix(&mut self, from: usize, to: usize, count: usize) -> usize {
        let (source, target) = (self.slots[from].seq, self.slots[to].seq);
        let _ = self.ctx.clear_kv_cache_seq(Some(target as u32), None, None);
        if self.ctx.kv_cache_seq_cp(source, target, None, None).is_err() {
            self.slots[to].cached.clear();
            return 0;
        }
        self.slots[to].cached = self.slots[from].cached.clone();
        let kept = self.keep_prefix(to, count);
        tracing::info!(
            from = source,
            to = target,
            tokens = kept,
            "copied a cached prompt prefix between slots"
        );
        kept
    }

    /// Tokenizes a prompt and, when it does not fit the context, keeps its first `num_keep`
    /// tokens and its end, leaving room to generate.
    fn prompt_tokens(&self, request: &CompletionRequest) -> (Vec<LlamaToken>, u32) {
        let tokens = self.tokenize(&request.prompt);
        let ctx = self.context_length as usize;
        let limit = CompletionRequest::prompt_budget(ctx, request.num_predict);
        if tokens.len() <= limit {
            return (tokens, 0);
        }
        let keep = (request.num_keep as usize).min(limit / 2);
        let dropped = tokens.len() - limit;
        tracing::warn!(
            id = request.id,
            prompt = tokens.len(),
            context = ctx,
            dropped,
            "prompt longer than the context, truncated"
        );
        let mut cut = tokens[..keep].to_vec();
        cut.extend_from_slice(&tokens[keep + dropped..]);
        (cut, dropped as u32)
    }

    /// Builds one batch from every active slot, decodes it, and samples where logits are due.
    fn step(&mut self) {
        self.batch.clear();
        let mut budget = self.batch_size;
        // Generating slots first: each needs one position, and must never wait behind a prompt.
        for slot in &mut self.slots {
            let Some(active) = slot.active.as_mut() else { continue };
            active.logits_index = None;
            if let Some(token) = active.next_token {
                active.logits_index = Some(self.batch.n_tokens());
                let pos = slot.cached.len() as i32;
                if self.batch.add(token, pos, &[slot.seq], true).is_err() {
                    active.logits_index = None;
                    continue;
                }
                slot.cached.push(token);
                budget -= 1;
            }
        }
        // While streams are generating, a long prompt is read in small steps so that it never
        // stalls them for long: each step costs them one token's latency.
        if budget < self.batch_size {
            budget = budget.min(PREFILL_CHUNK_WHILE_DECODING);
        }
        for slot in &mut self.slots {
            let Some(active) = slot.active.as_mut() else { continue };
            if active.next_token.is_some() || budget == 0 {
                continue;
            }
            let start = slot.cached.len();
            let end = active.prompt.len().min(start + budget);
            for pos in start..end {
                let last = pos + 1 == active.prompt.len();
                let token = active.prompt[pos];
                if last {
                    active.logits_index = Some(self.batch.n_tokens());
                }
                if self.batch.add(token, pos as i32, &[slot.seq], last).is_err() {
                    break;
                }
                slot.cached.push(token);
                budget -= 1;
            }
        }
        if self.batch.n_tokens() == 0 {
            return;
        }
        if let Err(e) = self.ctx.decode(&mut self.batch) {
            tracing::error!("decode failed: {e}");
            self.fail_active(&format!("llama.cpp decode failed: {e}"));
            return;
        }
        for index in 0..self.slots.len() {
            let Some(logits_index) = self.slots[index].active.as_ref().and_then(|a| a.logits_index) else {
                continue;
            };
            self.sample(index, logits_index);
        }
    }

    fn sample(&mut self, index: usize, logits_index: i32) {
        let slot = &mut self.slots[index];
        let Some(active) = slot.active.as_mut() else { return };
        let token = active.sampler.sample(&self.ctx, logits_index, active.grammar.as_mut());
        if active.first_token_at.is_none() {
            active.first_token_at = Some(Instant::now());
        }
        let vocab = self.model.vocab();
        if vocab.is_eog(token) {
            return self.finish(index, DoneReason::Stop);
        }
        active.generated.push(token);
        self.piece_buf.clear();
        vocab.token_to_piece_into(token, &mut self.piece_buf, false, None);
        let id = active.id;
        match active.output.push(&self.piece_buf) {
            Emit::Stop(text) => {
                if !text.is_empty() {
                    self.send(RunnerMessage::Piece { id, text });
                }
                return self.finish(index, DoneReason::Stop);
            }
            Emit::Text(text) => {
                if !text.is_empty() {
                    self.send(RunnerMessage::Piece { id, text });
                }
            }
        }
        let slot = &mut self.slots[index];
        let Some(active) = slot.active.as_mut() else { return };
        let predicted_enough = active.num_predict >= 0 && active.generated.len() >= active.num_predict as usize;
        let context_full = slot.cached.len() + active.extra_cells + 1 >= self.context_length as usize;
        if predicted_enough || context_full {
            return self.finish(index, DoneReason::Length);
        }
        active.next_token = Some(token);
    }

    /// Ends the slot's request: flushes held-back text and reports the metrics.
    fn finish(&mut self, index: usize, reason: DoneReason) {
        let Some(mut active) = self.slots[index].active.take() else {
            return;
        };
        if reason == DoneReason::Cancelled {
            tracing::info!(
                id = active.id,
                prompt_evaluated = self.slots[index].cached.len().min(active.prompt.len()),
                prompt_tokens = active.prompt.len(),
                generated = active.generated.len(),
                "request cancelled"
            );
        } else {
            let tail = active.output.finish();
            if !tail.is_empty() {
                self.send(RunnerMessage::Piece {
                    id: active.id,
                    text: tail,
                });
            }
        }
        let now = Instant::now();
        let first = active.first_token_at.unwrap_or(now);
        let tokens = active.return_tokens.then(|| {
            active
                .prompt
                .iter()
                .chain(active.generated.iter())
                .filter(|&&t| !is_image_position(t))
                .map(|t| t.0)
                .collect()
        });
        let metrics = CompletionMetrics {
            done_reason: reason,
            queue_duration_ns: nanos(active.queued),
            prompt_eval_count: active.prompt.len() as u32,
            prompt_cached_count: active.cached_count,
            prompt_eval_duration_ns: nanos(first - active.prefill_started),
            eval_count: active.generated.len() as u32,
            eval_duration_ns: nanos(now - first),
            truncated_tokens: active.truncated,
            tokens,
        };
        self.send(RunnerMessage::Done { id: active.id, metrics });
    }

    /// Fails every active request after an engine error, and forgets their caches.
    fn fail_active(&mut self, error: &str) {
        for slot in &mut self.slots {
            if let Some(active) = slot.active.take() {
                let _ = self.events.send(RunnerMessage::Failed {
                    id: active.id,
                    error: error.to_string(),
                });
                let _ = self.ctx.clear_kv_cache_seq(Some(slot.seq as u32), None, None);
                slot.cached.clear();
            }
        }
    }
}

fn common_prefix(a: &[LlamaToken], b: &[LlamaToken]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn cancelled_metrics() -> CompletionMetrics {
    CompletionMetrics {
        done_reason: DoneReason::Cancelled,
        queue_duration_ns: 0,
        prompt_eval_count: 0,
        prompt_cached_count: 0,
        prompt_eval_duration_ns: 0,
        eval_count: 0,
        eval_duration_ns: 0,
        truncated_tokens: 0,
        tokens: None,
    }
}
