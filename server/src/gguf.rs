//! A GGUF header reader that validates a file before llama.cpp ever sees it.
//!
//! It reads the metadata key/values and tensor descriptors of GGUF versions 2 and 3
//! (little-endian) and checks every count, length and offset against the size of the file
//! *before* allocating or seeking: a hostile file (billions of keys, strings longer than the
//! file, array depth bombs, tensors past the end) is an error, never a crash or a huge
//! allocation. Tensor data itself is not read.

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use serde::ser::{Serialize, SerializeSeq, Serializer};
use serde_json::{Map, Value};

/// The magic bytes every GGUF file starts with.
pub const GGUF_MAGIC: [u8; 4] = *b"GGUF";
/// Tensor data alignment when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// Most dimensions a tensor may have (`GGML_MAX_DIMS`).
pub const MAX_DIMS: u32 = 4;
/// Longest tensor name in bytes (`GGML_MAX_NAME` is 64, including the NUL).
pub const MAX_TENSOR_NAME_LEN: usize = 63;
/// Deepest nesting of arrays inside arrays.
pub const MAX_ARRAY_DEPTH: usize = 8;
/// Longest string value herd will hold in memory (strings in skipped arrays are not held).
pub const MAX_STRING_LEN: u64 = 64 << 20;
/// Most array elements kept in memory over the whole file; arrays past it are recorded without
/// their values, as if longer than [`ReadOptions::keep_arrays_up_to`].
pub const MAX_KEPT_ELEMENTS: u64 = 16 << 20;

/// Smallest possible metadata entry: key length (8), value type (4), one byte of value.
const MIN_KV_BYTES: u64 = 8 + 4 + 1;
/// Smallest possible tensor descriptor: name length (8), n_dims (4), type (4), offset (8).
const MIN_TENSOR_BYTES: u64 = 8 + 4 + 4 + 8;

/// What went wrong while reading a GGUF file. Every variant means the file must not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    /// The file could not be opened or read.
    #[error("cannot read the file: {0}")]
    Io(#[from] io::Error),
    /// The file does not start with `GGUF`.
    #[error("not a GGUF file: it starts with {found:?} instead of \"GGUF\"")]
    BadMagic {
        /// The first four bytes, lossily decoded.
        found: String,
    },
    /// A big-endian GGUF file.
    #[error("big-endian GGUF files are not supported; convert the model to little-endian")]
    BigEndian,
    /// A GGUF version other than 2 or 3.
    #[error("unsupported GGUF version {0}: only versions 2 and 3 are supported (re-convert the model with a current llama.cpp)")]
    UnsupportedVersion(u32),
    /// The file ends in the middle of the header.
    #[error("the file is truncated: it ends at byte {file_len} while reading {what} at byte {offset}")]
    Truncated {
        /// What was being read.
        what: String,
        /// Where it starts.
        offset: u64,
        /// The size of the file.
        file_len: u64,
    },
    /// A count in the header cannot fit in the file.
    #[error("the header claims {count} {what}, more than a {file_len}-byte file can hold")]
    ImplausibleCount {
        /// `tensors` or `metadata entries`.
        what: &'static str,
        /// The claimed count.
        count: u64,
        /// The size of the file.
        file_len: u64,
    },
    /// A string or array length runs past the end of the file.
    #[error("{what} at byte {offset} claims a length of {len} but only {remaining} bytes remain in the file")]
    LengthPastEnd {
        /// What was being read.
        what: String,
        /// Where the length was read.
        offset: u64,
        /// The claimed length.
        len: u64,
        /// Bytes left in the file.
        remaining: u64,
    },
    /// A string that is too long to hold in memory.
    #[error("{what} at byte {offset} is {len} bytes long, over herd's limit of {MAX_STRING_LEN} bytes")]
    StringTooLong {
        /// What was being read.
        what: String,
        /// Where the length was read.
        offset: u64,
        /// The claimed length.
        len: u64,
    },
    /// A metadata key that is not UTF-8.
    #[error("the metadata key at byte {offset} is not valid UTF-8")]
    InvalidKey {
        /// Where the key starts.
        offset: u64,
    },
    /// The same metadata key twice.
    #[error("duplicate metadata key {0:?}")]
    DuplicateKey(String),
    /// A metadata value type outside the GGUF specification.
    #[error("metadata key {key:?} has unknown value type {type_id}")]
    UnknownValueType {
        /// The key.
        key: String,
        /// The type id found.
        type_id: u32,
    },
    /// Arrays nested deeper than [`MAX_ARRAY_DEPTH`].
    #[error("metadata key {key:?} nests arrays more than {MAX_ARRAY_DEPTH} deep")]
    ArrayTooDeep {
        /// The key.
        key: String,
    },
    /// `general.alignment` is not a power-of-two `u32`.
    #[error("general.alignment must be a power of two stored as u32, found {found}")]
    BadAlignment {
        /// What was found.
        found: String,
    },
    /// A tensor descriptor is invalid.
    #[error("tensor {name:?}: {reason}")]
    BadTensor {
        /// The tensor's name (lossily decoded).
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// The same tensor name twice.
    #[error("duplicate tensor name {0:?}")]
    DuplicateTensor(String),
}

/// How much of the metadata to keep in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadOptions {
    /// Arrays with more elements than this are validated and skipped, and recorded as
    /// [`ArrayInfo`] with `values: None` (0 keeps no array values; `usize::MAX` keeps all,
    /// within [`MAX_KEPT_ELEMENTS`]).
    pub keep_arrays_up_to: usize,
}

impl Default for ReadOptions {
    /// Keeps arrays of up to 1024 elements, like Ollama's default.
    fn default() -> Self {
        Self {
            keep_arrays_up_to: 1024,
        }
    }
}

/// The type of a GGUF metadata value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GgufType {
    /// `uint8` (0).
    U8,
    /// `int8` (1).
    I8,
    /// `uint16` (2).
    U16,
    /// `int16` (3).
    I16,
    /// `uint32` (4).
    U32,
    /// `int32` (5).
    I32,
    /// `float32` (6).
    F32,
    /// `bool` (7).
    Bool,
    /// `string` (8).
    String,
    /// `array` (9).
    Array,
    /// `uint64` (10).
    U64,
    /// `int64` (11).
    I64,
    /// `float64` (12).
    F64,
}

impl GgufType {
    /// The type for a GGUF type id, if the id is known.
    pub fn from_id(id: u32) -> Option<Self> {
        use GgufType::*;
        Some(match id {
            0 => U8,
            1 => I8,
            2 => U16,
            3 => I16,
            4 => U32,
            5 => I32,
            6 => F32,
            7 => Bool,
            8 => String,
            9 => Array,
            10 => U64,
            11 => I64,
            12 => F64,
            _ => return None,
        })
    }

    /// Fewest bytes one value of this type takes in the file.
    fn min_size(self) -> u64 {
        use GgufType::*;
        match self {
            U8 | I8 | Bool => 1,
            U16 | I16 => 2,
            U32 | I32 | F32 => 4,
            U64 | I64 | F64 | String => 8,
            Array => 4 + 8,
        }
    }
}

/// An array value; its elements are only held when the array was short enough to keep.
#[derive(Debug, Clone, PartialEq)]
pub struct ArrayInfo {
    /// Type of the elements.
    pub elem_type: GgufType,
    /// Number of elements in the file.
    pub len: u64,
    /// The elements, or `None` when the array was longer than
    /// [`ReadOptions::keep_arrays_up_to`] (it was still validated).
    pub values: Option<Vec<GgufValue>>,
}

impl Serialize for ArrayInfo {
    /// The elements as a JSON array; `[]` when they were not kept.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let values = self.values.as_deref().unwrap_or_default();
        let mut seq = serializer.serialize_seq(Some(values.len()))?;
        for v in values {
            seq.serialize_element(v)?;
        }
        seq.end()
    }
}

/// A GGUF metadata value. Serializes as the plain JSON value (number, bool, string, array).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(untagged)]
pub enum GgufValue {
    /// `uint8`.
    U8(u8),
    /// `int8`.
    I8(i8),
    /// `uint16`.
    U16(u16),
    /// `int16`.
    I16(i16),
    /// `uint32`.
    U32(u32),
    /// `int32`.
    I32(i32),
    /// `float32`.
    F32(f32),
    /// `bool`.
    Bool(bool),
    /// `string` (invalid UTF-8 is replaced with U+FFFD).
    String(String),
    /// `array`.
    Array(ArrayInfo),
    /// `uint64`.
    U64(u64),
    /// `int64`.
    I64(i64),
    /// `float64`.
    F64(f64),
}

impl GgufValue {
    /// The string, if this is a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            GgufValue::String(s) => Some(s),
            _ => None,
        }
    }

    /// The value as `u64`, if it is a non-negative integer of any width.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            GgufValue::U8(v) => Some(v.into()),
            GgufValue::U16(v) => Some(v.into()),
            GgufValue::U32(v) => Some(v.into()),
            GgufValue::U64(v) => Some(v),
            GgufValue::I8(v) => u64::try_from(v).ok(),
            GgufValue::I16(v) => u64::try_from(v).ok(),
            GgufValue::I32(v) => u64::try_from(v).ok(),
            GgufValue::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// The GGUF type of this value.
    pub fn gguf_type(&self) -> GgufType {
        match self {
            GgufValue::U8(_) => GgufType::U8,
            GgufValue::I8(_) => GgufType::I8,
            GgufValue::U16(_) => GgufType::U16,
            GgufValue::I16(_) => GgufType::I16,
            GgufValue::U32(_) => GgufType::U32,
            GgufValue::I32(_) => GgufType::I32,
            GgufValue::F32(_) => GgufType::F32,
            GgufValue::Bool(_) => GgufType::Bool,
            GgufValue::String(_) => GgufType::String,
            GgufValue::Array(_) => GgufType::Array,
            GgufValue::U64(_) => GgufType::U64,
            GgufValue::I64(_) => GgufType::I64,
            GgufValue::F64(_) => GgufType::F64,
        }
    }

    /// The value as JSON. `f32` values keep their shortest decimal form (`1e-6`, not
    /// `9.999999974752427e-7`); NaN and infinities become `null`; arrays not kept become `[]`.
    pub fn to_json(&self) -> Value {
        match self {
            GgufValue::U8(v) => Value::from(*v),
            GgufValue::I8(v) => Value::from(*v),
            GgufValue::U16(v) => Value::from(*v),
            GgufValue::I16(v) => Value::from(*v),
            GgufValue::U32(v) => Value::from(*v),
            GgufValue::I32(v) => Value::from(*v),
            GgufValue::U64(v) => Value::from(*v),
            GgufValue::I64(v) => Value::from(*v),
            GgufValue::F32(v) => float_json(f32_to_f64(*v)),
            GgufValue::F64(v) => float_json(*v),
            GgufValue::Bool(v) => Value::Bool(*v),
            GgufValue::String(s) => Value::String(s.clone()),
            GgufValue::Array(a) => Value::Array(
                a.values
                    .as_deref()
                    .unwrap_or_default()
                    .iter()
                    .map(GgufValue::to_json)
                    .collect(),
            ),
        }
    }
}

/// An `f32` widened through its shortest decimal form, so `0.1f32` becomes `0.1f64`.
fn f32_to_f64(v: f32) -> f64 {
    if v.is_finite() {
        v.to_string().parse().unwrap_or(f64::from(v))
    } else {
        f64::from(v)
    }
}

fn float_json(v: f64) -> Value {
    serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number)
}

/// A ggml tensor element type, with its block layout (from ggml's `type_traits`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GgmlType(u32);

/// `(id, name, elements per block, bytes per block)` for every ggml type a GGUF file may hold.
const GGML_TYPES: &[(u32, &str, u64, u64)] = &[
    (0, "F32", 1, 4),
    (1, "F16", 1, 2),
    (2, "Q4_0", 32, 18),
    (3, "Q4_1", 32, 20),
    (6, "Q5_0", 32, 22),
    (7, "Q5_1", 32, 24),
    (8, "Q8_0", 32, 34),
    (9, "Q8_1", 32, 36),
    (10, "Q2_K", 256, 84),
    (11, "Q3_K", 256, 110),
    (12, "Q4_K", 256, 144),
    (13, "Q5_K", 256, 176),
    (14, "Q6_K", 256, 210),
    (15, "Q8_K", 256, 292),
    (16, "IQ2_XXS", 256, 66),
    (17, "IQ2_XS", 256, 74),
    (18, "IQ3_XXS", 256, 98),
    (19, "IQ1_S", 256, 50),
    (20, "IQ4_NL", 32, 18),
    (21, "IQ3_S", 256, 110),
    (22, "IQ2_S", 256, 82),
    (23, "IQ4_XS", 256, 136),
    (24, "I8", 1, 1),
    (25, "I16", 1, 2),
    (26, "I32", 1, 4),
    (27, "I64", 1, 8),
    (28, "F64", 1, 8),
    (29, "IQ1_M", 256, 56),
    (30, "BF16", 1, 2),
    (34, "TQ1_0", 256, 54),
    (35, "TQ2_0", 256, 66),
    (39, "MXFP4", 32, 17),
    (40, "NVFP4", 64, 36),
    (41, "Q1_0", 128, 18),
    (42, "Q2_0", 64, 18),
];

impl GgmlType {
    fn entry(self) -> (u32, &'static str, u64, u64) {
        GGML_TYPES
            .iter()
            .copied()
            .find(|e| e.0 == self.0)
            .unwrap_or((self.0, "unknown", 1, 0))
    }

    /// The type for a ggml type id, if ggml knows it (removed ids such as 4, 5 and 31–33 are not).
    pub fn from_id(id: u32) -> Option<Self> {
        GGML_TYPES.iter().any(|e| e.0 == id).then_some(GgmlType(id))
    }

    /// The name, as ggml and Ollama print it (`Q4_K`, `F16`).
    pub fn name(self) -> &'static str {
        self.entry().1
    }

    /// Elements per block.
    pub fn block_size(self) -> u64 {
        self.entry().2
    }

    /// Bytes per block.
    pub fn type_size(self) -> u64 {
        self.entry().3
    }
}

impl std::fmt::Display for GgmlType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl Serialize for GgmlType {
    /// The type's name.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

/// One tensor descriptor.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TensorInfo {
    /// Tensor name (`token_embd.weight`).
    pub name: String,
    /// Dimensions, innermost first (`ne[0]`, `ne[1]`...).
    pub dims: Vec<u64>,
    /// Element type.
    pub ggml_type: GgmlType,
    /// Offset of the data from [`GgufInfo::data_offset`].
    pub offset: u64,
}

impl TensorInfo {
    /// Number of elements (checked not to overflow when the file was read).
    pub fn element_count(&self) -> u64 {
        self.dims
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d))
            .unwrap_or(u64::MAX)
    }

    /// Size of the data in bytes (checked not to overflow when the file was read).
    pub fn byte_size(&self) -> u64 {
        tensor_bytes(&self.dims, self.ggml_type).unwrap_or(u64::MAX)
    }
}

fn tensor_bytes(dims: &[u64], t: GgmlType) -> Option<u64> {
    let (first, rest) = match dims.split_first() {
        Some(split) => split,
        None => (&1, &[][..]),
    };
    let row = (first / t.block_size()).checked_mul(t.type_size())?;
    rest.iter().try_fold(row, |acc, &d| acc.checked_mul(d))
}

/// Everything in a GGUF header.
#[derive(Debug, Clone, PartialEq)]
pub struct GgufInfo {
    /// GGUF version (2 or 3).
    pub version: u32,
    /// Metadata key/values, in file order.
    pub metadata: Vec<(String, GgufValue)>,
    /// Tensor descriptors, in file order.
    pub tensors: Vec<TensorInfo>,
    /// Tensor data alignment (`general.alignment`, default 32).
    pub alignment: u64,
    /// Where tensor data starts: the end of the header rounded up to the alignment.
    pub data_offset: u64,
}

impl GgufInfo {
    /// The value of a metadata key.
    pub fn get(&self, key: &str) -> Option<&GgufValue> {
        self.metadata.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// `general.architecture` (`gemma3`, `llama`).
    pub fn architecture(&self) -> Option<&str> {
        self.get("general.architecture").and_then(GgufValue::as_str)
    }

    /// Total number of weights: the sum of every tensor's element count.
    pub fn parameter_count(&self) -> u64 {
        self.tensors
            .iter()
            .fold(0u64, |acc, t| acc.saturating_add(t.element_count()))
    }

    /// The quantization from `general.file_type`, named as Ollama names it (`Q4_K_M`, `F16`);
    /// `unknown` for an id Ollama does not name; `None` when the key is absent.
    pub fn file_type_name(&self) -> Option<String> {
        let id = self.get("general.file_type")?.as_u64()?;
        Some(file_type_name(id).to_string())
    }

    /// `<arch>.context_length`: the training context.
    pub fn context_length(&self) -> Option<u64> {
        self.arch_u64("context_length")
    }

    /// `<arch>.embedding_length`.
    pub fn embedding_length(&self) -> Option<u64> {
        self.arch_u64("embedding_length")
    }

    /// `<arch>.attention.head_count`.
    pub fn head_count(&self) -> Option<u64> {
        self.arch_u64("attention.head_count")
    }

    /// How the model's KV cache grows, from its attention metadata; `None` when it lacks it.
    pub fn kv_layout(&self) -> Option<KvLayout> {
        let layers = self.arch_u64("block_count")?;
        let heads = self.arch_u64("attention.head_count")?.max(1);
        // Per-layer head counts are arrays (dropped at read time): assume as many as heads.
        let kv_heads = self.arch_u64("attention.head_count_kv").unwrap_or(heads);
        let head_size = self.embedding_length()? / heads;
        let key_length = self.arch_u64("attention.key_length").unwrap_or(head_size);
        let value_length = self.arch_u64("attention.value_length").unwrap_or(head_size);
        let sliding_window = self.arch_u64("attention.sliding_window").unwrap_or(0);
        // llama.cpp's layer patterns: one full-attention layer in every `n`.
        let full_every = match self.architecture()? {
            "gemma3" => 6,
            "gemma2" | "gpt-oss" => 2,
            "cohere2" | "llama4" => 4,
            _ => 1,
        };
        let sliding_layers = if sliding_window > 0 {
            layers - layers / full_every
        } else {
            0
        };
        Some(KvLayout {
            layers,
            sliding_layers,
            sliding_window,
            // f16 keys and values.
            bytes_per_position: kv_heads * (key_length + value_length) * 2,
            training_context: self.context_length().unwrap_or(u64::MAX),
        })
    }

    /// Weight bytes per transformer block, and of what llama.cpp offloads with the last
    /// layer (the output head: `output.weight`, or the tied embedding it copies, and norms).
    pub fn layer_weights(&self) -> LayerWeights {
        let mut blocks = vec![0u64; self.arch_u64("block_count").unwrap_or(0) as usize];
        let mut head = 0u64;
        let mut embedding = 0u64;
        let mut has_output = false;
        for tensor in &self.tensors {
            let bytes = tensor.byte_size();
            let block = tensor
                .name
                .strip_prefix("blk.")
                .and_then(|rest| rest.split('.').next())
                .and_then(|n| n.parse::<usize>().ok());
            match block {
                Some(i) if i < blocks.len() => blocks[i] = blocks[i].saturating_add(bytes),
                _ if tensor.name == "token_embd.weight" => embedding = bytes,
                _ if tensor.name.starts_with("output") => {
                    has_output |= tensor.name == "output.weight";
                    head = head.saturating_add(bytes);
                }
                _ => {}
            }
        }
        // A tied head reuses the embedding on the CPU, and is copied to a GPU.
        let tied_head = if has_output { 0 } else { embedding };
        LayerWeights {
            blocks,
            head: head.saturating_add(tied_head),
            tied_head,
            embedding,
        }
    }

    /// Whether the weights are an embedding model (`<arch>.pooling_type` is set), as Ollama
    /// decides between the `embedding` and `completion` capabilities.
    pub fn is_embedding_model(&self) -> bool {
        self.arch_u64("pooling_type").is_some()
    }

    fn arch_u64(&self, suffix: &str) -> Option<u64> {
        let arch = self.architecture()?;
        self.get(&format!("{arch}.{suffix}"))?.as_u64()
    }

    /// `tokenizer.chat_template` (a Jinja template).
    pub fn chat_template(&self) -> Option<&str> {
        self.get("tokenizer.chat_template").and_then(GgufValue::as_str)
    }

    /// Metadata for `/api/show`'s `model_info`: every key except `general.name` and
    /// `tokenizer.chat_template`, values as JSON. Arrays of more than 5 elements become `[]`
    /// unless `verbose` (and arrays whose values were not kept are always `[]`).
    pub fn model_info(&self, verbose: bool) -> Map<String, Value> {
        let mut out = Map::new();
        for (key, value) in &self.metadata {
            if key == "general.name" || key == "tokenizer.chat_template" {
                continue;
            }
            let json = match value {
                GgufValue::Array(a) if !verbose && a.len > 5 => Value::Array(Vec::new()),
                other => other.to_json(),
            };
            out.insert(key.clone(), json);
        }
        // Ollama's decoder adds it to every model's info.
        out.insert("general.parameter_count".into(), self.parameter_count().into());
        out
    }
}

/// A model's weights as llama.cpp splits them between devices.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LayerWeights {
    /// Bytes of each transformer block, first to last.
    pub blocks: Vec<u64>,
    /// Bytes offloaded only when every block is: the output head and final norm.
    pub head: u64,
    /// The part of `head` that is the input embedding itself (a tied head): no extra bytes
    /// on the CPU, a copy on a GPU.
    pub tied_head: u64,
    /// The input embedding, which stays on the CPU.
    pub embedding: u64,
}

/// What one cached position costs a model, layer by layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KvLayout {
    /// Transformer layers.
    pub layers: u64,
    /// Layers that attend over a sliding window only.
    pub sliding_layers: u64,
    /// Positions such a layer attends to.
    pub sliding_window: u64,
    /// Bytes one position takes in one layer's cache (keys and values).
    pub bytes_per_position: u64,
    /// The context the model was trained with (a longer one is clamped to it).
    pub training_context: u64,
}

impl KvLayout {
    /// Bytes of the cache for `parallel` sequences of `context` positions each, as llama.cpp
    /// sizes it: a sliding layer keeps its window plus one `ubatch` per sequence.
    pub fn cache_bytes(&self, context: u64, parallel: u64, ubatch: u64) -> u64 {
        let context = context.min(self.training_context);
        let sliding_context = context.min(self.sliding_window + ubatch);
        let full_layers = self.layers - self.sliding_layers;
        let positions = full_layers * context + self.sliding_layers * sliding_context;
        positions
            .saturating_mul(parallel)
            .saturating_mul(self.bytes_per_position)
    }
}

/// Ollama's name for a `general.file_type` (llama.cpp's `llama_ftype`).
pub fn file_type_name(id: u64) -> &'static str {
    match id {
        0 => "F32",
        1 => "F16",
        2 => "Q4_0",
        3 => "Q4_1",
        4 => "MXFP4",
        7 => "Q8_0",
        8 => "Q5_0",
        9 => "Q5_1",
        10 => "Q2_K",
        11 => "Q3_K_S",
        12 => "Q3_K_M",
        13 => "Q3_K_L",
        14 => "Q4_K_S",
        15 => "Q4_K_M",
        16 => "Q5_K_S",
        17 => "Q5_K_M",
        18 => "Q6_K",
        19 => "IQ2_XXS",
        20 => "IQ2_XS",
        21 => "Q2_K_S",
        22 => "IQ3_XS",
        23 => "IQ3_XXS",
        24 => "IQ1_S",
        25 => "IQ4_NL",
        26 => "IQ3_S",
        27 => "IQ3_M",
        28 => "IQ2_S",
        29 => "IQ2_M",
        30 => "IQ4_XS",
        31 => "IQ1_M",
        32 => "BF16",
        36 => "TQ1_0",
        37 => "TQ2_0",
        38 => "MXFP4",
        _ => "unknown",
    }
}

/// A count the way Ollama's `format.HumanNumber` prints it: `268.10M`, `3.2B`, `7B`, `1K`, `999`.
pub fn human_number(n: u64) -> String {
    const THOUSAND: u64 = 1_000;
    const MILLION: u64 = 1_000_000;
    const BILLION: u64 = 1_000_000_000;
    let scaled = |unit: u64, decimals: usize, suffix: &str| {
        let v = n as f64 / unit as f64;
        if v == v.floor() {
            format!("{v:.0}{suffix}")
        } else {
            format!("{v:.decimals$}{suffix}")
        }
    };
    if n >= BILLION {
        scaled(BILLION, 1, "B")
    } else if n >= MILLION {
        scaled(MILLION, 2, "M")
    } else if n >= THOUSAND {
        format!("{:.0}K", n as f64 / THOUSAND as f64)
    } else {
        n.to_string()
    }
}

/// Reads and validates the GGUF header of `file` (read from its start), which is `file_len`
/// bytes long.
pub fn read_gguf(file: &mut (impl Read + Seek), file_len: u64, options: ReadOptions) -> Result<GgufInfo, GgufError> {
    file.seek(SeekFrom::Start(0))?;
    let mut r = Reader {
        inner: BufReader::with_capacity(1 << 16, file),
        pos: 0,
        len: file_len,
        keep_up_to: u64::try_from(options.keep_arrays_up_to).unwrap_or(u64::MAX),
        kept: 0,
    };
    r.read_file()
}

/// Opens `path` and reads its GGUF header with [`read_gguf`].
pub fn read_gguf_path(path: &Path, options: ReadOptions) -> Result<GgufInfo, GgufError> {
    let mut file = File::open(path)?;
    let len = file.metadata()?.len();
    read_gguf(&mut file, len, options)
}

/// Parses `data` as a GGUF file and throws the result away: the entry point for a fuzzer.
#[cfg(test)]
fn fuzz_entry(data: &[u8]) {
    let options = ReadOptions {
        keep_arrays_up_to: 1024,
    };
    let _ = read_gguf(&mut io::Cursor::new(data), data.len() as u64, options);
}

/// What is being read, for error messages (formatted only when an error occurs).
#[derive(Clone, Copy)]
enum What<'a> {
    Text(&'static str),
    Value(&'a str),
    Array(&'a str),
}

impl What<'_> {
    fn describe(self) -> String {
        match self {
            What::Text(text) => text.to_string(),
            What::Value(key) => format!("the value of {key:?}"),
            What::Array(key) => format!("the array {key:?}"),
        }
    }
}

struct Reader<R> {
    inner: BufReader<R>,
    pos: u64,
    len: u64,
    keep_up_to: u64,
    kept: u64,
}

impl<R: Read + Seek> Reader<R> {
    fn remaining(&self) -> u64 {
        self.len.saturating_sub(self.pos)
    }

    fn truncated(&self, what: What<'_>) -> GgufError {
        GgufError::Truncated {
            what: what.describe(),
            offset: self.pos,
            file_len: self.len,
        }
    }

    fn bytes<const N: usize>(&mut self, what: What<'_>) -> Result<[u8; N], GgufError> {
        if (N as u64) > self.remaining() {
            return Err(self.truncated(what));
        }
        let mut buf = [0u8; N];
        match self.inner.read_exact(&mut buf) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Err(self.truncated(what)),
            Err(e) => return Err(e.into()),
        }
        self.pos += N as u64;
        Ok(buf)
    }

    fn u32(&mut self, what: What<'_>) -> Result<u32, GgufError> {
        self.bytes::<4>(what).map(u32::from_le_bytes)
    }

    fn u64(&mut self, what: What<'_>) -> Result<u64, GgufError> {
        self.bytes::<8>(what).map(u64::from_le_bytes)
    }

    fn skip(&mut self, n: u64, what: What<'_>) -> Result<(), GgufError> {
        if n > self.remaining() {
            return Err(self.truncated(what));
        }
        let step = i64::try_from(n).map_err(|_| self.truncated(what))?;
        self.inner.seek_relative(step)?;
        self.pos += n;
        Ok(())
    }

    /// Reads a string's length and checks it against the rest of the file.
    fn string_len(&mut self, what: What<'_>) -> Result<u64, GgufError> {
        let offset = self.pos;
        let len = self.u64(what)?;
        if len > self.remaining() {
            return Err(GgufError::LengthPastEnd {
                what: what.describe(),
                offset,
                len,
                remaining: self.remaining(),
            });
        }
        if len > MAX_STRING_LEN {
            return Err(GgufError::StringTooLong {
                what: what.describe(),
                offset,
                len,
            });
        }
        Ok(len)
    }

    fn string_bytes(&mut self, what: What<'_>) -> Result<Vec<u8>, GgufError> {
        let len = self.string_len(what)?;
        // `len` is bounded by both the file and MAX_STRING_LEN, so this allocation is safe.
        let mut buf = vec![0u8; usize::try_from(len).map_err(|_| self.truncated(what))?];
        match self.inner.read_exact(&mut buf) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Err(self.truncated(what)),
            Err(e) => return Err(e.into()),
        }
        self.pos += len;
        Ok(buf)
    }

    fn read_file(&mut self) -> Result<GgufInfo, GgufError> {
        let magic = self.bytes::<4>(What::Text("the magic bytes"))?;
        if magic != GGUF_MAGIC {
            return Err(GgufError::BadMagic {
                found: String::from_utf8_lossy(&magic).into_owned(),
            });
        }
        let version = self.u32(What::Text("the version"))?;
        if version != 2 && version != 3 {
            if version.swap_bytes() == 2 || version.swap_bytes() == 3 {
                return Err(GgufError::BigEndian);
            }
            return Err(GgufError::UnsupportedVersion(version));
        }
        let tensor_count = self.u64(What::Text("the tensor count"))?;
        let kv_count = self.u64(What::Text("the metadata count"))?;
        if tensor_count > self.remaining() / MIN_TENSOR_BYTES {
            return Err(GgufError::ImplausibleCount {
                what: "tensors",
                count: tensor_count,
                file_len: self.len,
            });
        }
        if kv_count > self.remaining() / MIN_KV_BYTES {
            return Err(GgufError::ImplausibleCount {
                what: "metadata entries",
                count: kv_count,
                file_len: self.len,
            });
        }

        let mut metadata = Vec::new();
        let mut keys = HashSet::new();
        for _ in 0..kv_count {
            let key_offset = self.pos;
            let key = self.string_bytes(What::Text("a metadata key"))?;
            let key = String::from_utf8(key).map_err(|_| GgufError::InvalidKey { offset: key_offset })?;
            if !keys.insert(key.clone()) {
                return Err(GgufError::DuplicateKey(key));
            }
            let type_id = self.u32(What::Text("a metadata value type"))?;
            let value_type = GgufType::from_id(type_id).ok_or_else(|| GgufError::UnknownValueType {
                key: key.clone(),
                type_id,
            })?;
            let value = self.value(&key, value_type, 0, true)?;
            metadata.push((key, value));
        }

        let alignment = match metadata.iter().find(|(k, _)| k == "general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some((_, GgufValue::U32(a))) if a.is_power_of_two() => u64::from(*a),
            Some((_, other)) => {
                return Err(GgufError::BadAlignment {
                    found: format!("{} ({:?})", other.to_json(), other.gguf_type()),
                })
            }
        };

        let mut tensors = Vec::new();
        let mut names = HashSet::new();
        for _ in 0..tensor_count {
            let tensor = self.tensor_info(alignment)?;
            if !names.insert(tensor.name.clone()) {
                return Err(GgufError::DuplicateTensor(tensor.name));
            }
            tensors.push(tensor);
        }

        let data_offset = self.pos.div_ceil(alignment).saturating_mul(alignment);
        for t in &tensors {
            let size = t.byte_size();
            let end = data_offset.checked_add(t.offset).and_then(|s| s.checked_add(size));
            if end.is_none_or(|end| end > self.len) {
                return Err(GgufError::BadTensor {
                    name: t.name.clone(),
                    reason: format!(
                        "its {size} bytes of data at offset {} (file offset {}) run past the end of the {}-byte file",
                        t.offset,
                        data_offset.saturating_add(t.offset),
                        self.len
                    ),
                });
            }
        }

        Ok(GgufInfo {
            version,
            metadata,
            tensors,
            alignment,
            data_offset,
        })
    }

    fn value(&mut self, key: &str, t: GgufType, depth: usize, keep: bool) -> Result<GgufValue, GgufError> {
        Ok(match t {
            GgufType::U8 => GgufValue::U8(self.bytes::<1>(What::Value(key))?[0]),
            GgufType::I8 => GgufValue::I8(i8::from_le_bytes(self.bytes::<1>(What::Value(key))?)),
            GgufType::U16 => GgufValue::U16(u16::from_le_bytes(self.bytes::<2>(What::Value(key))?)),
            GgufType::I16 => GgufValue::I16(i16::from_le_bytes(self.bytes::<2>(What::Value(key))?)),
            GgufType::U32 => GgufValue::U32(self.u32(What::Value(key))?),
            GgufType::I32 => GgufValue::I32(i32::from_le_bytes(self.bytes::<4>(What::Value(key))?)),
            GgufType::F32 => GgufValue::F32(f32::from_le_bytes(self.bytes::<4>(What::Value(key))?)),
            GgufType::Bool => GgufValue::Bool(self.bytes::<1>(What::Value(key))?[0] != 0),
            GgufType::U64 => GgufValue::U64(self.u64(What::Value(key))?),
            GgufType::I64 => GgufValue::I64(i64::from_le_bytes(self.bytes::<8>(What::Value(key))?)),
            GgufType::F64 => GgufValue::F64(f64::from_le_bytes(self.bytes::<8>(What::Value(key))?)),
            GgufType::String => {
                if keep {
                    let bytes = self.string_bytes(What::Value(key))?;
                    GgufValue::String(match String::from_utf8(bytes) {
                        Ok(s) => s,
                        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
                    })
                } else {
                    let len = self.string_len(What::Value(key))?;
                    self.skip(len, What::Value(key))?;
                    GgufValue::String(String::new())
                }
            }
            GgufType::Array => GgufValue::Array(self.array(key, depth + 1, keep)?),
        })
    }

    fn array(&mut self, key: &str, depth: usize, keep: bool) -> Result<ArrayInfo, GgufError> {
        if depth > MAX_ARRAY_DEPTH {
            return Err(GgufError::ArrayTooDeep { key: key.to_string() });
        }
        let what = What::Array(key);
        let type_id = self.u32(what)?;
        let elem_type = GgufType::from_id(type_id).ok_or_else(|| GgufError::UnknownValueType {
            key: key.to_string(),
            type_id,
        })?;
        let len_offset = self.pos;
        let len = self.u64(what)?;
        if len > self.remaining() / elem_type.min_size() {
            return Err(GgufError::LengthPastEnd {
                what: what.describe(),
                offset: len_offset,
                len,
                remaining: self.remaining(),
            });
        }
        let keep = keep && len <= self.keep_up_to && self.kept.saturating_add(len) <= MAX_KEPT_ELEMENTS;
        if keep {
            self.kept += len;
            // `len` is bounded by the bytes left, so growth is bounded by the file size; the
            // initial reservation is capped anyway.
            let mut values = Vec::with_capacity(usize::try_from(len.min(4096)).unwrap_or(0));
            for _ in 0..len {
                values.push(self.value(key, elem_type, depth, true)?);
            }
            return Ok(ArrayInfo {
                elem_type,
                len,
                values: Some(values),
            });
        }
        match elem_type {
            GgufType::String | GgufType::Array => {
                for _ in 0..len {
                    self.value(key, elem_type, depth, false)?;
                }
            }
            fixed => self.skip(len * fixed.min_size(), what)?,
        }
        Ok(ArrayInfo {
            elem_type,
            len,
            values: None,
        })
    }

    fn tensor_info(&mut self, alignment: u64) -> Result<TensorInfo, GgufError> {
        let name_bytes = self.string_bytes(What::Text("a tensor name"))?;
        let name = String::from_utf8_lossy(&name_bytes).into_owned();
        let bad = |reason: String| GgufError::BadTensor {
            name: name.clone(),
            reason,
        };
        if std::str::from_utf8(&name_bytes).is_err() {
            return Err(bad("the name is not valid UTF-8".into()));
        }
        if name_bytes.len() > MAX_TENSOR_NAME_LEN {
            return Err(bad(format!("the name is longer than {MAX_TENSOR_NAME_LEN} bytes")));
        }
        let n_dims = self.u32(What::Text("a tensor's dimension count"))?;
        if n_dims > MAX_DIMS {
            return Err(bad(format!("{n_dims} dimensions, at most {MAX_DIMS} are allowed")));
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for _ in 0..n_dims {
            let d = self.u64(What::Text("a tensor dimension"))?;
            if d == 0 || d > i64::MAX as u64 {
                return Err(bad(format!("invalid dimension {d}")));
            }
            dims.push(d);
        }
        if dims
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d).filter(|&n| n <= i64::MAX as u64))
            .is_none()
        {
            return Err(bad(format!("the element count of {dims:?} overflows")));
        }
        let type_id = self.u32(What::Text("a tensor type"))?;
        let ggml_type = GgmlType::from_id(type_id).ok_or_else(|| bad(format!("unknown ggml type {type_id}")))?;
        let row = dims.first().copied().unwrap_or(1);
        if row % ggml_type.block_size() != 0 {
            return Err(bad(format!(
                "its rows of {row} elements are not a multiple of the {} block size {}",
                ggml_type.name(),
                ggml_type.block_size()
            )));
        }
        if tensor_bytes(&dims, ggml_type).is_none() {
            return Err(bad(format!("the byte size of {dims:?} overflows")));
        }
        let offset = self.u64(What::Text("a tensor offset"))?;
        if offset % alignment != 0 {
            return Err(bad(format!(
                "offset {offset} is not a multiple of the alignment {alignment}"
            )));
        }
        Ok(TensorInfo {
            name,
            dims,
            ggml_type,
            offset,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// Builds GGUF files for tests.
    struct Builder {
        magic: [u8; 4],
        version: u32,
        kvs: Vec<(Vec<u8>, u32, Vec<u8>)>,
        tensors: Vec<(String, Vec<u64>, u32, u64)>,
        alignment: u64,
        data_len: u64,
        counts: Option<(u64, u64)>,
    }

    fn s(v: &str) -> Vec<u8> {
        let mut out = (v.len() as u64).to_le_bytes().to_vec();
        out.extend_from_slice(v.as_bytes());
        out
    }

    fn arr(elem_type: u32, items: &[Vec<u8>]) -> Vec<u8> {
        let mut out = elem_type.to_le_bytes().to_vec();
        out.extend((items.len() as u64).to_le_bytes());
        for i in items {
            out.extend_from_slice(i);
        }
        out
    }

    impl Builder {
        fn new(version: u32) -> Self {
            Self {
                magic: GGUF_MAGIC,
                version,
                kvs: Vec::new(),
                tensors: Vec::new(),
                alignment: 32,
                data_len: 0,
                counts: None,
            }
        }

        fn kv(mut self, key: &str, type_id: u32, value: Vec<u8>) -> Self {
            self.kvs.push((key.as_bytes().to_vec(), type_id, value));
            self
        }

        fn raw_kv(mut self, key: Vec<u8>, type_id: u32, value: Vec<u8>) -> Self {
            self.kvs.push((key, type_id, value));
            self
        }

        fn str(self, key: &str, v: &str) -> Self {
            self.kv(key, 8, s(v))
        }

        fn u32(self, key: &str, v: u32) -> Self {
            self.kv(key, 4, v.to_le_bytes().to_vec())
        }

        fn tensor(mut self, name: &str, dims: &[u64], ggml_type: u32, offset: u64) -> Self {
            self.tensors.push((name.into(), dims.to_vec(), ggml_type, offset));
            self
        }

        fn data(mut self, len: u64) -> Self {
            self.data_len = len;
            self
        }

        fn build(&self) -> Vec<u8> {
            let mut out = self.magic.to_vec();
            out.extend(self.version.to_le_bytes());
            let (tc, kc) = self
                .counts
                .unwrap_or((self.tensors.len() as u64, self.kvs.len() as u64));
            out.extend(tc.to_le_bytes());
            out.extend(kc.to_le_bytes());
            for (k, t, v) in &self.kvs {
                out.extend((k.len() as u64).to_le_bytes());
                out.extend(k);
                out.extend(t.to_le_bytes());
                out.extend(v);
            }
            for (name, dims, t, offset) in &self.tensors {
                out.extend(s(name));
                out.extend((dims.len() as u32).to_le_bytes());
                for d in dims {
                    out.extend(d.to_le_bytes());
                }
                out.extend(t.to_le_bytes());
                out.extend(offset.to_le_bytes());
            }
            while !(out.len() as u64).is_multiple_of(self.alignment) {
                out.push(0);
            }
            out.extend(std::iter::repeat_n(0u8, self.data_len as usize));
            out
        }
    }

    fn parse(bytes: &[u8]) -> Result<GgufInfo, GgufError> {
        parse_keep(bytes, usize::MAX)
    }

    fn parse_keep(bytes: &[u8], keep: usize) -> Result<GgufInfo, GgufError> {
        read_gguf(
            &mut io::Cursor::new(bytes),
            bytes.len() as u64,
            ReadOptions {
                keep_arrays_up_to: keep,
            },
        )
    }

    /// A small, valid model-like file with every value type and two tensors.
    fn sample(version: u32) -> Builder {
        Builder::new(version)
            .str("general.architecture", "gemma3")
            .str("general.name", "Tiny")
            .u32("general.file_type", 15)
            .u32("gemma3.context_length", 32768)
            .kv("gemma3.embedding_length", 10, 640u64.to_le_bytes().to_vec())
            .kv("t.u8", 0, vec![200])
            .kv("t.i8", 1, vec![0xff])
            .kv("t.u16", 2, 65535u16.to_le_bytes().to_vec())
            .kv("t.i16", 3, (-2i16).to_le_bytes().to_vec())
            .kv("t.i32", 5, (-3i32).to_le_bytes().to_vec())
            .kv("t.f32", 6, 1e-6f32.to_le_bytes().to_vec())
            .kv("t.bool", 7, vec![1])
            .kv("t.i64", 11, (-4i64).to_le_bytes().to_vec())
            .kv("t.f64", 12, 0.5f64.to_le_bytes().to_vec())
            .kv(
                "t.arr_u32",
                9,
                arr(4, &[1u32.to_le_bytes().to_vec(), 2u32.to_le_bytes().to_vec()]),
            )
            .kv(
                "t.arr_str",
                9,
                arr(8, &[s("a"), s("b"), s("c"), s("d"), s("e"), s("f")]),
            )
            .kv("t.nested", 9, arr(9, &[arr(0, &[vec![1], vec![2]]), arr(8, &[s("x")])]))
            .str("tokenizer.chat_template", "{{ messages }}")
            .tensor("token_embd.weight", &[256, 4], 12, 0)
            .tensor("norm.weight", &[8], 0, 576)
            .data(576 + 32)
    }

    #[test]
    fn reads_every_type_in_v2_and_v3() {
        for version in [2, 3] {
            let info = parse(&sample(version).build()).unwrap();
            assert_eq!(info.version, version);
            assert_eq!(info.architecture(), Some("gemma3"));
            assert_eq!(info.file_type_name().as_deref(), Some("Q4_K_M"));
            assert_eq!(info.context_length(), Some(32768));
            assert_eq!(info.embedding_length(), Some(640));
            assert_eq!(info.chat_template(), Some("{{ messages }}"));
            assert_eq!(info.get("t.u8"), Some(&GgufValue::U8(200)));
            assert_eq!(info.get("t.i8"), Some(&GgufValue::I8(-1)));
            assert_eq!(info.get("t.u16"), Some(&GgufValue::U16(65535)));
            assert_eq!(info.get("t.i16"), Some(&GgufValue::I16(-2)));
            assert_eq!(info.get("t.i32"), Some(&GgufValue::I32(-3)));
            assert_eq!(info.get("t.f32"), Some(&GgufValue::F32(1e-6)));
            assert_eq!(info.get("t.bool"), Some(&GgufValue::Bool(true)));
            assert_eq!(info.get("t.i64"), Some(&GgufValue::I64(-4)));
            assert_eq!(info.get("t.f64"), Some(&GgufValue::F64(0.5)));
            assert_eq!(info.metadata[0].0, "general.architecture");
            assert_eq!(info.tensors.len(), 2);
            assert_eq!(info.tensors[0].ggml_type.name(), "Q4_K");
            assert_eq!(info.tensors[0].byte_size(), 144 * 4);
            assert_eq!(info.tensors[1].byte_size(), 32);
            assert_eq!(info.parameter_count(), 256 * 4 + 8);
            assert_eq!(info.data_offset % 32, 0);
            let json = serde_json::to_value(info.get("t.nested").unwrap()).unwrap();
            assert_eq!(json, serde_json::json!([[1, 2], ["x"]]));
        }
    }

    #[test]
    fn model_info_matches_ollama() {
        let info = parse(&sample(3).build()).unwrap();
        let brief = info.model_info(false);
        assert!(!brief.contains_key("general.name"));
        assert!(!brief.contains_key("tokenizer.chat_template"));
        assert_eq!(brief["general.architecture"], "gemma3");
        assert_eq!(brief["general.parameter_count"], info.parameter_count());
        assert_eq!(brief["t.arr_u32"], serde_json::json!([1, 2]));
        assert_eq!(brief["t.arr_str"], serde_json::json!([]));
        assert_eq!(brief["t.f32"].to_string(), "1e-6");
        assert_eq!(brief["t.i8"], serde_json::json!(-1));
        let verbose = info.model_info(true);
        assert_eq!(verbose["t.arr_str"], serde_json::json!(["a", "b", "c", "d", "e", "f"]));
        // Arrays skipped at read time are always [].
        let skipped = parse_keep(&sample(3).build(), 0).unwrap();
        assert_eq!(skipped.model_info(true)["t.arr_u32"], serde_json::json!([]));
        match skipped.get("t.arr_str") {
            Some(GgufValue::Array(a)) => {
                assert_eq!((a.elem_type, a.len, a.values.is_none()), (GgufType::String, 6, true));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn pooling_marks_an_embedding_model() {
        assert!(!parse(&sample(3).build()).unwrap().is_embedding_model());
        let embedding = sample(3).u32("gemma3.pooling_type", 1).build();
        assert!(parse(&embedding).unwrap().is_embedding_model());
    }

    #[test]
    fn keep_limit_is_inclusive() {
        let info = parse_keep(&sample(3).build(), 2).unwrap();
        let Some(GgufValue::Array(a)) = info.get("t.arr_u32") else {
            panic!()
        };
        assert_eq!(a.values.as_ref().map(Vec::len), Some(2));
        let Some(GgufValue::Array(a)) = info.get("t.arr_str") else {
            panic!()
        };
        assert!(a.values.is_none());
    }

    #[test]
    fn invalid_utf8_values_are_lossy_but_keys_are_strict() {
        let mut bad = 2u64.to_le_bytes().to_vec();
        bad.extend([0xff, b'a']);
        let info = parse(&Builder::new(3).kv("k", 8, bad.clone()).build()).unwrap();
        assert_eq!(info.get("k").and_then(GgufValue::as_str), Some("\u{fffd}a"));
        let err = parse(&Builder::new(3).raw_kv(vec![0xff], 8, s("v")).build()).unwrap_err();
        assert!(matches!(err, GgufError::InvalidKey { .. }), "{err}");
    }

    #[test]
    fn hostile_headers_are_rejected() {
        let check = |bytes: Vec<u8>, want: &str| {
            let err = parse(&bytes).unwrap_err();
            assert!(err.to_string().contains(want), "expected {want:?} in {err}");
        };
        let mut b = sample(3);
        b.magic = *b"GGML";
        check(b.build(), "not a GGUF file");
        check(sample(1).build(), "unsupported GGUF version 1");
        check(sample(4).build(), "unsupported GGUF version 4");
        check(sample(3u32.swap_bytes()).build(), "big-endian");
        let mut b = sample(3);
        b.counts = Some((2, u64::MAX));
        check(b.build(), "metadata entries");
        let mut b = sample(3);
        b.counts = Some((1 << 40, b.kvs.len() as u64));
        check(b.build(), "tensors");
        let mut b = sample(3);
        b.counts = Some((2, 1 << 20));
        check(b.build(), "metadata entries");
        // A string longer than the file.
        check(
            Builder::new(3).kv("k", 8, u64::MAX.to_le_bytes().to_vec()).build(),
            "claims a length",
        );
        check(
            Builder::new(3).kv("k", 8, 1000u64.to_le_bytes().to_vec()).build(),
            "claims a length",
        );
        // A key longer than the file.
        let mut bytes = b"GGUF".to_vec();
        bytes.extend(3u32.to_le_bytes());
        bytes.extend(0u64.to_le_bytes());
        bytes.extend(1u64.to_le_bytes());
        bytes.extend(u64::MAX.to_le_bytes());
        bytes.extend([0; 16]);
        check(bytes, "claims a length");
        // Arrays longer than the file, for fixed-size and string elements.
        let mut a = 4u32.to_le_bytes().to_vec();
        a.extend(u64::MAX.to_le_bytes());
        check(Builder::new(3).kv("k", 9, a).build(), "claims a length");
        let mut a = 8u32.to_le_bytes().to_vec();
        a.extend((1u64 << 40).to_le_bytes());
        check(Builder::new(3).kv("k", 9, a).build(), "claims a length");
        // Unknown value types, at top level and inside an array.
        check(Builder::new(3).kv("k", 13, vec![0; 8]).build(), "unknown value type 13");
        check(
            Builder::new(3).kv("k", 9, arr(77, &[])).build(),
            "unknown value type 77",
        );
        // Duplicate keys and tensors.
        check(
            Builder::new(3).u32("k", 1).u32("k", 2).build(),
            "duplicate metadata key",
        );
        check(
            Builder::new(3)
                .tensor("a", &[32], 0, 0)
                .tensor("a", &[32], 0, 128)
                .data(256)
                .build(),
            "duplicate tensor",
        );
        // Alignment.
        check(Builder::new(3).u32("general.alignment", 3).build(), "power of two");
        check(Builder::new(3).u32("general.alignment", 0).build(), "power of two");
        check(
            Builder::new(3)
                .kv("general.alignment", 10, 32u64.to_le_bytes().to_vec())
                .build(),
            "u32",
        );
    }

    #[test]
    fn array_depth_bomb_is_rejected() {
        // 10,000 nested arrays, each holding one array.
        let mut value = Vec::new();
        for _ in 0..10_000 {
            value.extend(9u32.to_le_bytes());
            value.extend(1u64.to_le_bytes());
        }
        value.extend(0u32.to_le_bytes());
        value.extend(0u64.to_le_bytes());
        let bytes = Builder::new(3).kv("bomb", 9, value).build();
        for keep in [0, usize::MAX] {
            let err = parse_keep(&bytes, keep).unwrap_err();
            assert!(matches!(err, GgufError::ArrayTooDeep { .. }), "{err}");
        }
        // Nesting within the limit is fine.
        let mut value = Vec::new();
        for _ in 0..MAX_ARRAY_DEPTH - 1 {
            value.extend(9u32.to_le_bytes());
            value.extend(1u64.to_le_bytes());
        }
        value.extend(0u32.to_le_bytes());
        value.extend(0u64.to_le_bytes());
        assert!(parse(&Builder::new(3).kv("ok", 9, value).build()).is_ok());
    }

    #[test]
    fn bad_tensors_are_rejected() {
        let check = |b: Builder, want: &str| {
            let err = parse(&b.build()).unwrap_err();
            assert!(err.to_string().contains(want), "expected {want:?} in {err}");
        };
        check(
            Builder::new(3).tensor("t", &[1, 1, 1, 1, 1], 0, 0).data(64),
            "5 dimensions",
        );
        check(
            Builder::new(3).tensor("t", &[32, 0], 0, 0).data(64),
            "invalid dimension 0",
        );
        check(
            Builder::new(3).tensor("t", &[1 << 32, 1 << 32], 0, 0).data(64),
            "overflows",
        );
        check(
            Builder::new(3).tensor("t", &[u64::MAX], 0, 0).data(64),
            "invalid dimension",
        );
        check(Builder::new(3).tensor("t", &[32], 4, 0).data(64), "unknown ggml type 4");
        check(
            Builder::new(3).tensor("t", &[32], 1000, 0).data(64),
            "unknown ggml type 1000",
        );
        check(
            Builder::new(3).tensor("t", &[33], 2, 0).data(64),
            "not a multiple of the Q4_0 block size 32",
        );
        check(
            Builder::new(3).tensor("t", &[8], 0, 16).data(64),
            "not a multiple of the alignment 32",
        );
        check(Builder::new(3).tensor("t", &[8], 0, 64).data(64), "run past the end");
        check(
            Builder::new(3).tensor("t", &[8], 0, u64::MAX - 31).data(64),
            "run past the end",
        );
        check(Builder::new(3).tensor("t", &[64], 0, 0).data(64), "run past the end");
        check(
            Builder::new(3).tensor(&"n".repeat(64), &[8], 0, 0).data(64),
            "longer than 63",
        );
        // Exactly fitting data is fine, also with a custom alignment.
        assert!(parse(&Builder::new(3).tensor("t", &[16], 0, 0).data(64).build()).is_ok());
        let mut b = Builder::new(3)
            .u32("general.alignment", 64)
            .tensor("a", &[8], 0, 0)
            .tensor("b", &[8], 0, 64);
        b.alignment = 64;
        let info = parse(&b.data(128).build()).unwrap();
        assert_eq!((info.alignment, info.data_offset % 64), (64, 0));
    }

    #[test]
    fn every_truncation_is_an_error() {
        let full = sample(3).build();
        assert!(parse(&full).is_ok());
        for len in 0..full.len() {
            let prefix = &full[..len];
            assert!(parse(prefix).is_err(), "prefix of {len} bytes parsed");
            assert!(parse_keep(prefix, 0).is_err(), "prefix of {len} bytes parsed");
            fuzz_entry(prefix);
        }
        // A file_len that lies (larger than the data) is also an error, not a panic.
        let short = &full[..full.len() / 2];
        let err = read_gguf(&mut io::Cursor::new(short), full.len() as u64, ReadOptions::default()).unwrap_err();
        assert!(
            matches!(err, GgufError::Truncated { .. } | GgufError::BadTensor { .. }),
            "{err}"
        );
    }

    #[test]
    fn corrupted_bytes_never_panic() {
        // Flip every byte of a valid file to a few values: errors are fine, panics are not.
        let full = sample(2).build();
        for i in 0..full.len() {
            for v in [0x00, 0x01, 0x7f, 0x80, 0xff] {
                let mut bytes = full.clone();
                bytes[i] = v;
                fuzz_entry(&bytes);
                let _ = parse(&bytes);
            }
        }
    }

    #[test]
    fn ggml_type_table() {
        let t = |id| GgmlType::from_id(id).unwrap();
        assert_eq!((t(0).name(), t(0).block_size(), t(0).type_size()), ("F32", 1, 4));
        assert_eq!((t(8).name(), t(8).block_size(), t(8).type_size()), ("Q8_0", 32, 34));
        assert_eq!((t(14).name(), t(14).type_size()), ("Q6_K", 210));
        assert_eq!((t(30).name(), t(30).type_size()), ("BF16", 2));
        assert_eq!((t(39).name(), t(39).block_size(), t(39).type_size()), ("MXFP4", 32, 17));
        for removed in [4, 5, 31, 32, 33, 36, 37, 38, 43] {
            assert!(GgmlType::from_id(removed).is_none(), "{removed}");
        }
        assert_eq!(serde_json::to_value(t(12)).unwrap(), "Q4_K");
    }

    #[test]
    fn file_type_names() {
        assert_eq!(file_type_name(0), "F32");
        assert_eq!(file_type_name(1), "F16");
        assert_eq!(file_type_name(7), "Q8_0");
        assert_eq!(file_type_name(15), "Q4_K_M");
        assert_eq!(file_type_name(18), "Q6_K");
        assert_eq!(file_type_name(32), "BF16");
        assert_eq!(file_type_name(1024), "unknown");
    }

    #[test]
    fn human_numbers_match_ollama() {
        let cases = [
            (0, "0"),
            (999, "999"),
            (1_000, "1K"),
            (1_499, "1K"),
            (1_500, "2K"),
            (999_999, "1000K"),
            (1_000_000, "1M"),
            (268_098_176, "268.10M"),
            (7_000_000, "7M"),
            (1_234_567, "1.23M"),
            (1_000_000_000, "1B"),
            (3_200_000_000, "3.2B"),
            (7_000_000_000, "7B"),
            (7_241_732_096, "7.2B"),
            (70_553_706_496, "70.6B"),
            (1_000_000_000_000, "1000B"),
        ];
        for (n, want) in cases {
            assert_eq!(human_number(n), want, "{n}");
        }
    }

    #[test]
    fn large_string_array_is_fast() {
        let tokens: Vec<Vec<u8>> = (0..262_144).map(|i| s(&format!("tok{i}"))).collect();
        let bytes = sample(3).kv("tokenizer.ggml.tokens", 9, arr(8, &tokens)).build();
        let start = Instant::now();
        let info = parse_keep(&bytes, 0).unwrap();
        let skipped = start.elapsed();
        let Some(GgufValue::Array(a)) = info.get("tokenizer.ggml.tokens") else {
            panic!()
        };
        assert_eq!((a.len, a.values.is_none()), (262_144, true));
        let info = parse(&bytes).unwrap();
        let Some(GgufValue::Array(a)) = info.get("tokenizer.ggml.tokens") else {
            panic!()
        };
        assert_eq!(a.values.as_ref().map(|v| v[262_143].as_str()), Some(Some("tok262143")));
        eprintln!("262k-string array skipped in {skipped:?}");
    }

    #[test]
    fn real_model_if_present() {
        let path = Path::new("/root/.cache/herd/models/gemma-3-270m-q4_k_m.gguf");
        if !path.exists() {
            eprintln!("skipping: {} not found", path.display());
            return;
        }
        let start = Instant::now();
        let info = read_gguf_path(path, ReadOptions { keep_arrays_up_to: 0 }).unwrap();
        let elapsed = start.elapsed();
        eprintln!("read {} in {elapsed:?}", path.display());
        assert_eq!(info.architecture(), Some("gemma3"));
        assert_eq!(info.file_type_name().as_deref(), Some("Q4_K_M"));
        assert_eq!(human_number(info.parameter_count()), "268.10M");
        assert!(info.context_length().is_some());
        assert!(info.embedding_length().is_some());
        // 18 layers, one in six with full attention, one KV head of 256 + 256 in f16.
        let kv = info.kv_layout().unwrap();
        assert_eq!(
            (kv.layers, kv.sliding_layers, kv.sliding_window, kv.bytes_per_position),
            (18, 15, 512, 1024)
        );
        assert_eq!(kv.cache_bytes(4096, 1, 512), (3 * 4096 + 15 * 1024) * 1024);
        assert_eq!(
            kv.cache_bytes(1 << 30, 2, 512),
            kv.cache_bytes(32768, 2, 512),
            "clamped to training"
        );
        eprintln!("chat template present: {}", info.chat_template().is_some());
        let verbose = read_gguf_path(
            path,
            ReadOptions {
                keep_arrays_up_to: usize::MAX,
            },
        )
        .unwrap();
        let Some(GgufValue::Array(tokens)) = verbose.get("tokenizer.ggml.tokens") else {
            panic!()
        };
        assert_eq!(tokens.values.as_ref().map(Vec::len), Some(tokens.len as usize));
        if !cfg!(debug_assertions) {
            assert!(elapsed.as_millis() < 100, "took {elapsed:?}");
        }
    }

    #[test]
    fn the_fuzzers_seed_is_a_valid_gguf() {
        let seed = include_bytes!("../../fuzz/seeds/gguf/tiny-v3.gguf");
        let info = parse(seed).unwrap();
        assert_eq!(info.architecture(), Some("llama"));
        assert_eq!(info.tensors.len(), 1);
    }
}
