//! `herd run`: one answer, or the interactive chat (line editing and history, `"""`
//! multi-line input, Ctrl-C cancelling the answer, Ctrl-D leaving, `/set`, `/show`, `/clear`,
//! `/load`, `/save`, `/bye`), as `ollama run` behaves.

use std::io::Write;

use futures_util::StreamExt;
use rustyline::error::ReadlineError;
use serde_json::{json, Map, Value};

use super::{display, Client};
use crate::options::parse_parameter;

/// What every request of one chat carries.
pub struct Session {
    /// The model.
    pub model: String,
    /// The conversation so far.
    pub messages: Vec<Value>,
    /// `options` set with `/set parameter`.
    pub options: Map<String, Value>,
    /// A system message set with `/set system`.
    pub system: Option<String>,
    /// `format` (`--format`, `/set format`).
    pub format: Option<Value>,
    /// `think` (`--think`, `/set think`).
    pub think: Option<Value>,
    /// `keep_alive` (`--keepalive`).
    pub keep_alive: Option<String>,
    /// Print the statistics after each answer.
    pub verbose: bool,
    /// Leave reasoning out of the output.
    pub hide_thinking: bool,
    /// Wrap answers at the terminal's width (the interactive chat, unless `--nowordwrap`).
    pub word_wrap: bool,
}

/// How one answer ended.
enum Answered {
    /// Whole: its text goes into the history.
    Done(String),
    /// Ctrl-C: dropped, and the question with it.
    Cancelled,
}

impl Session {
    fn body(&self) -> Value {
        let mut messages = Vec::new();
        if let Some(system) = &self.system {
            messages.push(json!({ "role": "system", "content": system }));
        }
        messages.extend(self.messages.iter().cloned());
        let mut body = json!({ "model": self.model, "messages": messages });
        if !self.options.is_empty() {
            body["options"] = Value::Object(self.options.clone());
        }
        for (key, value) in [("format", &self.format), ("think", &self.think)] {
            if let Some(value) = value {
                body[key] = value.clone();
            }
        }
        if let Some(keep_alive) = &self.keep_alive {
            body["keep_alive"] = json!(keep_alive);
        }
        body
    }

    /// Asks `prompt`, streaming the answer to stdout until it ends or `cancel` resolves.
    async fn ask(
        &mut self,
        client: &Client,
        prompt: String,
        cancel: impl std::future::Future<Output = ()>,
    ) -> anyhow::Result<Answered> {
        self.messages.push(json!({ "role": "user", "content": prompt }));
        let answered = self.stream_answer(client, cancel).await;
        match &answered {
            Ok(Answered::Done(text)) => self.messages.push(json!({ "role": "assistant", "content": text })),
            _ => {
                self.messages.pop();
            }
        }
        answered
    }

    async fn stream_answer(
        &self,
        client: &Client,
        cancel: impl std::future::Future<Output = ()>,
    ) -> anyhow::Result<Answered> {
        // Polled from the start, so that Ctrl-C while the prompt is evaluated cancels too.
        tokio::pin!(cancel);
        let body = self.body();
        let response = tokio::select! {
            response = client.post("/api/chat", &body) => response?,
            () = &mut cancel => {
                println!();
                return Ok(Answered::Cancelled);
            }
        };
        let mut printer = display::AnswerPrinter::new(self.hide_thinking);
        let mut wrap = self
            .word_wrap
            .then(|| console::Term::stdout().size_checked())
            .flatten()
            // A terminal that does not say its width (or a tiny one) is not wrapped.
            .filter(|&(_, columns)| columns >= 20)
            .map(|(_, columns)| display::WordWrap::new(usize::from(columns) - 5));
        let mut stdout = std::io::stdout();
        let (mut text, mut last) = (String::new(), Value::Null);
        let lines = super::ndjson(response);
        tokio::pin!(lines);
        loop {
            let value = tokio::select! {
                value = lines.next() => value,
                () = &mut cancel => {
                    // Dropping the response hangs up: the server cancels the generation.
                    println!();
                    return Ok(Answered::Cancelled);
                }
            };
            let Some(value) = value else { break };
            let value = value?;
            let message = &value["message"];
            let content = message["content"].as_str().unwrap_or_default();
            text.push_str(content);
            let mut piece = printer.piece(message["thinking"].as_str().unwrap_or_default(), content);
            if let Some(wrap) = wrap.as_mut() {
                piece = wrap.push(&piece);
            }
            let _ = write!(stdout, "{piece}");
            let _ = stdout.flush();
            if value["done"] == true {
                last = value;
            }
        }
        if let Some(wrap) = wrap.as_mut() {
            print!("{}", wrap.finish());
        }
        println!();
        if self.verbose {
            eprint!("\n{}", display::verbose_stats(&last));
        }
        Ok(Answered::Done(text))
    }
}

/// Answers one prompt (from the arguments or piped stdin) and returns.
pub async fn answer_once(client: &Client, session: &mut Session, prompt: String) -> anyhow::Result<()> {
    session.ask(client, prompt, std::future::pending()).await.map(drop)
}

const HELP: &str = "Available Commands:
  /set            Set session variables
  /show           Show model information
  /load <model>   Load a session or model
  /save <model>   Save your current session
  /clear          Clear session context
  /bye            Exit
  /?, /help       Help for a command

Use \"\"\" to begin a multi-line message.
";

const SET_HELP: &str = "Available Commands:
  /set parameter ...     Set a parameter
  /set system <string>   Set system message
  /set format json       Enable JSON mode
  /set noformat          Disable formatting
  /set think             Enable thinking
  /set nothink           Disable thinking
  /set verbose           Show LLM stats
  /set quiet             Disable LLM stats
";

const SHOW_HELP: &str = "Available Commands:
  /show info         Show details for this model
  /show license      Show model license
  /show modelfile    Show Modelfile for this model
  /show parameters   Show parameters for this model
  /show system       Show system message
  /show template     Show prompt template
";

/// The interactive chat, until Ctrl-D or `/bye`.
pub async fn interactive(client: &Client, session: &mut Session) -> anyhow::Result<()> {
    let mut editor = rustyline::DefaultEditor::new()?;
    let history = crate::config::herd_home().join("history");
    let _ = editor.load_history(&history);
    // Load the model now, so the first answer does not wait for it.
    load(client, &session.model).await?;
    loop {
        let line = match read_message(&mut editor) {
            Ok(Some(line)) => line,
            Ok(None) => break,
            Err(ReadlineError::Interrupted) => {
                println!("Use Ctrl + d or /bye to exit.");
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        if let Some(parent) = history.parent() {
            let _ = std::fs::create_dir_all(parent);
        }
        let _ = editor.save_history(&history);
        let trimmed = line.trim();
        if trimmed.is_empty() {
            continue;
        }
        if trimmed.starts_with('/') {
            match command(client, session, trimmed).await {
                Ok(Flow::Continue) => continue,
                Ok(Flow::Leave) => break,
                Err(e) => {
                    eprintln!("Error: {e}");
                    continue;
                }
            }
        }
        let cancel = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        if let Err(e) = session.ask(client, line, cancel).await {
            eprintln!("Error: {e}");
        }
    }
    Ok(())
}

/// Loads `model` (an empty chat), with a spinner on a terminal meanwhile.
async fn load(client: &Client, model: &str) -> anyhow::Result<()> {
    let spinner = std::io::IsTerminal::is_terminal(&std::io::stderr()).then(|| {
        let spinner = indicatif::ProgressBar::new_spinner();
        spinner.enable_steady_tick(std::time::Duration::from_millis(100));
        spinner
    });
    let loaded = client
        .post("/api/chat", &json!({ "model": model, "messages": [] }))
        .await;
    if let Some(spinner) = spinner {
        spinner.finish_and_clear();
    }
    loaded.map(drop)
}

/// Reads one message: a line, or the lines between `"""` and `"""`. `None` at Ctrl-D.
fn read_message(editor: &mut rustyline::DefaultEditor) -> Result<Option<String>, ReadlineError> {
    let line = match editor.readline(">>> ") {
        Ok(line) => line,
        Err(ReadlineError::Eof) => return Ok(None),
        Err(e) => return Err(e),
    };
    let _ = editor.add_history_entry(line.as_str());
    let Some(first) = line.trim_start().strip_prefix("\"\"\"") else {
        return Ok(Some(line));
    };
    if let Some(whole) = first.strip_suffix("\"\"\"") {
        return Ok(Some(whole.to_string()));
    }
    let mut lines = vec![first.to_string()];
    loop {
        let next = match editor.readline("... ") {
            Ok(next) => next,
            Err(ReadlineError::Eof) => return Ok(None),
            Err(e) => return Err(e),
        };
        let _ = editor.add_history_entry(next.as_str());
        if let Some(last) = next.trim_end().strip_suffix("\"\"\"") {
            lines.push(last.to_string());
            return Ok(Some(lines.join("\n").trim_start_matches('\n').to_string()));
        }
        lines.push(next);
    }
}

/// What the loop does after a command.
enum Flow {
    Continue,
    Leave,
}

/// Runs one `/` command.
async fn command(client: &Client, session: &mut Session, line: &str) -> anyhow::Result<Flow> {
    let mut words = line.split_whitespace();
    let name = words.next().unwrap_or_default();
    let rest: Vec<&str> = words.collect();
    match (name, rest.as_slice()) {
        ("/bye" | "/exit", _) => return Ok(Flow::Leave),
        ("/?" | "/help", []) => print!("{HELP}"),
        ("/?" | "/help", ["set"]) | ("/set", []) => print!("{SET_HELP}"),
        ("/?" | "/help", ["show"]) | ("/show", []) => print!("{SHOW_HELP}"),
        ("/clear", []) => {
            session.messages.clear();
            println!("Cleared session context");
        }
        ("/set", ["parameter", key, values @ ..]) if !values.is_empty() => {
            let value = if *key == "stop" {
                json!(values)
            } else {
                parse_parameter(key, &values.join(" ")).map_err(anyhow::Error::msg)?
            };
            session.options.insert(key.to_string(), value);
            println!("Set parameter '{key}' to '{}'", values.join(", "));
        }
        ("/set", ["system", ..]) => {
            let text = line.splitn(3, char::is_whitespace).nth(2).unwrap_or_default().trim();
            let text = text.trim_matches('"').to_string();
            session.system = (!text.is_empty()).then_some(text);
            println!("Set system message.");
        }
        ("/set", ["format", "json"]) => {
            session.format = Some(json!("json"));
            println!("Set format to 'json' mode.");
        }
        ("/set", ["noformat"]) => {
            session.format = None;
            println!("Disabled format.");
        }
        ("/set", ["think"]) => {
            session.think = Some(json!(true));
            println!("Set 'think' mode.");
        }
        ("/set", ["nothink"]) => {
            session.think = Some(json!(false));
            println!("Set 'nothink' mode.");
        }
        ("/set", ["verbose"]) => {
            session.verbose = true;
            println!("Set 'verbose' mode.");
        }
        ("/set", ["quiet"]) => {
            session.verbose = false;
            println!("Set 'quiet' mode.");
        }
        ("/show", [part]) => show(client, session, part).await?,
        ("/load", [model]) => {
            println!("Loading model '{model}'");
            load(client, model).await?;
            session.model = model.to_string();
            session.messages.clear();
        }
        ("/save", [name]) => {
            let mut body =
                json!({ "model": name, "from": session.model, "messages": session.messages, "stream": false });
            if let Some(system) = &session.system {
                body["system"] = json!(system);
            }
            if !session.options.is_empty() {
                body["parameters"] = Value::Object(session.options.clone());
            }
            client.post("/api/create", &body).await?;
            println!("Created new model '{name}'");
        }
        _ => println!("Unknown command '{line}'. Type /? for help"),
    }
    Ok(Flow::Continue)
}

/// `/show <part>` of the current model.
async fn show(client: &Client, session: &Session, part: &str) -> anyhow::Result<()> {
    let info: Value = client
        .post("/api/show", &json!({ "model": session.model }))
        .await?
        .json()
        .await?;
    let field = |name: &str| info[name].as_str().unwrap_or_default().trim_end().to_string();
    match part {
        "info" => print!("{}", display::show_summary(&info)),
        "parameters" => {
            // Ollama's order: what this session set, then what the model's Modelfile set.
            if !session.options.is_empty() {
                println!("User defined parameters:");
                for (key, value) in &session.options {
                    println!("{key:<30} {value}");
                }
                println!();
            }
            match field("parameters") {
                parameters if parameters.is_empty() => println!("No parameters were specified for this model."),
                parameters => println!("Model defined parameters:\n{parameters}"),
            }
        }
        "system" => match session
            .system
            .clone()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| field("system"))
        {
            system if system.is_empty() => println!("No system message was specified for this model."),
            system => println!("{system}"),
        },
        "template" => println!("{}", field("template")),
        "license" => match field("license") {
            license if license.is_empty() => println!("No license was specified for this model."),
            license => println!("{license}"),
        },
        "modelfile" => println!("{}", field("modelfile")),
        _ => print!("{SHOW_HELP}"),
    }
    Ok(())
}
