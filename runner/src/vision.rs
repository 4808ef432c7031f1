//! Images in prompts, through llama.cpp's mtmd: a vision projector turns each image into
//! embeddings that the model reads at the image's place in the prompt, between the begin-
//! and end-of-image tokens its family uses.

use std::hash::{BuildHasher, RandomState};
use std::io::Cursor;
use std::path::Path;

use base64::Engine as _;
use herd_proto::{ImageFormat, PromptImage};
use image_webp::WebPDecoder;
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::mtmd::{
    mtmd_default_marker, MtmdBitmap, MtmdContext, MtmdContextParams, MtmdInputChunkType, MtmdInputChunks, MtmdInputText,
};
use llama_cpp_2::token::LlamaToken;

/// Whether an entry of a slot's record of its cache stands for image embeddings. Each image
/// position is recorded as a negative value drawn from the image's bytes and its place in
/// the image, so it equals no token, and a cached prefix reaches past an image only into a
/// prompt with the same image at the same place.
pub fn is_image_position(token: LlamaToken) -> bool {
    token.0 < 0
}

/// The largest WebP decoded, in pixels (192 MiB of RGB): WebP allows 16383 x 16383, which
/// would take a gigabyte before the projector shrinks it to a few hundred tokens.
const MAX_WEBP_PIXELS: u64 = 1 << 26;

/// A loaded vision projector.
pub struct Vision {
    ctx: MtmdContext,
    /// Keys the image positions' record values with this process's own random key.
    identities: RandomState,
}

/// A stretch of a prompt: text tokens, or one image as mtmd's chunks.
pub enum PromptPiece {
    /// Tokens of text.
    Text(Vec<LlamaToken>),
    /// One image with the tokens that wrap it, and the record of each position it takes
    /// (see [`is_image_position`]).
    Image {
        chunks: MtmdInputChunks,
        record: Vec<LlamaToken>,
    },
}

impl PromptPiece {
    /// Positions the piece advances the sequence by.
    pub fn positions(&self) -> usize {
        self.record().len()
    }

    /// KV-cache cells the piece fills: more than its positions where the model numbers an
    /// image's tokens in two dimensions (M-RoPE, as Qwen-VL does).
    pub fn cells(&self) -> usize {
        match self {
            Self::Text(tokens) => tokens.len(),
            Self::Image { chunks, .. } => chunks.total_tokens(),
        }
    }

    /// What a slot records for the piece's positions: its tokens, or its image's values.
    pub fn record(&self) -> &[LlamaToken] {
        match self {
            Self::Text(tokens) => tokens,
            Self::Image { record, .. } => record,
        }
    }
}

impl Vision {
    /// Loads the projector at `path` for `model`; it must have a vision encoder.
    pub fn load(path: &Path, model: &LlamaModel, threads: i32, use_gpu: bool) -> Result<Self, String> {
        let params = MtmdContextParams {
            use_gpu,
            print_timings: false,
            n_threads: threads,
            ..MtmdContextParams::default()
        };
        let path = path.to_str().ok_or("the projector's path is not UTF-8")?;
        let ctx = MtmdContext::init_from_file(path, model, &params).map_err(|e| {
            format!("unable to load vision projector: {e} (not an mmproj GGUF, or not made for this model)")
        })?;
        if !ctx.support_vision() {
            return Err("unable to load vision projector: it has no vision encoder".into());
        }
        Ok(Self {
            ctx,
            identities: RandomState::new(),
        })
    }

    /// An image file as mtmd's bitmap: WebP decoded here, since llama.cpp's decoder (stb_image)
    /// does not read it (an animated one gives its first frame, alpha is dropped as stb drops
    /// it), every other format by mtmd. The error is a suffix for the caller's message.
    fn bitmap(&self, bytes: &[u8]) -> Result<MtmdBitmap, String> {
        if ImageFormat::sniff(bytes) != Some(ImageFormat::WebP) {
            return MtmdBitmap::from_buffer(&self.ctx, bytes, false).map_err(|_| String::new());
        }
        let mut decoder = WebPDecoder::new(Cursor::new(bytes)).map_err(|e| format!(": {e}"))?;
        let (width, height) = decoder.dimensions();
        if u64::from(width) * u64::from(height) > MAX_WEBP_PIXELS {
            return Err(format!(
                ": it is {width} x {height} pixels, more than the {MAX_WEBP_PIXELS} herd decodes"
            ));
        }
        let size = decoder.output_buffer_size().ok_or(": it is too large")?;
        let mut pixels = vec![0u8; size];
        decoder.read_image(&mut pixels).map_err(|e| format!(": {e}"))?;
        if decoder.has_alpha() {
            pixels = pixels
                .chunks_exact(4)
                .flat_map(|rgba| [rgba[0], rgba[1], rgba[2]])
                .collect();
        }
        MtmdBitmap::from_image_data(width, height, &pixels).map_err(|e| format!(": {e}"))
    }

    /// Cuts `prompt` at its images: each text stretch tokenized as the model does (special
    /// tokens parsed, BOS once, first), each image decoded and turned into mtmd's chunks.
    /// Errors name the image that cannot be used. Text must follow the last image: an image
    /// leaves no logits to sample the answer from. An image the model attends to all at
    /// once (Gemma 3's) must fit one decode of `batch_size` tokens.
    pub fn pieces(
        &self,
        model: &LlamaModel,
        prompt: &str,
        images: &[PromptImage],
        batch_size: usize,
    ) -> Result<Vec<PromptPiece>, String> {
        let vocab = model.vocab();
        let mut pieces = Vec::with_capacity(2 * images.len() + 1);
        let text = |pieces: &mut Vec<PromptPiece>, start: usize, end: usize| -> Result<(), String> {
            let stretch = prompt
                .get(start..end)
                .ok_or_else(|| format!("an image is placed at byte {end}, not a character boundary in order"))?;
            let tokens = vocab.tokenize(stretch.as_bytes(), pieces.is_empty(), true);
            if !tokens.is_empty() {
                pieces.push(PromptPiece::Text(tokens));
            }
            Ok(())
        };
        let mut start = 0;
        for (i, image) in images.iter().enumerate() {
            text(&mut pieces, start, image.offset)?;
            start = image.offset;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(image.data.trim())
                .map_err(|e| format!("invalid image input: images[{i}] is not base64: {e}"))?;
            let bitmap = self
                .bitmap(&bytes)
                .map_err(|why| format!("invalid image input: images[{i}] could not be decoded{why}"))?;
            let marked = MtmdInputText {
                text: mtmd_default_marker().to_string(),
                add_special: false,
                parse_special: true,
            };
            let chunks = self
                .ctx
                .tokenize(marked, &[&bitmap])
                .map_err(|e| format!("invalid image input: images[{i}] could not be prepared: {e}"))?;
            let image_tokens = (0..chunks.len())
                .filter_map(|c| chunks.get(c))
                .filter(|chunk| chunk.chunk_type() == MtmdInputChunkType::Image)
                .map(|chunk| chunk.n_tokens())
                .max()
                .unwrap_or(0);
            if self.ctx.decode_use_non_causal() && image_tokens > batch_size {
                return Err(format!(
                    "images[{i}] takes {image_tokens} tokens, more than num_batch ({batch_size}); this model \
                     reads an image in one batch, so raise num_batch"
                ));
            }
            let image_key = self.identities.hash_one(&bytes);
            let positions = chunks.total_positions().max(0) as usize;
            let record = (0..positions)
                .map(|at| LlamaToken(-1 - (self.identities.hash_one((image_key, at)) >> 33) as i32))
                .collect();
            pieces.push(PromptPiece::Image { chunks, record });
        }
        text(&mut pieces, start, prompt.len())?;
        if matches!(pieces.last(), Some(PromptPiece::Image { .. })) {
            return Err("the prompt ends with an image: text must follow it for the model to answer".into());
        }
        Ok(pieces)
    }

    /// Evaluates `pieces` into sequence `seq` from position `start` on (what comes before is
    /// in the cache already; `start` is not inside an image), `batch_size` tokens per decode
    /// at most. The last position's logits are left for sampling (index -1).
    pub fn evaluate(
        &mut self,
        ctx: &mut LlamaContext,
        seq: i32,
        pieces: &[PromptPiece],
        start: usize,
        batch_size: usize,
    ) -> Result<(), String> {
        let total: usize = pieces.iter().map(PromptPiece::positions).sum();
        let mut batch = LlamaBatch::new(batch_size, 1);
        let mut position = 0;
        for piece in pieces {
            let end = position + piece.positions();
            if end <= start {
                position = end;
                continue;
            }
            match piece {
                PromptPiece::Text(tokens) => {
                    let first = start.saturating_sub(position);
                    for (part, offset) in tokens[first..]
                        .chunks(batch_size)
                        .zip((position + first..).step_by(batch_size))
                    {
                        batch.clear();
                        for (at, &token) in (offset..).zip(part) {
                            batch
                                .add(token, at as i32, &[seq], at + 1 == total)
                                .map_err(|e| format!("prompt batch: {e}"))?;
                        }
                        ctx.decode(&mut batch)
                            .map_err(|e| format!("llama.cpp decode failed: {e}"))?;
                    }
                }
                PromptPiece::Image { chunks, .. } => {
                    chunks
                        .eval_chunks(
                            &mut self.ctx,
                            ctx,
                            position as i32,
                            seq,
                            batch_size as i32,
                            end == total,
                        )
                        .map_err(|e| format!("the image could not be evaluated: {e}"))?;
                }
            }
            position = end;
        }
        Ok(())
    }
}
