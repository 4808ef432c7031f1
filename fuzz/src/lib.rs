//! herd's parsers of untrusted input, compiled from the server's own source files (they
//! depend on nothing else in the server), so the fuzzer runs exactly the code herd runs
//! without instrumenting the HTTP stack.
#![allow(dead_code)]

#[path = "../../server/src/gguf.rs"]
pub mod gguf;
#[path = "../../server/src/modelfile.rs"]
pub mod modelfile;
#[path = "../../server/src/store/name.rs"]
pub mod name;
