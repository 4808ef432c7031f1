//! Writes the synthetic vision projector of the integration tests to a file, for the
//! compatibility tests that drive the official clients: `write-vision-projector PATH WIDTH`,
//! WIDTH being the text model's embedding width.

use std::path::Path;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [path, width] = args.as_slice() else {
        eprintln!("usage: write-vision-projector PATH TEXT_WIDTH");
        std::process::exit(2);
    };
    let Ok(width) = width.parse() else {
        eprintln!("TEXT_WIDTH must be a whole number, not {width:?}");
        std::process::exit(2);
    };
    herd_tests::write_vision_projector(Path::new(path), width);
}
