//! The `edge-agent` binary: parse the command line, load config, run.
#![forbid(unsafe_code)]

fn main() {}
