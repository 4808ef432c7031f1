//! Builds a llama.cpp sampler chain from a request's sampling options, and samples under a
//! structured-output grammar.

use herd_proto::SamplingOptions;
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::data::LlamaTokenData;
use llama_cpp_2::token::data_array::LlamaTokenDataArray;
use llama_cpp_2::token::LlamaToken;

/// `format: "json"`: any JSON object, with bounded whitespace (llama.cpp's `json.gbnf`, as
/// Ollama uses it).
pub const JSON_GRAMMAR: &str = r#"root   ::= object
value  ::= object | array | string | number | ("true" | "false" | "null") ws
object ::= "{" ws ( string ":" ws value ("," ws string ":" ws value)* )? "}" ws
array  ::= "[" ws ( value ("," ws value)* )? "]" ws
string ::= "\"" ( [^"\\\x7F\x00-\x1F] | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F]{4}) )* "\"" ws
number ::= ("-"? ([0-9] | [1-9] [0-9]{0,15})) ("." [0-9]+)? ([eE] [-+]? [0-9] [1-9]{0,15})? ws
ws     ::= | " " | "\n" [ \t]{0,20}
"#;

/// Picks the next token as `chain` would, then asks `grammar` whether it may follow; only a
/// rejected token costs a second pass, with the grammar masking the candidates first. This is
/// llama.cpp's own order: a grammar applied to every candidate of every step cut decoding
/// from 94 to 28 tokens/s on this model.
fn sample_constrained(
    chain: &mut LlamaSampler,
    grammar: &mut LlamaSampler,
    ctx: &LlamaContext<'_>,
    logits_index: i32,
) -> LlamaToken {
    let mut candidates = ctx.token_data_array_ith(logits_index);
    chain.apply(&mut candidates);
    let picked = candidates.selected_token();
    let allowed = picked.is_some_and(|token| {
        let mut single = LlamaTokenDataArray::new(vec![LlamaTokenData::new(token, 1.0, 0.0)], false);
        grammar.apply(&mut single);
        single.data[0].logit().is_finite()
    });
    let token = match picked {
        Some(token) if allowed => token,
        _ => {
            let mut candidates = ctx.token_data_array_ith(logits_index);
            grammar.apply(&mut candidates);
            chain.apply(&mut candidates);
            candidates.selected_token().unwrap_or_else(|| {
                candidates
                    .data
                    .iter()
                    .max_by(|a, b| a.logit().total_cmp(&b.logit()))
                    .map_or(LlamaToken(0), LlamaTokenData::id)
            })
        }
    };
    chain.accept(token);
    grammar.accept(token);
    token
}

/// llama.cpp's "pick a random seed" value.
const RANDOM_SEED: u32 = u32::MAX;

/// How many recent tokens the repetition penalties look at, or `None` when no penalty applies.
fn penalty_window(options: &SamplingOptions, context_length: u32) -> Option<i32> {
    let last_n = if options.repeat_last_n < 0 {
        context_length as i32
    } else {
        options.repeat_last_n
    };
    let penalised =
        options.repeat_penalty != 1.0 || options.frequency_penalty != 0.0 || options.presence_penalty != 0.0;
    (penalised && last_n != 0).then_some(last_n)
}

/// Whether the chain [`build_sampler`] makes for `options` is greedy alone (temperature 0, no
/// penalties): its token is then [`greedy_token`] of the logits.
fn is_plain_greedy(options: &SamplingOptions, context_length: u32) -> bool {
    options.temperature <= 0.0 && penalty_window(options, context_length).is_none()
}

/// The token with the highest logit, the first of equals: what llama.cpp's greedy sampler
/// picks, without the candidate array of the whole vocabulary (262,144 entries for Gemma 3)
/// that it builds first, on every step of every slot.
fn greedy_token(logits: &[f32]) -> LlamaToken {
    let mut best = 0;
    for (index, &logit) in logits.iter().enumerate().skip(1) {
        if logit > logits[best] {
            best = index;
        }
    }
    LlamaToken(best as i32)
}

/// A sampler chain in llama.cpp's default order: penalties, top-k, typical, top-p, min-p,
/// temperature, then the final pick (greedy at temperature 0, else a seeded draw).
fn build_sampler(options: &SamplingOptions, context_length: u32, n_vocab: i32) -> LlamaSampler {
    let mut chain = Vec::new();
    if let Some(last_n) = penalty_window(options, context_length) {
        chain.push(LlamaSampler::penalties(
            n_vocab,
            last_n,
            options.repeat_penalty,
            options.frequency_penalty,
            options.presence_penalty,
        ));
    }
    if options.temperature <= 0.0 {
        chain.push(LlamaSampler::greedy());
        return LlamaSampler::chain_simple(chain);
    }
    if options.top_k > 0 {
        chain.push(LlamaSampler::top_k(options.top_k));
    }
    if options.typical_p > 0.0 && options.typical_p < 1.0 {
        chain.push(LlamaSampler::typical(options.typical_p, 1));
    }
    if options.top_p > 0.0 && options.top_p < 1.0 {
        chain.push(LlamaSampler::top_p(options.top_p, 1));
    }
    if options.min_p > 0.0 {
        chain.push(LlamaSampler::min_p(options.min_p, 1));
    }
    chain.push(LlamaSampler::temp(options.temperature));
    let seed = u32::try_from(options.seed).unwrap_or(RANDOM_SEED);
    chain.push(LlamaSampler::dist(seed));
    LlamaSampler::chain_simple(chain)
}

/// A slot's sampler: llama.cpp's chain for the request's options, which reads the highest
/// logit straight from the logits when the chain is greedy alone.
pub struct SlotSampler {
    chain: LlamaSampler,
    greedy: bool,
}

impl SlotSampler {
    /// The sampler for `options`.
    pub fn new(options: &SamplingOptions, context_length: u32, n_vocab: i32) -> Self {
        Self {
            chain: build_sampler(options, context_length, n_vocab),
            greedy: is_plain_greedy(options, context_length),
        }
    }

    /// Feeds the tokens already in the sequence (the prompt) to the chain's penalties.
    pub fn accept_many(&mut self, tokens: impl IntoIterator<Item = impl std::borrow::Borrow<LlamaToken>>) {
        self.chain.accept_many(tokens);
    }

    /// The next token from the logits at `logits_index`, under `grammar` when there is one.
    pub fn sample(&mut self, ctx: &LlamaContext, logits_index: i32, grammar: Option<&mut LlamaSampler>) -> LlamaToken {
        match grammar {
            Some(grammar) => sample_constrained(&mut self.chain, grammar, ctx, logits_index),
            None if self.greedy => greedy_token(ctx.get_logits_ith(logits_index)),
            None => self.chain.sample(ctx, logits_index),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Logits with repeated maxima, infinities and a NaN, from a fixed linear congruential
    /// sequence: the cases where "the highest" needs a rule.
    fn awkward_logits(seed: u64, len: usize) -> Vec<f32> {
        let mut state = seed;
        let mut logits: Vec<f32> = (0..len)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((state >> 40) % 2000) as f32 / 100.0 - 10.0
            })
            .collect();
        let top = logits.iter().copied().fold(f32::MIN, f32::max);
        logits[len / 3] = top;
        logits[len / 2] = top;
        logits[1] = f32::NEG_INFINITY;
        logits[2] = f32::NAN;
        logits
    }

    #[test]
    fn greedy_token_picks_what_llama_cpps_greedy_sampler_picks() {
        for seed in 0..20 {
            let logits = awkward_logits(seed, 5000);
            let mut candidates = LlamaTokenDataArray::from_iter(
                logits
                    .iter()
                    .enumerate()
                    .map(|(id, &logit)| LlamaTokenData::new(LlamaToken(id as i32), logit, 0.0)),
                false,
            );
            LlamaSampler::greedy().apply(&mut candidates);
            assert_eq!(Some(greedy_token(&logits)), candidates.selected_token(), "seed {seed}");
        }
        assert_eq!(
            greedy_token(&[1.0, 3.0, 3.0, 2.0]),
            LlamaToken(1),
            "the first of equals"
        );
    }

    #[test]
    fn only_temperature_zero_without_penalties_is_plain_greedy() {
        let greedy = SamplingOptions {
            temperature: 0.0,
            ..SamplingOptions::default()
        };
        assert!(is_plain_greedy(&greedy, 4096));
        let penalised = SamplingOptions {
            repeat_penalty: 1.1,
            ..greedy.clone()
        };
        assert!(!is_plain_greedy(&penalised, 4096));
        let window_off = SamplingOptions {
            repeat_last_n: 0,
            ..penalised
        };
        assert!(is_plain_greedy(&window_off, 4096), "a penalty over no tokens is none");
        assert!(!is_plain_greedy(&SamplingOptions::default(), 4096));
    }
}
