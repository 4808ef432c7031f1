//! Any bytes as a GGUF file: an error or a header whose every tensor lies inside the file.
#![no_main]

use herd_fuzz::gguf::{read_gguf, ReadOptions};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let options = ReadOptions {
        keep_arrays_up_to: 1024,
    };
    if let Ok(info) = read_gguf(&mut std::io::Cursor::new(data), data.len() as u64, options) {
        for tensor in &info.tensors {
            let end = info.data_offset + tensor.offset + tensor.byte_size();
            assert!(end <= data.len() as u64, "tensor {} ends past the file", tensor.name);
        }
    }
});
