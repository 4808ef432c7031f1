//! Generate and chat: validate a request, render its prompt, get a runner from the
//! scheduler and stream what the runner produces. Handlers only translate to JSON.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use herd_proto::{CompletionMetrics, CompletionRequest, DoneReason, OutputFormat};
use serde_json::Value;

use crate::api::types::{ChatRequest, GenerateRequest};
use crate::config::Config;
use crate::embedding::Shape;
use crate::error::HerdError;
use crate::format::parse_format;
use crate::gguf;
use crate::images::{check_images, ImageMarkers};
use crate::keep_alive::KeepAlive;
use crate::metrics;
use crate::model::Model;
use crate::options::ResolvedOptions;
use crate::placement::{compute_bytes, LoadCost};
use crate::prompt::ChatTemplate;
use crate::scheduler::{Lease, LoadRequest, Scheduler};
use crate::store::{ModelName, Store, StoreError};
use crate::supervisor::{Completion, CompletionEvent, LoadSpec, RunnerClient, WeightsKey};
use crate::template::{Message, Values};
use crate::thinking::{Think, ThinkingParser};
use crate::tools::{closing_tag, parse_tools, ToolCall, ToolCallParser, ToolChoice};

/// Ollama's template for models that have none: the prompt as is.
const PLAIN_TEMPLATE: &str = "{{ .Prompt }}";

/// Prompt tokens an image is counted as when a chat is cut to fit the context, as Ollama
/// counts them (the runner checks the real number).
const IMAGE_TOKEN_ESTIMATE: usize = 768;

/// What a generate or chat request turned into.
pub enum Outcome {
    /// An empty prompt: the model is loaded now.
    Loaded {
        /// Time spent getting the runner.
        load_duration: Duration,
    },
    /// An empty prompt with `keep_alive: 0`: the model is unloaded.
    Unloaded,
    /// `_debug_render_only`: the prompt, not run, and how many images it holds.
    Rendered { prompt: String, image_count: usize },
    /// Generation has started.
    Streaming(Box<Generation>),
}

/// A generation in progress; dropping it cancels the generation in the runner.
pub struct Generation {
    completion: Completion,
    /// Keeps the runner loaded while the stream lives.
    _lease: Lease,
    /// Counts this request in flight while the stream lives.
    _admission: Admission,
    started: Instant,
    load_duration: Duration,
    /// When the first piece of text arrived.
    first_piece_at: Option<Instant>,
    /// Prompt tokens dropped by the server (whole messages) before the runner cut more.
    truncated_messages_tokens: u32,
    /// Splits reasoning from the answer, when the model reasons.
    thinking: Option<ThinkingParser>,
    /// Splits tool calls out of the text, when tools were offered.
    tool_calls: Option<ToolCallParser>,
    /// Events made from one runner message, not yet taken.
    pending: VecDeque<GenerationEvent>,
}

/// What to embed, and how.
pub struct EmbedJob<'a> {
    /// Model name.
    pub model: &'a str,
    /// The texts; none only loads the model.
    pub inputs: Vec<String>,
    /// Cut inputs longer than the context instead of refusing them.
    pub truncate: bool,
    /// Cut and normalise the vectors.
    pub shape: Shape,
    /// Per-request options.
    pub options: Option<&'a serde_json::Map<String, Value>>,
    /// How long the model stays loaded afterwards.
    pub keep_alive: Option<&'a Value>,
}

/// The vectors of an [`EmbedJob`].
pub struct Embedded {
    /// One per input, in order.
    pub vectors: Vec<Vec<f32>>,
    /// Tokens read.
    pub prompt_tokens: u32,
    /// Time spent getting the runner.
    pub load_duration: Duration,
    /// Request start to now.
    pub total_duration: Duration,
}

impl Embedded {
    /// What the `Server-Timing` header tells of it.
    pub fn timing(&self) -> Timing {
        Timing::load_only(self.load_duration)
    }
}

/// One step of a [`Generation`].
pub enum GenerationEvent {
    /// Generated text.
    Text(String),
    /// Generated reasoning (`think`).
    Thinking(String),
    /// Tool calls, each whole.
    ToolCalls(Vec<ToolCall>),
    /// The end, with the metrics of the final chunk.
    Done(FinalMetrics),
    /// A failure after streaming began: the input could not be used (400) or generating failed.
    Error(HerdError),
}

/// The final chunk's numbers.
pub struct FinalMetrics {
    /// `stop` or `length`.
    pub done_reason: &'static str,
    /// Request start to now.
    pub total_duration: Duration,
    /// Time spent getting the runner.
    pub load_duration: Duration,
    /// Prompt and generation counts and timings.
    pub runner: CompletionMetrics,
    /// Prompt tokens dropped to fit the context.
    pub truncated_tokens: u32,
}

/// Where a request's time went, as the `Server-Timing` header tells it; a streamed answer
/// knows only its load time when its headers leave.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Timing {
    /// Waiting for the runner to load (or for another load to finish).
    pub load: Duration,
    /// Waiting in the runner for a free slot.
    pub queue: Option<Duration>,
    /// Evaluating the prompt.
    pub prompt_eval: Option<Duration>,
    /// Generating.
    pub decode: Option<Duration>,
}

impl Timing {
    /// Only the load is known.
    fn load_only(load: Duration) -> Self {
        Self {
            load,
            ..Self::default()
        }
    }
}

impl FinalMetrics {
    /// The whole request's timing.
    pub fn timing(&self) -> Timing {
        Timing {
            load: self.load_duration,
            queue: Some(Duration::from_nanos(self.runner.queue_duration_ns)),
            prompt_eval: Some(Duration::from_nanos(self.runner.prompt_eval_duration_ns)),
            decode: Some(Duration::from_nanos(self.runner.eval_duration_ns)),
        }
    }
}

impl Generation {
    /// What is known of the timing before the first event: the load.
    pub fn timing(&self) -> Timing {
        Timing::load_only(self.load_duration)
    }

    /// The next event; `None` after `Done` or `Error`.
    pub async fn next(&mut self) -> Option<GenerationEvent> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some(event);
            }
            match self.completion.next().await? {
                CompletionEvent::Piece(text) => {
                    self.first_piece_at.get_or_insert_with(Instant::now);
                    let text = match self.thinking.as_mut() {
                        None => text,
                        Some(parser) => {
                            let split = parser.push(&text);
                            self.queue(GenerationEvent::Thinking(split.thinking));
                            split.content
                        }
                    };
                    self.answer(text);
                }
                CompletionEvent::Failed(error) => return Some(GenerationEvent::Error(HerdError::Internal(error))),
                CompletionEvent::Rejected(error) => return Some(GenerationEvent::Error(HerdError::BadRequest(error))),
                CompletionEvent::Done(runner) => {
                    let first_token = self.first_piece_at.map(|at| at - self.started);
                    metrics::generation_finished(first_token, &runner);
                    if let Some(rest) = self.thinking.as_mut().map(ThinkingParser::finish) {
                        self.queue(GenerationEvent::Thinking(rest.thinking));
                        self.answer(rest.content);
                    }
                    if let Some(rest) = self.tool_calls.as_mut().map(ToolCallParser::finish) {
                        self.queue(GenerationEvent::Text(rest));
                    }
                    self.pending.push_back(GenerationEvent::Done(FinalMetrics {
                        done_reason: match runner.done_reason {
                            DoneReason::Length => "length",
                            DoneReason::Stop | DoneReason::Cancelled => "stop",
                        },
                        total_duration: self.started.elapsed(),
                        load_duration: self.load_duration,
                        truncated_tokens: runner.truncated_tokens + self.truncated_messages_tokens,
                        runner,
                    }));
                }
            }
        }
    }

    /// Answer text: through the tool-call parser when tools were offered.
    fn answer(&mut self, text: String) {
        match self.tool_calls.as_mut() {
            None => self.queue(GenerationEvent::Text(text)),
            Some(parser) => {
                let parsed = parser.push(&text);
                self.queue(GenerationEvent::Text(parsed.content));
                if !parsed.calls.is_empty() {
                    self.pending.push_back(GenerationEvent::ToolCalls(parsed.calls));
                }
            }
        }
    }

    /// Queues an event, unless it carries no text.
    fn queue(&mut self, event: GenerationEvent) {
        match &event {
            GenerationEvent::Text(text) | GenerationEvent::Thinking(text) if text.is_empty() => {}
            _ => self.pending.push_back(event),
        }
    }
}

/// Runs generate and chat requests.
pub struct Inference {
    config: Arc<Config>,
    store: Arc<Store>,
    scheduler: Scheduler,
    /// What the GGUF headers say, by weights path, read once.
    gguf_facts: Mutex<HashMap<PathBuf, GgufFacts>>,
    /// Generate and chat requests being served: running or waiting for a slot.
    in_flight: Arc<AtomicUsize>,
}

/// What a request holds once its runner is ready.
struct Serving {
    admission: Admission,
    lease: Lease,
    started: Instant,
    load_duration: Duration,
}

/// One admitted request; it leaves the count of requests in flight when dropped.
struct Admission(Arc<AtomicUsize>);

impl Drop for Admission {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// What a model's GGUF header tells inference.
#[derive(Clone, Debug, Default)]
struct GgufFacts {
    /// `tokenizer.chat_template`, the fallback when there is no template layer.
    chat_template: Option<String>,
    /// How its KV cache grows, for the memory estimate.
    kv_layout: Option<gguf::KvLayout>,
    /// Its weights by layer, for GPU placement.
    weights: gguf::LayerWeights,
    /// `<arch>.embedding_length` and `<arch>.attention.head_count`, for the compute buffers.
    embedding_length: u64,
    head_count: u64,
}

/// What both endpoints share after validation.
struct Prepared {
    model: Model,
    template: ChatTemplate,
    options: ResolvedOptions,
    load: LoadRequest,
}

impl Prepared {
    /// Images need a model with a vision projector: Ollama's 400 for one without.
    fn check_vision(&self, has_images: bool) -> Result<(), HerdError> {
        if has_images && self.model.projector_path.is_none() {
            return Err(HerdError::bad_request(format!(
                "{} does not support vision",
                self.model.name.display_long()
            )));
        }
        Ok(())
    }
}

impl ImageMarkers {
    /// `_debug_render_only`'s answer for `rendered`.
    fn rendered(&self, rendered: &str) -> Outcome {
        Outcome::Rendered {
            prompt: self.display(rendered),
            image_count: self.count(),
        }
    }
}

impl Inference {
    /// An inference front over the store and scheduler.
    pub fn new(config: Arc<Config>, store: Arc<Store>, scheduler: Scheduler) -> Self {
        Self {
            config,
            store,
            scheduler,
            gguf_facts: Mutex::default(),
            in_flight: Arc::default(),
        }
    }

    /// What `/metrics` reports of loaded runners and waiting requests now.
    pub fn snapshot(&self) -> metrics::Snapshot {
        let occupancy = self.scheduler.occupancy();
        let in_flight = self.in_flight.load(Ordering::SeqCst);
        metrics::Snapshot {
            loaded_models: occupancy.loaded,
            in_flight,
            queued: in_flight.saturating_sub(occupancy.serving),
        }
    }

    /// Admits a request unless `num_parallel` run and `max_queue` already wait: Ollama's 503.
    fn admit(&self) -> Result<Admission, HerdError> {
        let limit = (self.config.num_parallel + self.config.max_queue) as usize;
        let admitted = self
            .in_flight
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| (n < limit).then_some(n + 1));
        match admitted {
            Ok(_) => Ok(Admission(self.in_flight.clone())),
            Err(_) => Err(HerdError::Busy),
        }
    }

    fn prepare(
        &self,
        model_name: &str,
        options: Option<&serde_json::Map<String, Value>>,
        keep_alive: Option<&Value>,
        template_override: Option<&str>,
    ) -> Result<Prepared, HerdError> {
        if model_name.is_empty() {
            return Err(HerdError::bad_request("model is required"));
        }
        let model = Model::open(&self.store, model_name)?;
        let options = ResolvedOptions::resolve(&self.config, &model.params, options)?;
        // The request's keep_alive, else the model's own (`PARAMETER keep_alive`).
        let keep_alive = keep_alive
            .filter(|v| !v.is_null())
            .map(KeepAlive::from_json)
            .transpose()
            .map_err(HerdError::BadRequest)?
            .or(options.keep_alive);
        let template = match (template_override, &model.template) {
            (Some(text), _) if !text.is_empty() => ChatTemplate::go(text)?,
            (_, Some(text)) => ChatTemplate::go(text)?,
            _ => match self.gguf_facts(&model.model_path).chat_template {
                Some(jinja) => ChatTemplate::Jinja(jinja),
                None => ChatTemplate::go(PLAIN_TEMPLATE)?,
            },
        };
        let cost = self.load_cost(&model, &options);
        let load = LoadRequest {
            name: model.stored.name.to_string(),
            digest: model.stored.digest.hex().to_string(),
            spec: LoadSpec {
                model_path: model.model_path.clone(),
                adapter_path: model.adapter_path.clone(),
                projector_path: model.projector_path.clone(),
                context_length: options.num_ctx,
                parallel: options.num_parallel,
                threads: options.num_thread,
                batch_size: options.num_batch,
                num_gpu: options.num_gpu,
            },
            keep_alive,
            cost,
        };
        Ok(Prepared {
            model,
            template,
            options,
            load,
        })
    }

    /// What a runner of `model` with `options` takes: its weights by layer, adapter, KV cache
    /// and compute buffers (placed on a GPU or not when it loads).
    fn load_cost(&self, model: &Model, options: &ResolvedOptions) -> LoadCost {
        let facts = self.gguf_facts(&model.model_path);
        let file_size = |path: &std::path::Path| std::fs::metadata(path).map_or(0, |m| m.len());
        // llama.cpp clamps a longer context to the training one.
        let training_context = facts.kv_layout.map_or(u64::MAX, |kv| kv.training_context);
        let (context, parallel, batch) = (
            u64::from(options.num_ctx).min(training_context),
            u64::from(options.num_parallel),
            u64::from(options.num_batch),
        );
        let mut weights = facts.weights;
        if weights.blocks.is_empty() {
            // No layer table (an odd file): count the whole file as CPU weights.
            weights.embedding = file_size(&model.model_path);
        }
        LoadCost {
            weights,
            kv_cache: facts.kv_layout.map_or(0, |kv| kv.cache_bytes(context, parallel, batch)),
            compute: compute_bytes(facts.embedding_length, facts.head_count, context, batch),
            cpu_only: [&model.adapter_path, &model.projector_path]
                .into_iter()
                .flatten()
                .map(|path| file_size(path))
                .sum(),
        }
    }

    fn gguf_facts(&self, path: &std::path::Path) -> GgufFacts {
        let read = || {
            let info = gguf::read_gguf_path(path, gguf::ReadOptions { keep_arrays_up_to: 0 }).ok();
            GgufFacts {
                chat_template: info.as_ref().and_then(|i| i.chat_template().map(String::from)),
                kv_layout: info.as_ref().and_then(gguf::GgufInfo::kv_layout),
                weights: info.as_ref().map(gguf::GgufInfo::layer_weights).unwrap_or_default(),
                embedding_length: info.as_ref().and_then(gguf::GgufInfo::embedding_length).unwrap_or(0),
                head_count: info.as_ref().and_then(gguf::GgufInfo::head_count).unwrap_or(0),
            }
        };
        match self.gguf_facts.lock() {
            Ok(mut cache) => cache.entry(path.to_path_buf()).or_insert_with(read).clone(),
            Err(_) => read(),
        }
    }

    /// Loads or unloads for an empty prompt.
    async fn load_only(&self, prepared: &Prepared) -> Result<Outcome, HerdError> {
        if prepared.load.keep_alive == Some(KeepAlive::For(Duration::ZERO)) {
            self.scheduler.unload(&prepared.load.spec.weights()).await;
            return Ok(Outcome::Unloaded);
        }
        let (_lease, load_duration) = self.scheduler.acquire(&prepared.load).await?;
        Ok(Outcome::Loaded { load_duration })
    }

    /// `/api/generate`.
    pub async fn generate(&self, request: &GenerateRequest) -> Result<Outcome, HerdError> {
        // Ollama's total_duration counts from the request's arrival.
        let started = Instant::now();
        let admission = self.admit()?;
        let images = request.images.as_deref().unwrap_or_default();
        check_images(images)?;
        let format = parse_format(request.format.as_ref()).map_err(HerdError::BadRequest)?;
        if request.raw && (!request.template.is_empty() || !request.system.is_empty() || request.context.is_some()) {
            return Err(HerdError::bad_request(
                "raw mode does not support template, system, or context",
            ));
        }
        let template_override = (!request.template.is_empty()).then_some(request.template.as_str());
        let prepared = self.prepare(
            &request.model,
            request.options.as_ref(),
            request.keep_alive.as_ref(),
            template_override,
        )?;
        if request.prompt.is_empty() && request.suffix.is_empty() && !request.debug_render_only {
            return self.load_only(&prepared).await;
        }
        prepared.check_vision(!images.is_empty())?;
        let mut markers = ImageMarkers::default();
        let user_prompt = if request.raw {
            markers.place_raw(&request.prompt, images)
        } else {
            markers.place(&request.prompt, images)
        };
        let think = resolve_think(
            request.think.as_ref(),
            &prepared.template,
            &request.model,
            format.is_some(),
            false,
        )?;
        if !request.suffix.is_empty() && !prepared.template.supports_insert() {
            return Err(HerdError::bad_request(format!(
                "{} does not support insert",
                prepared.model.name.display_long()
            )));
        }
        let values = if request.raw {
            None
        } else if !request.suffix.is_empty() {
            Some(Values {
                prompt: user_prompt.clone(),
                suffix: request.suffix.clone(),
                ..Default::default()
            })
        } else {
            let mut messages = Vec::new();
            let system = if request.system.is_empty() {
                prepared.model.system.clone()
            } else {
                Some(request.system.clone())
            };
            if let Some(system) = system.filter(|s| !s.is_empty()) {
                messages.push(message("system", system));
            }
            if request.context.is_none() {
                messages.extend(prepared.model.messages.iter().cloned());
            }
            messages.push(message("user", user_prompt.clone()));
            Some(Values {
                messages,
                think: think.setting.as_ref().map(|t| t.enabled),
                think_level: think.setting.as_ref().map(|t| t.level.clone()),
                ..Default::default()
            })
        };
        let rendered = match &values {
            Some(values) => prepared.template.render(values)?,
            None => user_prompt,
        };
        if request.debug_render_only && request.context.is_none() {
            return Ok(markers.rendered(&rendered));
        }
        let (lease, load_duration) = self.scheduler.acquire(&prepared.load).await?;
        let prompt = match &request.context {
            Some(context) if !context.is_empty() => {
                let mut text = lease.client().detokenize(context.clone()).await?;
                text.push_str(&rendered);
                text
            }
            _ => rendered,
        };
        if request.debug_render_only {
            return Ok(markers.rendered(&prompt));
        }
        let (prompt, images) = markers.extract(&prompt);
        let grammar = compile(&lease, format).await?;
        let serving = Serving {
            admission,
            lease,
            started,
            load_duration,
        };
        let thinking = think.parser(&prompt);
        let request = CompletionRequest {
            prompt,
            return_tokens: !request.raw,
            grammar,
            images,
            ..completion_request(&prepared.options)
        };
        self.start(request, serving, 0, thinking, None).await
    }

    /// `/api/delete`: removes the model's manifest and the blobs nothing else uses; when its
    /// weights went with it, its runner is stopped (once its requests finish).
    pub async fn delete(&self, name: &ModelName) -> Result<(), StoreError> {
        let weights = Model::open(&self.store, &name.display_long()).ok().map(|m| WeightsKey {
            model: m.model_path,
            adapter: m.adapter_path,
            projector: m.projector_path,
        });
        self.store.delete(name)?;
        if let Some(weights) = weights {
            if weights.files().any(|path| !path.exists()) {
                self.scheduler.unload(&weights).await;
            }
        }
        Ok(())
    }

    /// `/api/embed`, `/api/embeddings` and `/v1/embeddings`: all inputs in one runner call.
    pub async fn embed(&self, job: EmbedJob<'_>) -> Result<Embedded, HerdError> {
        let started = Instant::now();
        let _admission = self.admit()?;
        let prepared = self.prepare(job.model, job.options, job.keep_alive, None)?;
        if job.inputs.is_empty() {
            let load_duration = match self.load_only(&prepared).await? {
                Outcome::Loaded { load_duration } => load_duration,
                _ => Duration::ZERO,
            };
            return Ok(Embedded {
                vectors: Vec::new(),
                prompt_tokens: 0,
                load_duration,
                total_duration: started.elapsed(),
            });
        }
        let (lease, load_duration) = self.scheduler.acquire(&prepared.load).await?;
        let client = lease.client();
        if !job.truncate {
            let context_length = client.facts.context_length as usize;
            for input in &job.inputs {
                if client.tokenize(input).await?.len() > context_length {
                    return Err(HerdError::bad_request("the input length exceeds the context length"));
                }
            }
        }
        let (vectors, prompt_tokens) = client.embed(job.inputs).await?;
        let vectors = vectors
            .into_iter()
            .map(|vector| job.shape.apply(vector))
            .collect::<Result<_, _>>()?;
        Ok(Embedded {
            vectors,
            prompt_tokens,
            load_duration,
            total_duration: started.elapsed(),
        })
    }

    /// `/api/chat`.
    pub async fn chat(&self, request: &ChatRequest) -> Result<Outcome, HerdError> {
        let started = Instant::now();
        let admission = self.admit()?;
        let format = parse_format(request.format.as_ref()).map_err(HerdError::BadRequest)?;
        for m in &request.messages {
            check_images(m.images.as_deref().unwrap_or_default())?;
        }
        let prepared = self.prepare(
            &request.model,
            request.options.as_ref(),
            request.keep_alive.as_ref(),
            None,
        )?;
        let tools = parse_tools(request.tools.as_deref().unwrap_or_default())?;
        let choice = ToolChoice::parse(request.tool_choice.as_ref(), &tools)?;
        let offered = !tools.is_empty() && choice != ToolChoice::None;
        if offered && !prepared.template.supports_tools() {
            let name = prepared.model.name.display_long();
            return Err(HerdError::bad_request(format!("{name} does not support tools")));
        }
        let think = resolve_think(
            request.think.as_ref(),
            &prepared.template,
            &request.model,
            format.is_some() || choice.forced_call_schema(&tools).is_some(),
            request.relax_thinking,
        )?;
        let tag = prepared.template.tool_call_tag();
        let format = match (format, choice.forced_call_schema(&tools)) {
            (Some(_), Some(_)) => {
                return Err(HerdError::bad_request(
                    "format cannot be combined with a tool_choice that forces a call",
                ))
            }
            (None, Some(schema)) => Some(OutputFormat::ToolCall {
                schema: schema.to_string(),
                prefix: if tag.is_empty() {
                    String::new()
                } else {
                    format!("{tag}\n")
                },
                suffix: match closing_tag(&tag) {
                    closing if closing.is_empty() => closing,
                    closing => format!("\n{closing}"),
                },
            }),
            (format, None) => format,
        };
        prepared.check_vision(
            request
                .messages
                .iter()
                .any(|m| m.images.as_ref().is_some_and(|i| !i.is_empty())),
        )?;
        let rendered_tools = offered.then(|| Value::Array(request.tools.clone().unwrap_or_default()));
        let tool_calls = offered.then(|| ToolCallParser::new(&tag, &tools));
        if request.messages.is_empty() && !request.debug_render_only {
            return self.load_only(&prepared).await;
        }
        let mut messages = prepared.model.messages.clone();
        let first_is_system = request.messages.first().is_some_and(|m| m.role == "system");
        if let Some(system) = prepared
            .model
            .system
            .clone()
            .filter(|s| !s.is_empty() && !first_is_system)
        {
            messages.insert(0, message("system", system));
        }
        let mut markers = ImageMarkers::default();
        messages.extend(request.messages.iter().cloned().map(|mut m| {
            m.role = m.role.to_lowercase();
            if let Some(images) = m.images.take() {
                m.content = markers.place(&m.content, &images);
            }
            m
        }));
        let render = |messages: Vec<Message>| {
            prepared.template.render(&Values {
                messages,
                tools: rendered_tools.clone(),
                think: think.setting.as_ref().map(|t| t.enabled),
                think_level: think.setting.as_ref().map(|t| t.level.clone()),
                ..Default::default()
            })
        };
        if request.debug_render_only {
            return Ok(markers.rendered(&render(messages)?));
        }
        let (lease, load_duration) = self.scheduler.acquire(&prepared.load).await?;
        let budget = CompletionRequest::prompt_budget(prepared.options.num_ctx as usize, prepared.options.num_predict);
        let (prompt, dropped) = fit_messages(lease.client(), messages, &markers, budget, render).await?;
        let (prompt, images) = markers.extract(&prompt);
        let grammar = compile(&lease, format).await?;
        let serving = Serving {
            admission,
            lease,
            started,
            load_duration,
        };
        let thinking = think.parser(&prompt);
        let request = CompletionRequest {
            prompt,
            grammar,
            images,
            ..completion_request(&prepared.options)
        };
        self.start(request, serving, dropped, thinking, tool_calls).await
    }

    /// Sends the completion to the runner. With images, the first event is awaited before
    /// any reply: an image the runner cannot use is a 400 even for a streamed request, as
    /// Ollama answers an error met before its first chunk.
    async fn start(
        &self,
        request: CompletionRequest,
        serving: Serving,
        truncated_messages_tokens: u32,
        thinking: Option<ThinkingParser>,
        tool_calls: Option<ToolCallParser>,
    ) -> Result<Outcome, HerdError> {
        let Serving {
            admission,
            lease,
            started,
            load_duration,
        } = serving;
        let has_images = !request.images.is_empty();
        let completion = lease.client().complete(request)?;
        let mut generation = Box::new(Generation {
            completion,
            _lease: lease,
            _admission: admission,
            started,
            load_duration,
            first_piece_at: None,
            truncated_messages_tokens,
            thinking,
            tool_calls,
            pending: VecDeque::new(),
        });
        if has_images {
            match generation.next().await {
                Some(GenerationEvent::Error(error @ HerdError::BadRequest(_))) => return Err(error),
                Some(event) => generation.pending.push_front(event),
                None => {}
            }
        }
        Ok(Outcome::Streaming(generation))
    }
}

/// A completion with the request's options and no prompt yet.
fn completion_request(options: &ResolvedOptions) -> CompletionRequest {
    CompletionRequest {
        id: 0,
        prompt: String::new(),
        sampling: options.sampling.clone(),
        num_predict: options.num_predict,
        num_keep: options.num_keep,
        stop: options.stop.clone(),
        return_tokens: false,
        grammar: None,
        images: Vec::new(),
    }
}

/// The grammar for `format`, made by the runner (a schema it cannot hold the model to is a 400).
async fn compile(lease: &Lease, format: Option<OutputFormat>) -> Result<Option<String>, HerdError> {
    let Some(format) = format else { return Ok(None) };
    match lease.client().compile_format(format).await? {
        Ok(grammar) => Ok(Some(grammar)),
        Err(why) => Err(HerdError::BadRequest(why)),
    }
}

fn message(role: &str, content: String) -> Message {
    Message {
        role: role.to_string(),
        content,
        ..Default::default()
    }
}

/// `think` as it applies to one request.
struct ResolvedThink {
    /// What the template is told (`.Think`, `.ThinkLevel`, `.IsThinkSet`).
    setting: Option<Think>,
    /// The reasoning tags, when the output is to be split.
    tags: Option<(String, String)>,
}

impl ResolvedThink {
    /// The parser for output that follows `prompt`: already inside the reasoning when the
    /// prompt ends with the opening tag.
    fn parser(&self, prompt: &str) -> Option<ThinkingParser> {
        let (opening, closing) = self.tags.as_ref()?;
        let parser = ThinkingParser::new(opening, closing);
        Some(if prompt.trim_end().ends_with(opening.as_str()) {
            parser.opened()
        } else {
            parser
        })
    }
}

/// The request's `think` against what the template can do. As Ollama: a model that reasons
/// does so unless told not to, and `think` on one that does not is a 400 (or ignored where
/// the caller relaxes it, as the Anthropic layer does). A constrained answer (`format`, a
/// forced tool call) cannot start with free reasoning: with it, `think` defaults off and
/// asking for both is a 400.
fn resolve_think(
    think: Option<&Value>,
    template: &ChatTemplate,
    model: &str,
    constrained: bool,
    relaxed: bool,
) -> Result<ResolvedThink, HerdError> {
    let asked = Think::parse(think)?;
    let Some(tags) = template.thinking_tags() else {
        return match asked {
            Some(think) if think.enabled && !relaxed => {
                Err(HerdError::bad_request(format!("\"{model}\" does not support thinking")))
            }
            asked => Ok(ResolvedThink {
                setting: asked.filter(|t| !t.enabled),
                tags: None,
            }),
        };
    };
    let setting = match asked {
        Some(think) if think.enabled && constrained => {
            return Err(HerdError::bad_request(
                "think cannot be combined with format or a forced tool call: the answer must start constrained",
            ))
        }
        None if constrained => None,
        None => Some(Think {
            enabled: true,
            level: String::new(),
        }),
        asked => asked,
    };
    let tags = setting.as_ref().filter(|t| t.enabled).map(|_| tags);
    Ok(ResolvedThink { setting, tags })
}

/// Ollama's chat truncation: when the rendered conversation does not fit `budget` tokens, drop the
/// oldest non-system messages (always keeping the last one and every system message) until it
/// does. Returns the prompt and how many tokens were dropped.
async fn fit_messages(
    client: &Arc<RunnerClient>,
    messages: Vec<Message>,
    markers: &ImageMarkers,
    budget: usize,
    render: impl Fn(Vec<Message>) -> Result<String, HerdError>,
) -> Result<(String, u32), HerdError> {
    let measure = |text: String| async move {
        let tokens = client.tokenize(&text).await?.len() + markers.count_in(&text) * IMAGE_TOKEN_ESTIMATE;
        Ok::<_, HerdError>((text, tokens))
    };
    let (full, full_tokens) = measure(render(messages.clone())?).await?;
    if full_tokens <= budget || messages.len() < 2 {
        return Ok((full, 0));
    }
    let last = messages.len() - 1;
    // The messages from `start` on, and every system message before it.
    let keeping = |start: usize| -> Vec<Message> {
        messages[..start]
            .iter()
            .filter(|m| m.role == "system")
            .chain(&messages[start..])
            .cloned()
            .collect()
    };
    let mut keep_from = last;
    let mut best = None;
    for start in (0..last).rev() {
        let (text, tokens) = measure(render(keeping(start))?).await?;
        if tokens > budget {
            break;
        }
        keep_from = start;
        best = Some((text, tokens));
    }
    let (prompt, tokens) = match best {
        Some(found) => found,
        None => measure(render(keeping(last))?).await?,
    };
    let dropped = full_tokens.saturating_sub(tokens) as u32;
    tracing::warn!(
        dropped_messages = keep_from,
        dropped_tokens = dropped,
        budget,
        "conversation longer than the context; oldest messages dropped"
    );
    Ok((prompt, dropped))
}
