//! Images in prompts, through llama.cpp's mtmd: a vision projector turns each image into
//! embeddings that the model reads at the image's place in the prompt, between the begin-
//! and end-of-image tokens its family uses.

use std::io::Cursor;
use std::path::Path;

use base64::Engine as _;
use herd_proto::PromptImage;
use image_webp::WebPDecoder;
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::mtmd::{
    mtmd_default_marker, MtmdBitmap, MtmdContext, MtmdContextParams, MtmdInputChunkType, MtmdInputChunks, MtmdInputText,
};
use llama_cpp_2::token::LlamaToken;

/// Stands for a position holding image embeddings in a slot's record of its cache. It equals
/// no token, so a cached prefix never reaches past an image into another prompt.
pub const IMAGE_POSITION: LlamaToken = LlamaToken(-1);

/// The largest WebP decoded, in pixels (192 MiB of RGB): WebP allows 16383 x 16383, which
/// would take a gigabyte before the projector shrinks it to a few hundred tokens.
const MAX_WEBP_PIXELS: u64 = 1 << 26;

/// A loaded vision projector.
pub struct Vision {
    ctx: MtmdContext,
}

/// A stretch of a prompt: text tokens, or one image as mtmd's chunks.
pub enum PromptPiece {
    /// Tokens of text.
    Text(Vec<LlamaToken>),
    /// One image with the tokens that wrap it.
    Image(MtmdInputChunks),
}

impl PromptPiece {
    /// Positions the piece advances the sequence by.
    pub fn positions(&self) -> usize {
        match self {
            Self::Text(tokens) => tokens.len(),
            Self::Image(chunks) => chunks.total_positions().max(0) as usize,
        }
    }

    /// KV-cache cells the piece fills: more than its positions where the model numbers an
    /// image's tokens in two dimensions (M-RoPE, as Qwen-VL does).
    pub fn cells(&self) -> usize {
        match self {
            Self::Text(tokens) => tokens.len(),
            Self::Image(chunks) => chunks.total_tokens(),
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
        Ok(Self { ctx })
    }

    /// An image file as mtmd's bitmap: WebP decoded here, since llama.cpp's decoder (stb_image)
    /// does not read it (an animated one gives its first frame, alpha is dropped as stb drops
    /// it), every other format by mtmd. The error is a suffix for the caller's message.
    fn bitmap(&self, bytes: &[u8]) -> Result<MtmdBitmap, String> {
        if !(bytes.len() >= 12 && bytes.starts_with(b"RIFF") && &bytes[8..12] == b"WEBP") {
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
            pieces.push(PromptPiece::Image(chunks));
        }
        text(&mut pieces, start, prompt.len())?;
        if matches!(pieces.last(), Some(PromptPiece::Image(_))) {
            return Err("the prompt ends with an image: text must follow it for the model to answer".into());
        }
        Ok(pieces)
    }

    /// Evaluates `pieces` into sequence `seq` from position 0, `batch_size` tokens per decode
    /// at most, and returns what the sequence then holds ([`IMAGE_POSITION`] where images
    /// are). The last position's logits are left for sampling (index -1).
    pub fn evaluate(
        &mut self,
        ctx: &mut LlamaContext,
        seq: i32,
        pieces: &[PromptPiece],
        batch_size: usize,
    ) -> Result<Vec<LlamaToken>, String> {
        let total: usize = pieces.iter().map(PromptPiece::positions).sum();
        let mut held = Vec::with_capacity(total);
        let mut batch = LlamaBatch::new(batch_size, 1);
        for piece in pieces {
            match piece {
                PromptPiece::Text(tokens) => {
                    for part in tokens.chunks(batch_size) {
                        batch.clear();
                        for &token in part {
                            let last = held.len() + 1 == total;
                            batch
                                .add(token, held.len() as i32, &[seq], last)
                                .map_err(|e| format!("prompt batch: {e}"))?;
                            held.push(token);
                        }
                        ctx.decode(&mut batch)
                            .map_err(|e| format!("llama.cpp decode failed: {e}"))?;
                    }
                }
                PromptPiece::Image(chunks) => {
                    let before = held.len();
                    let last = before + piece.positions() == total;
                    let after = chunks
                        .eval_chunks(&mut self.ctx, ctx, before as i32, seq, batch_size as i32, last)
                        .map_err(|e| format!("the image could not be evaluated: {e}"))?;
                    held.resize(before.max(after.max(0) as usize), IMAGE_POSITION);
                }
            }
        }
        Ok(held)
    }
}
