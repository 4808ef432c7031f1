//! Generate and chat: validate a request, render its prompt, get a runner from the
//! scheduler and stream what the runner produces. Handlers only translate to JSON.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use herd_proto::{CompletionMetrics, CompletionRequest, DoneReason};
use serde_json::Value;

use crate::api::types::{ChatRequest, GenerateRequest};
use crate::config::Config;
use crate::error::HerdError;
use crate::gguf;
use crate::keep_alive::KeepAlive;
use crate::model::Model;
use crate::options::ResolvedOptions;
use crate::placement::{compute_bytes, LoadCost};
use crate::prompt::ChatTemplate;
use crate::scheduler::{Lease, LoadRequest, Scheduler};
use crate::store::Store;
use crate::supervisor::{Completion, CompletionEvent, LoadSpec, RunnerClient};
use crate::template::{Message, Values};

/// Ollama's template for models that have none: the prompt as is.
const PLAIN_TEMPLATE: &str = "{{ .Prompt }}";

/// What a generate or chat request turned into.
pub enum Outcome {
    /// An empty prompt: the model is loaded now.
    Loaded {
        /// Time spent getting the runner.
        load_duration: Duration,
    },
    /// An empty prompt with `keep_alive: 0`: the model is unloaded.
    Unloaded,
    /// `_debug_render_only`: the prompt, not run.
    Rendered(String),
    /// Generation has started.
    Streaming(Generation),
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
    /// Prompt tokens dropped by the server (whole messages) before the runner cut more.
    truncated_messages_tokens: u32,
}

/// One step of a [`Generation`].
pub enum GenerationEvent {
    /// Generated text.
    Text(String),
    /// The end, with the metrics of the final chunk.
    Done(FinalMetrics),
    /// A failure after streaming began.
    Error(String),
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

impl Generation {
    /// The next event; `None` after `Done` or `Error`.
    pub async fn next(&mut self) -> Option<GenerationEvent> {
        Some(match self.completion.next().await? {
            CompletionEvent::Piece(text) => GenerationEvent::Text(text),
            CompletionEvent::Failed(error) => GenerationEvent::Error(error),
            CompletionEvent::Done(runner) => GenerationEvent::Done(FinalMetrics {
                done_reason: match runner.done_reason {
                    DoneReason::Length => "length",
                    DoneReason::Stop | DoneReason::Cancelled => "stop",
                },
                total_duration: self.started.elapsed(),
                load_duration: self.load_duration,
                truncated_tokens: runner.truncated_tokens + self.truncated_messages_tokens,
                runner,
            }),
        })
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
            cpu_only: model.adapter_path.as_deref().map_or(0, file_size),
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
        reject_unsupported(
            request.format.as_ref(),
            request.images.as_deref(),
            request.think.as_ref(),
            &request.model,
        )?;
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
                prompt: request.prompt.clone(),
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
            messages.push(message("user", request.prompt.clone()));
            Some(Values {
                messages,
                ..Default::default()
            })
        };
        let rendered = match &values {
            Some(values) => prepared.template.render(values)?,
            None => request.prompt.clone(),
        };
        if request.debug_render_only && request.context.is_none() {
            return Ok(Outcome::Rendered(rendered));
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
            return Ok(Outcome::Rendered(prompt));
        }
        let return_tokens = !request.raw;
        let serving = Serving {
            admission,
            lease,
            started,
            load_duration,
        };
        self.start(prepared.options, serving, prompt, 0, return_tokens)
    }

    /// `/api/chat`.
    pub async fn chat(&self, request: &ChatRequest) -> Result<Outcome, HerdError> {
        let started = Instant::now();
        let admission = self.admit()?;
        reject_unsupported(request.format.as_ref(), None, request.think.as_ref(), &request.model)?;
        if request
            .messages
            .iter()
            .any(|m| m.images.as_ref().is_some_and(|i| !i.is_empty()))
        {
            return Err(HerdError::bad_request(format!(
                "{} does not support vision",
                request.model
            )));
        }
        let prepared = self.prepare(
            &request.model,
            request.options.as_ref(),
            request.keep_alive.as_ref(),
            None,
        )?;
        if request.tools.as_ref().is_some_and(|t| !t.is_empty()) {
            let name = prepared.model.name.display_long();
            if !prepared.template.supports_tools() {
                return Err(HerdError::bad_request(format!("{name} does not support tools")));
            }
            return Err(HerdError::bad_request(format!(
                "tools are not supported by herd yet ({name} could take them)"
            )));
        }
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
        messages.extend(request.messages.iter().cloned().map(|mut m| {
            m.role = m.role.to_lowercase();
            m
        }));
        let render = |messages: Vec<Message>| {
            prepared.template.render(&Values {
                messages,
                ..Default::default()
            })
        };
        if request.debug_render_only {
            return Ok(Outcome::Rendered(render(messages)?));
        }
        let (lease, load_duration) = self.scheduler.acquire(&prepared.load).await?;
        let budget = CompletionRequest::prompt_budget(prepared.options.num_ctx as usize, prepared.options.num_predict);
        let (prompt, dropped) = fit_messages(lease.client(), messages, budget, render).await?;
        let serving = Serving {
            admission,
            lease,
            started,
            load_duration,
        };
        self.start(prepared.options, serving, prompt, dropped, false)
    }

    fn start(
        &self,
        options: ResolvedOptions,
        serving: Serving,
        prompt: String,
        truncated_messages_tokens: u32,
        return_tokens: bool,
    ) -> Result<Outcome, HerdError> {
        let Serving {
            admission,
            lease,
            started,
            load_duration,
        } = serving;
        let completion = lease.client().complete(CompletionRequest {
            id: 0,
            prompt,
            sampling: options.sampling,
            num_predict: options.num_predict,
            num_keep: options.num_keep,
            stop: options.stop,
            return_tokens,
        })?;
        Ok(Outcome::Streaming(Generation {
            completion,
            _lease: lease,
            _admission: admission,
            started,
            load_duration,
            truncated_messages_tokens,
        }))
    }
}

fn message(role: &str, content: String) -> Message {
    Message {
        role: role.to_string(),
        content,
        ..Default::default()
    }
}

/// Features later issues bring: refused clearly instead of silently ignored.
fn reject_unsupported(
    format: Option<&Value>,
    images: Option<&[String]>,
    think: Option<&Value>,
    model: &str,
) -> Result<(), HerdError> {
    match format {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) if s.is_empty() => {}
        Some(_) => {
            return Err(HerdError::bad_request(
                "format (structured outputs) is not supported by herd yet; remove it from the request",
            ))
        }
    }
    if images.is_some_and(|i| !i.is_empty()) {
        return Err(HerdError::bad_request(format!("{model} does not support vision")));
    }
    match think {
        None | Some(Value::Null) | Some(Value::Bool(false)) => Ok(()),
        Some(Value::Bool(true)) => Err(HerdError::bad_request(format!("\"{model}\" does not support thinking"))),
        Some(Value::String(level)) if matches!(level.as_str(), "high" | "medium" | "low") => {
            Err(HerdError::bad_request(format!("\"{model}\" does not support thinking")))
        }
        Some(_) => Err(HerdError::bad_request("invalid think value")),
    }
}

/// Ollama's chat truncation: when the rendered conversation does not fit `budget` tokens, drop the
/// oldest non-system messages (always keeping the last one and every system message) until it
/// does. Returns the prompt and how many tokens were dropped.
async fn fit_messages(
    client: &Arc<RunnerClient>,
    messages: Vec<Message>,
    budget: usize,
    render: impl Fn(Vec<Message>) -> Result<String, HerdError>,
) -> Result<(String, u32), HerdError> {
    let full = render(messages.clone())?;
    let full_tokens = client.tokenize(&full).await?.len();
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
        let text = render(keeping(start))?;
        let tokens = client.tokenize(&text).await?.len();
        if tokens > budget {
            break;
        }
        keep_from = start;
        best = Some((text, tokens));
    }
    let (prompt, tokens) = match best {
        Some(found) => found,
        None => {
            let text = render(keeping(last))?;
            let tokens = client.tokenize(&text).await?.len();
            (text, tokens)
        }
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
