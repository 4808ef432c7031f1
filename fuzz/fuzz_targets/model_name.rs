//! Any text as a model name: an error, or a name whose every part is a safe path component
//! and whose long form parses back to the same long form.
#![no_main]

use herd_fuzz::name::ModelName;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(name) = ModelName::parse(text) {
        // The long form (without the `http://` a name may start with) names the same model.
        let long = name.display_long();
        let again = ModelName::parse(&long).unwrap_or_else(|e| panic!("{text:?} -> {long:?}: {e}"));
        assert_eq!(again.display_long(), long, "{text:?}");
        // host/namespace/model:tag; each becomes a directory or file name under manifests/.
        for part in long.split('/') {
            let unsafe_part = part.is_empty() || part == "." || part == ".." || part.contains(['\\', '\0']);
            assert!(!unsafe_part, "{text:?} -> {long:?}");
        }
        assert_eq!(long.split('/').count(), 3, "{text:?} -> {long:?}");
    }
});
