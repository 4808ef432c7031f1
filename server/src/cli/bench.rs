//! `herd bench MODEL`: a fixed benchmark over the API (short and ~1000-token prompts, one and
//! four clients) reporting prefill and decode rates and time to first token, medians of a few
//! runs, so versions and machines can be compared.

use std::time::{Duration, Instant};

use anyhow::bail;
use serde_json::{json, Value};

use super::Client;

/// The short prompt.
const SHORT: &str = "Why is the sky blue?";
/// About a thousand tokens with Gemma's tokenizer (the paragraph repeated).
const LONG_PARAGRAPH: &str = "The history of astronomy spans thousands of years, from ancient observers who \
    tracked the motions of the planets to modern telescopes that image distant galaxies. ";
const LONG_REPEATS: usize = 40;
/// Concurrent clients of the last case.
const CLIENTS: usize = 4;

/// One request's figures.
struct Timing {
    prompt_tokens: u64,
    prefill_rate: f64,
    decode_tokens: u64,
    decode_rate: f64,
    first_token: Duration,
}

/// One case's medians.
struct CaseResult {
    case: &'static str,
    clients: usize,
    prompt_tokens: u64,
    prefill_rate: f64,
    decode_rate: f64,
    first_token: f64,
}

/// Runs the benchmark and prints a table, or JSON with `json`.
pub async fn bench(client: &Client, model: &str, runs: usize, num_predict: u32, json_out: bool) -> anyhow::Result<()> {
    if runs == 0 {
        bail!("--runs must be at least 1");
    }
    // Load the model first; loading is not what is measured.
    generate(client, model, "Hi", 1, 0).await?;
    let long = LONG_PARAGRAPH.repeat(LONG_REPEATS);
    let mut results = Vec::new();
    for (case, prompt, clients) in [
        ("short prompt", SHORT, 1),
        ("long prompt", long.as_str(), 1),
        ("short prompt", SHORT, CLIENTS),
    ] {
        let (mut prefill, mut decode, mut first, mut tokens) = (Vec::new(), Vec::new(), Vec::new(), 0);
        for run in 0..runs {
            if !json_out {
                eprint!("\r{case}, {clients} client(s): run {}/{runs}", run + 1);
            }
            let started = Instant::now();
            // Each run starts with another word, so no prompt is served from the cache.
            let requests = (0..clients).map(|i| {
                let prompt = format!("Run {}. {prompt}", run * CLIENTS + i + 1);
                async move { generate(client, model, &prompt, num_predict, run as i64).await }
            });
            let timings: Vec<Timing> = futures_util::future::try_join_all(requests).await?;
            let wall = started.elapsed().as_secs_f64();
            tokens = timings[0].prompt_tokens;
            prefill.push(median(timings.iter().map(|t| t.prefill_rate).collect()));
            first.push(median(timings.iter().map(|t| t.first_token.as_secs_f64()).collect()));
            decode.push(if clients == 1 {
                timings[0].decode_rate
            } else {
                // Aggregate: every client's tokens over the wall time.
                timings.iter().map(|t| t.decode_tokens as f64).sum::<f64>() / wall
            });
        }
        results.push(CaseResult {
            case,
            clients,
            prompt_tokens: tokens,
            prefill_rate: median(prefill),
            decode_rate: median(decode),
            first_token: median(first),
        });
    }
    if !json_out {
        eprintln!("\r{:60}\r", "");
    }
    let version = client.get("/api/version").await?["version"].clone();
    if json_out {
        let cases: Vec<Value> = results
            .iter()
            .map(|r| {
                json!({
                    "case": r.case, "clients": r.clients, "prompt_tokens": r.prompt_tokens,
                    "prefill_tokens_per_second": r.prefill_rate, "decode_tokens_per_second": r.decode_rate,
                    "time_to_first_token_seconds": r.first_token,
                })
            })
            .collect();
        let record = json!({ "model": model, "server_version": version, "runs": runs,
                             "num_predict": num_predict, "results": cases });
        println!("{}", serde_json::to_string_pretty(&record)?);
        return Ok(());
    }
    let header = [
        "CASE",
        "CLIENTS",
        "PROMPT TOKENS",
        "PREFILL TOK/S",
        "DECODE TOK/S",
        "FIRST TOKEN",
    ];
    let rows: Vec<Vec<String>> = results
        .iter()
        .map(|r| {
            vec![
                r.case.to_string(),
                r.clients.to_string(),
                r.prompt_tokens.to_string(),
                format!("{:.1}", r.prefill_rate),
                format!("{:.1}{}", r.decode_rate, if r.clients > 1 { " (all)" } else { "" }),
                format!("{:.3}s", r.first_token),
            ]
        })
        .collect();
    println!(
        "{model} on herd {}, median of {runs} run(s), {num_predict} tokens generated each",
        version.as_str().unwrap_or("?")
    );
    print!("{}", super::display::table(&header, &rows));
    Ok(())
}

/// One streamed, greedy `/api/generate`, timed.
async fn generate(client: &Client, model: &str, prompt: &str, num_predict: u32, seed: i64) -> anyhow::Result<Timing> {
    let body = json!({ "model": model, "prompt": prompt, "stream": true,
                       "options": { "num_predict": num_predict, "temperature": 0, "seed": seed } });
    let started = Instant::now();
    let response = client.post("/api/generate", &body).await?;
    let (mut first_token, mut last) = (None, Value::Null);
    client
        .stream(response, |value| {
            if first_token.is_none() && value["response"].as_str().is_some_and(|r| !r.is_empty()) {
                first_token = Some(started.elapsed());
            }
            if value["done"] == true {
                last = value.clone();
            }
        })
        .await?;
    let count = |key: &str| last[key].as_u64().unwrap_or_default();
    let rate = |tokens: u64, nanos: u64| {
        if nanos == 0 {
            0.0
        } else {
            tokens as f64 * 1e9 / nanos as f64
        }
    };
    Ok(Timing {
        prompt_tokens: count("prompt_eval_count"),
        prefill_rate: rate(count("prompt_eval_count"), count("prompt_eval_duration")),
        decode_tokens: count("eval_count"),
        decode_rate: rate(count("eval_count"), count("eval_duration")),
        first_token: first_token.unwrap_or_else(|| started.elapsed()),
    })
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => 0.0,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

#[cfg(test)]
mod tests {
    use super::median;

    #[test]
    fn medians_of_odd_and_even_counts() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
    }
}
