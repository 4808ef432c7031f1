//! Builds a llama.cpp sampler chain from a request's sampling options.

use herd_proto::SamplingOptions;
use llama_cpp_2::sampling::LlamaSampler;

/// llama.cpp's "pick a random seed" value.
const RANDOM_SEED: u32 = u32::MAX;

/// A sampler chain in llama.cpp's default order: penalties, top-k, typical, top-p, min-p,
/// temperature, then the final pick (greedy at temperature 0, else a seeded draw).
pub fn build_sampler(options: &SamplingOptions, context_length: u32, n_vocab: i32) -> LlamaSampler {
    let mut chain = Vec::new();
    let last_n = if options.repeat_last_n < 0 {
        context_length as i32
    } else {
        options.repeat_last_n
    };
    let penalised =
        options.repeat_penalty != 1.0 || options.frequency_penalty != 0.0 || options.presence_penalty != 0.0;
    if penalised && last_n != 0 {
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
