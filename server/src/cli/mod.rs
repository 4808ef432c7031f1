//! The command line: every command except `serve` is a client of the HTTP API at `HERD_HOST`.

mod bench;
mod chat;
mod display;

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use futures_util::StreamExt;
use serde_json::{json, Map, Value};
use sha2::{Digest as _, Sha256};

use crate::config::{env_var, parse_host};
use crate::modelfile::{parse_modelfile_bytes, Command as ModelfileCommand};
use crate::options::parse_parameter;

/// herd: run large language models locally, through Ollama's API.
#[derive(Parser, Debug)]
#[command(name = "herd", about, disable_version_flag = true, arg_required_else_help = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Print the server's and this client's versions.
    #[arg(short = 'v', long = "version")]
    pub version: bool,
}

/// `herd show`'s parts: at most one.
#[derive(clap::Args, Debug, Default)]
#[group(multiple = false)]
pub struct ShowPart {
    /// The Modelfile.
    #[arg(long)]
    modelfile: bool,
    /// The parameters.
    #[arg(long)]
    parameters: bool,
    /// The template.
    #[arg(long)]
    template: bool,
    /// The system prompt.
    #[arg(long)]
    system: bool,
    /// The license.
    #[arg(long)]
    license: bool,
}

impl ShowPart {
    /// The `/api/show` field to print, if one was asked for.
    fn field(&self) -> Option<&'static str> {
        [
            (self.modelfile, "modelfile"),
            (self.parameters, "parameters"),
            (self.template, "template"),
            (self.system, "system"),
            (self.license, "license"),
        ]
        .into_iter()
        .find_map(|(wanted, field)| wanted.then_some(field))
    }
}

/// herd's commands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Start the server.
    Serve,
    /// Create a model from a Modelfile.
    Create {
        /// Name of the new model.
        name: String,
        /// The Modelfile.
        #[arg(short = 'f', long = "file", default_value = "Modelfile")]
        file: PathBuf,
    },
    /// List local models.
    #[command(alias = "ls")]
    List {
        /// Print `/api/tags`' JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// List loaded models.
    Ps {
        /// Print `/api/ps`' JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show information about a model.
    Show {
        /// The model.
        name: String,
        /// Print one part only.
        #[command(flatten)]
        part: ShowPart,
        /// Print `/api/show`'s JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run a model on a prompt and print the answer.
    Run {
        /// The model.
        model: String,
        /// The prompt (read from stdin when absent).
        prompt: Vec<String>,
        /// Print timings and token rates after the answer.
        #[arg(long)]
        verbose: bool,
        /// How long the model stays loaded afterwards (`10m`, `-1` for ever).
        #[arg(long)]
        keepalive: Option<String>,
        /// Do not wrap the interactive chat's answers at the terminal's width.
        #[arg(long)]
        nowordwrap: bool,
        /// The answer's format: `json`, or a JSON Schema.
        #[arg(long)]
        format: Option<String>,
        /// Reason first, for models that can: `--think`, or `--think=false|low|medium|high`.
        #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
        think: Option<String>,
        /// Leave the reasoning out of the output.
        #[arg(long)]
        hidethinking: bool,
        /// Allow a plain-http registry when the model has to be pulled first.
        #[arg(long)]
        insecure: bool,
    },
    /// Pull a model from a registry.
    Pull {
        /// The model (`[host[:port]/][namespace/]model[:tag]`).
        name: String,
        /// Allow a plain-http registry.
        #[arg(long)]
        insecure: bool,
    },
    /// Push a model to a registry.
    Push {
        /// The model (`[host[:port]/]namespace/model[:tag]`).
        name: String,
        /// Allow a plain-http registry.
        #[arg(long)]
        insecure: bool,
    },
    /// Write a model to an OCI image-layout tar, for machines without a registry.
    Export {
        /// The model.
        name: String,
        /// The tar file to write.
        #[arg(short = 'o', long = "output")]
        output: PathBuf,
    },
    /// Bring the models of an exported tar into the store (every digest is verified).
    Import {
        /// The tar file.
        file: PathBuf,
    },
    /// Copy a model.
    Cp {
        /// Existing model.
        source: String,
        /// New name.
        destination: String,
    },
    /// Remove models.
    Rm {
        /// Models to remove.
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Unload a model.
    Stop {
        /// The model.
        model: String,
    },
    /// Benchmark a model: prefill and decode rates and time to first token, short and
    /// ~1000-token prompts, one and four clients.
    Bench {
        /// The model.
        model: String,
        /// Runs per case (the median is reported).
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Tokens generated per request.
        #[arg(long, default_value_t = 64)]
        num_predict: u32,
        /// Print the figures as JSON.
        #[arg(long)]
        json: bool,
    },
}

struct Client {
    base: String,
    http: reqwest::Client,
}

impl Client {
    fn from_env() -> anyhow::Result<Self> {
        let host = env_var("HOST").unwrap_or_else(|| "127.0.0.1".into());
        let mut addr = parse_host(&host).map_err(anyhow::Error::msg)?;
        if addr.ip().is_unspecified() {
            addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        // The first key of HERD_API_KEY (as the server reads it: KEY or KEY=scope).
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(key) = std::env::var("HERD_API_KEY").ok().as_deref().and_then(first_api_key) {
            let value = reqwest::header::HeaderValue::from_str(&format!("Bearer {key}"))
                .context("HERD_API_KEY holds characters a header cannot carry")?;
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        Ok(Self {
            base: format!("http://{addr}"),
            http: reqwest::Client::builder().default_headers(headers).build()?,
        })
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> anyhow::Result<reqwest::Response> {
        let response = request.send().await.map_err(|e| {
            if e.is_connect() {
                anyhow::anyhow!(
                    "could not connect to herd at {} - is `herd serve` running?",
                    self.base.trim_start_matches("http://")
                )
            } else {
                e.into()
            }
        })?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        let message = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v.get("error").and_then(Value::as_str).map(String::from))
            .unwrap_or(text);
        // A missing model: say how to get it.
        if status == reqwest::StatusCode::NOT_FOUND && message.starts_with("model ") {
            if let Some(name) = message.split('\'').nth(1).or_else(|| message.split('"').nth(1)) {
                bail!("{message}; get it with `herd pull {name}`");
            }
        }
        bail!("{message} ({status})")
    }

    async fn post(&self, path: &str, body: &Value) -> anyhow::Result<reqwest::Response> {
        self.send(self.http.post(format!("{}{path}", self.base)).json(body))
            .await
    }

    async fn get(&self, path: &str) -> anyhow::Result<Value> {
        Ok(self
            .send(self.http.get(format!("{}{path}", self.base)))
            .await?
            .json()
            .await?)
    }

    /// Reads an NDJSON stream, calling `each` per object; an `error` line fails.
    async fn stream(&self, response: reqwest::Response, mut each: impl FnMut(&Value)) -> anyhow::Result<()> {
        let lines = ndjson(response);
        futures_util::pin_mut!(lines);
        while let Some(value) = lines.next().await {
            each(&value?);
        }
        Ok(())
    }
}

/// The key the client sends: the first of a `HERD_API_KEY` list, without its scope.
fn first_api_key(keys: &str) -> Option<&str> {
    let first = keys.split(',').map(str::trim).find(|k| !k.is_empty())?;
    Some(first.rsplit_once('=').map_or(first, |(key, _)| key))
}

/// The objects of an NDJSON answer as they arrive; an `{"error": ...}` line ends it as an
/// error.
fn ndjson(response: reqwest::Response) -> impl futures_util::Stream<Item = anyhow::Result<Value>> {
    let state = (Box::pin(response.bytes_stream()), Vec::new());
    futures_util::stream::unfold(Some(state), |state| async move {
        let (mut body, mut buf) = state?;
        loop {
            if let Some(newline) = buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = buf.drain(..=newline).collect();
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                let parsed = serde_json::from_slice::<Value>(&line)
                    .map_err(anyhow::Error::from)
                    .and_then(|value| match value.get("error").and_then(Value::as_str) {
                        Some(error) => Err(anyhow::anyhow!("{error}")),
                        None => Ok(value),
                    });
                let go_on = parsed.is_ok().then_some((body, buf));
                return Some((parsed, go_on));
            }
            match body.next().await {
                Some(Ok(chunk)) => buf.extend_from_slice(&chunk),
                Some(Err(e)) => return Some((Err(e.into()), None)),
                None => return None,
            }
        }
    })
}

/// Runs a client command.
pub async fn run(command: Command) -> anyhow::Result<()> {
    let client = Client::from_env()?;
    match command {
        Command::Serve => unreachable!("serve is handled by main"),
        Command::Create { name, file } => create(&client, &name, &file).await,
        Command::List { json } => {
            let header = ["NAME", "ID", "SIZE", "MODIFIED"];
            print_listing(&client, "/api/tags", json, &header, |m, now| {
                vec![
                    text(&m["name"]),
                    display::short_id(m["digest"].as_str().unwrap_or_default()),
                    display::human_bytes(m["size"].as_u64().unwrap_or_default()),
                    display::human_time(m["modified_at"].as_str().unwrap_or_default(), now, "Unknown"),
                ]
            })
            .await
        }
        Command::Ps { json } => {
            let header = ["NAME", "ID", "SIZE", "PROCESSOR", "CONTEXT", "UNTIL"];
            print_listing(&client, "/api/ps", json, &header, |m, now| {
                let size = m["size"].as_u64().unwrap_or_default();
                let expires = m["expires_at"].as_str().unwrap_or_default();
                let until = match chrono::DateTime::parse_from_rfc3339(expires) {
                    Ok(at) if at < now => "Stopping...".to_string(),
                    _ => display::human_time(expires, now, "Never"),
                };
                vec![
                    text(&m["name"]),
                    display::short_id(m["digest"].as_str().unwrap_or_default()),
                    display::human_bytes(size),
                    display::processor(size, m["size_vram"].as_u64().unwrap_or_default()),
                    m["context_length"].to_string(),
                    until,
                ]
            })
            .await
        }
        Command::Show { name, part, json } => {
            let info: Value = client
                .post("/api/show", &json!({ "model": name }))
                .await?
                .json()
                .await?;
            match (json, part.field()) {
                (true, _) => print_json(&info)?,
                (false, Some(field)) => println!("{}", text(&info[field])),
                (false, None) => print!("{}", display::show_summary(&info)),
            }
            Ok(())
        }
        Command::Run {
            model,
            prompt,
            verbose,
            keepalive,
            nowordwrap,
            format,
            think,
            hidethinking,
            insecure,
        } => {
            pull_if_missing(&client, &model, insecure).await?;
            let mut session = chat::Session {
                model,
                messages: Vec::new(),
                options: Map::new(),
                system: None,
                // A schema is JSON; anything else (`json`) goes as a string.
                format: format.map(|f| {
                    serde_json::from_str::<Value>(&f)
                        .ok()
                        .filter(Value::is_object)
                        .unwrap_or(json!(f))
                }),
                think: think.map(|t| match t.as_str() {
                    "true" => json!(true),
                    "false" => json!(false),
                    level => json!(level),
                }),
                keep_alive: keepalive,
                verbose,
                hide_thinking: hidethinking,
                word_wrap: false,
            };
            let stdin = std::io::stdin();
            if prompt.is_empty() && std::io::IsTerminal::is_terminal(&stdin) {
                session.word_wrap = !nowordwrap && std::io::IsTerminal::is_terminal(&std::io::stdout());
                return chat::interactive(&client, &mut session).await;
            }
            let prompt = if prompt.is_empty() {
                let mut text = String::new();
                std::io::Read::read_to_string(&mut stdin.lock(), &mut text)?;
                text
            } else {
                prompt.join(" ")
            };
            chat::answer_once(&client, &mut session, prompt).await
        }
        Command::Cp { source, destination } => {
            client
                .post("/api/copy", &json!({ "source": source, "destination": destination }))
                .await?;
            println!("copied '{source}' to '{destination}'");
            Ok(())
        }
        Command::Rm { names } => {
            for name in names {
                let url = format!("{}/api/delete", client.base);
                client
                    .send(client.http.delete(url).json(&json!({ "model": name })))
                    .await?;
                println!("deleted '{name}'");
            }
            Ok(())
        }
        Command::Pull { name, insecure } => transfer(&client, "/api/pull", &name, insecure).await,
        Command::Push { name, insecure } => transfer(&client, "/api/push", &name, insecure).await,
        Command::Export { name, output } => export(&client, &name, &output).await,
        Command::Import { file } => {
            let body = tokio::fs::File::open(&file)
                .await
                .with_context(|| format!("cannot open {}", file.display()))?;
            let response = client
                .send(
                    client
                        .http
                        .post(format!("{}/api/import", client.base))
                        .body(reqwest::Body::from(body)),
                )
                .await?;
            let answer: Value = response.json().await?;
            for model in answer["models"].as_array().into_iter().flatten() {
                println!("imported {}", text(model));
            }
            Ok(())
        }
        Command::Bench {
            model,
            runs,
            num_predict,
            json,
        } => bench::bench(&client, &model, runs, num_predict, json).await,
        Command::Stop { model } => {
            let body = json!({ "model": model, "prompt": "", "keep_alive": 0, "stream": false });
            client.post("/api/generate", &body).await?;
            Ok(())
        }
    }
}

/// `herd --version`: the server's version, and the client's when it differs or there is no
/// server, as `ollama --version` prints them.
pub async fn print_version() -> anyhow::Result<()> {
    let client_version = env!("CARGO_PKG_VERSION");
    let server = match Client::from_env() {
        Ok(client) => client.get("/api/version").await.ok(),
        Err(_) => None,
    };
    match server.as_ref().and_then(|v| v["version"].as_str()) {
        Some(version) => {
            println!("herd version is {version}");
            if version != client_version {
                eprintln!("Warning: client version is {client_version}");
            }
        }
        None => {
            eprintln!("Warning: could not connect to a running herd instance");
            eprintln!("Warning: client version is {client_version}");
        }
    }
    Ok(())
}

/// `herd list` and `herd ps`: the `models` of `path` as a table of `row`s, or the answer's
/// JSON with `--json`.
async fn print_listing(
    client: &Client,
    path: &str,
    json: bool,
    header: &[&str],
    row: impl Fn(&Value, chrono::DateTime<chrono::Utc>) -> Vec<String>,
) -> anyhow::Result<()> {
    let answer = client.get(path).await?;
    if json {
        return print_json(&answer);
    }
    let now = chrono::Utc::now();
    let rows: Vec<Vec<String>> = answer["models"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| row(m, now))
        .collect();
    print!("{}", display::table(header, &rows));
    Ok(())
}

fn print_json(value: &Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// A JSON string's text; other values as JSON.
fn text(value: &Value) -> String {
    value.as_str().map_or_else(|| value.to_string(), String::from)
}

/// `herd create NAME -f Modelfile`: uploads a local GGUF as a blob, then calls `/api/create`.
async fn create(client: &Client, name: &str, file: &Path) -> anyhow::Result<()> {
    let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let modelfile = parse_modelfile_bytes(&bytes)?;
    let base_dir = file.parent().unwrap_or(Path::new("."));
    let mut request = Map::new();
    request.insert("model".into(), json!(name));
    let mut parameters = Map::new();
    let mut messages = Vec::new();
    let mut licenses = Vec::new();
    for command in modelfile.commands {
        match command {
            ModelfileCommand::From(from) => {
                let path = expand_path(&from, base_dir);
                if path.is_file() {
                    let digest = upload_blob(client, &path).await?;
                    // A second FROM file is a projector (Ollama's way to add one).
                    let file_name = path.file_name().and_then(|n| n.to_str()).unwrap_or("model.gguf");
                    let files = request.entry("files").or_insert_with(|| json!({}));
                    if let Some(files) = files.as_object_mut() {
                        // Two files of one name (from two folders) stay two entries.
                        let key = if files.contains_key(file_name) {
                            format!("{}-{file_name}", files.len())
                        } else {
                            file_name.to_string()
                        };
                        files.insert(key, json!(digest));
                    }
                } else {
                    request.insert("from".into(), json!(from));
                }
            }
            ModelfileCommand::Parameter { name, value } => {
                let value = parse_parameter(&name, &value).map_err(|e| anyhow::anyhow!("{e}"))?;
                match (parameters.get_mut(&name), value) {
                    (Some(Value::Array(existing)), Value::Array(more)) => existing.extend(more),
                    (_, value) => {
                        parameters.insert(name, value);
                    }
                }
            }
            ModelfileCommand::Template(t) => {
                request.insert("template".into(), json!(t));
            }
            ModelfileCommand::System(s) => {
                request.insert("system".into(), json!(s));
            }
            ModelfileCommand::Message { role, content } => messages.push(json!({ "role": role, "content": content })),
            ModelfileCommand::License(l) => licenses.push(l),
            ModelfileCommand::Adapter(adapter) => {
                let path = expand_path(&adapter, base_dir);
                if !path.is_file() {
                    bail!("ADAPTER {adapter}: no such file (relative paths start at the Modelfile's folder)");
                }
                let digest = upload_blob(client, &path).await?;
                let file_name = path.file_name().and_then(|n| n.to_str()).unwrap_or("adapter.gguf");
                request.insert("adapters".into(), json!({ file_name: digest }));
            }
        }
    }
    if !parameters.is_empty() {
        request.insert("parameters".into(), Value::Object(parameters));
    }
    if !messages.is_empty() {
        request.insert("messages".into(), json!(messages));
    }
    if !licenses.is_empty() {
        request.insert("license".into(), json!(licenses));
    }
    let response = client.post("/api/create", &Value::Object(request)).await?;
    client
        .stream(response, |line| {
            if let Some(status) = line["status"].as_str() {
                eprintln!("{status}");
            }
        })
        .await
}

/// `herd pull` / `herd push`: streams the transfer's status lines into progress bars (plain
/// lines when stderr is not a terminal).
/// `herd run` on a model that is not here pulls it first, with progress, as `ollama run` does.
async fn pull_if_missing(client: &Client, model: &str, insecure: bool) -> anyhow::Result<()> {
    let shown = client
        .http
        .post(format!("{}/api/show", client.base))
        .json(&json!({ "model": model }))
        .send()
        .await;
    match shown {
        Ok(response) if response.status() == reqwest::StatusCode::NOT_FOUND => {
            transfer(client, "/api/pull", model, insecure).await
        }
        // Anything else (present, a bad name, no server) the chat itself reports.
        _ => Ok(()),
    }
}

async fn transfer(client: &Client, path: &str, name: &str, insecure: bool) -> anyhow::Result<()> {
    let response = client
        .post(path, &json!({ "model": name, "insecure": insecure }))
        .await?;
    let mut progress = display::TransferProgress::new(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let result = client.stream(response, |line| progress.update(line)).await;
    progress.finish();
    result
}

/// `herd export`: streams the tar into a temp file beside `output`, renamed when complete.
async fn export(client: &Client, name: &str, output: &Path) -> anyhow::Result<()> {
    use tokio::io::AsyncWriteExt;
    let response = client.post("/api/export", &json!({ "model": name })).await?;
    let dir = output
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let temp = tempfile::Builder::new()
        .prefix(".herd-export-")
        .tempfile_in(dir)
        .with_context(|| format!("cannot write in {}", dir.display()))?;
    let mut file = tokio::fs::File::from_std(temp.reopen()?);
    let mut body = response.bytes_stream();
    let mut written = 0u64;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.context("the export was cut off")?;
        written += chunk.len() as u64;
        file.write_all(&chunk).await?;
    }
    file.sync_all().await?;
    temp.persist(output)
        .with_context(|| format!("cannot write {}", output.display()))?;
    eprintln!("wrote {} ({})", output.display(), display::human_bytes(written));
    Ok(())
}

fn expand_path(from: &str, base_dir: &Path) -> PathBuf {
    let path = match from.strip_prefix("~/") {
        Some(rest) => std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_default()
            .join(rest),
        None => PathBuf::from(from),
    };
    if path.is_absolute() {
        path
    } else {
        base_dir.join(path)
    }
}

/// Hashes a local file and uploads it unless the server already has it; returns its digest.
async fn upload_blob(client: &Client, path: &Path) -> anyhow::Result<String> {
    eprintln!("gathering model components");
    let digest = {
        let path = path.to_path_buf();
        tokio::task::spawn_blocking(move || -> std::io::Result<String> {
            let mut file = std::fs::File::open(&path)?;
            let mut hasher = Sha256::new();
            std::io::copy(&mut file, &mut hasher)?;
            Ok(format!("sha256:{}", hex::encode(hasher.finalize())))
        })
        .await??
    };
    let url = format!("{}/api/blobs/{digest}", client.base);
    let exists = client
        .http
        .head(&url)
        .send()
        .await
        .map(|r| r.status().is_success())
        .unwrap_or(false);
    if !exists {
        eprintln!("copying file {digest} 100%");
        let file = tokio::fs::File::open(path).await?;
        client
            .send(client.http.post(&url).body(reqwest::Body::from(file)))
            .await?;
    }
    Ok(digest)
}
