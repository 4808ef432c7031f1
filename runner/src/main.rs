//! `herd-runner`: one process per loaded model. It listens on a local socket named by the
//! server, accepts exactly one connection, loads the model and serves completions on it.
//! Invariant: knows nothing of HTTP, model names or the store; it exits when the server's
//! connection closes, so no runner outlives its server.

mod engine;
mod output;
mod sampling;
mod vision;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use herd_proto::frame::{read_frame, write_frame, FrameError};
use herd_proto::{RunnerMessage, ServerMessage, PROTOCOL_VERSION};
use interprocess::local_socket::tokio::prelude::*;
use interprocess::local_socket::{GenericFilePath, ListenerOptions};

/// How long the runner waits for the server to connect before giving up.
const ACCEPT_TIMEOUT: Duration = Duration::from_secs(60);

/// Command line of a runner; the server builds it.
#[derive(Parser, Debug)]
#[command(
    name = "herd-runner",
    version,
    about = "herd's model runner (started by `herd serve`)"
)]
struct Args {
    /// GGUF file to load.
    #[arg(long)]
    model: PathBuf,
    /// Path of the local socket to listen on.
    #[arg(long)]
    socket: PathBuf,
    /// Context length of each slot, in tokens.
    #[arg(long, default_value_t = 4096)]
    ctx_size: u32,
    /// Requests decoded together.
    #[arg(long, default_value_t = 1)]
    parallel: u32,
    /// CPU threads; 0 uses every available core.
    #[arg(long, default_value_t = 0)]
    threads: i32,
    /// Most tokens per decode call.
    #[arg(long, default_value_t = 512)]
    batch_size: u32,
    /// Layers to offload to a GPU.
    #[arg(long, default_value_t = 0)]
    gpu_layers: u32,
    /// The GPU that takes them (its index); the model is not split across GPUs.
    #[arg(long, default_value_t = 0)]
    main_gpu: u32,
    /// A LoRA adapter GGUF to apply at full scale.
    #[arg(long)]
    lora: Option<PathBuf>,
    /// A multimodal projector GGUF (mmproj): completions may then carry images.
    #[arg(long)]
    projector: Option<PathBuf>,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("HERD_RUNNER_LOG")
                .unwrap_or_else(|_| "warn,herd_runner=info".into()),
        )
        .init();
    llama_cpp_2::send_logs_to_tracing(llama_cpp_2::LogOptions::default());
    let args = Args::parse();
    let threads = if args.threads > 0 {
        args.threads
    } else {
        std::thread::available_parallelism().map_or(4, |n| n.get() as i32)
    };

    let name = args.socket.as_path().to_fs_name::<GenericFilePath>()?;
    let listener = ListenerOptions::new()
        .name(name)
        .create_tokio()
        .with_context(|| format!("cannot listen on {}", args.socket.display()))?;
    let conn = tokio::time::timeout(ACCEPT_TIMEOUT, listener.accept())
        .await
        .context("the server never connected")??;
    // One connection only: nobody else may reach this model.
    drop(listener);
    // `&Stream` reads and writes; an Arc lets the reader and writer tasks share it.
    let conn = std::sync::Arc::new(conn);
    let conn_writer = conn.clone();

    let (events_tx, mut events_rx) = tokio::sync::mpsc::unbounded_channel();
    events_tx.send(RunnerMessage::Hello {
        protocol: PROTOCOL_VERSION,
        pid: std::process::id(),
    })?;
    let writer_task = tokio::spawn(async move {
        let mut writer = &*conn_writer;
        while let Some(message) = events_rx.recv().await {
            let load_failed = matches!(message, RunnerMessage::LoadFailed { .. });
            if write_frame(&mut writer, &message).await.is_err() || load_failed {
                break;
            }
        }
    });

    let (commands_tx, commands_rx) = std::sync::mpsc::channel();
    let config = engine::EngineConfig {
        model_path: args.model,
        context_length: args.ctx_size,
        parallel: args.parallel,
        threads,
        batch_size: args.batch_size.max(1),
        gpu_layers: args.gpu_layers,
        main_gpu: args.main_gpu,
        lora_path: args.lora,
        projector_path: args.projector,
    };
    let engine_thread = std::thread::Builder::new()
        .name("engine".into())
        .spawn(move || engine::run(config, commands_rx, events_tx))?;

    let reader_task = tokio::spawn(async move {
        let mut reader = &*conn;
        loop {
            match read_frame::<_, ServerMessage>(&mut reader).await {
                Ok(message) => {
                    let shutdown = matches!(message, ServerMessage::Shutdown);
                    if commands_tx.send(message).is_err() || shutdown {
                        break;
                    }
                }
                Err(FrameError::Closed) => break,
                Err(e) => {
                    tracing::error!("bad frame from the server: {e}");
                    break;
                }
            }
        }
    });

    // Whichever ends first ends the runner: the server hung up, or the engine stopped.
    tokio::select! {
        _ = reader_task => {}
        _ = writer_task => {}
    }
    // Give the engine a moment to answer a Shutdown, but never hang on it.
    let deadline = std::time::Instant::now() + Duration::from_millis(500);
    while !engine_thread.is_finished() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    std::process::exit(0);
}
