//! Any bytes as a Modelfile: an error, or commands that print back to a Modelfile that
//! parses to the same commands.
#![no_main]

use herd_fuzz::modelfile::parse_modelfile_bytes;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(parsed) = parse_modelfile_bytes(data) {
        let printed = parsed.to_string();
        let reparsed = parse_modelfile_bytes(printed.as_bytes())
            .unwrap_or_else(|e| panic!("the printed Modelfile does not parse ({e}):\n{printed}"));
        assert_eq!(parsed, reparsed, "printed:\n{printed}");
    }
});
