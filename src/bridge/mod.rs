//! Cloud bridges (issue #4, spec/bridges.md): the Mosquitto bridge files edge-agent generates
//! from the `bridge` section of its configuration, how they are proven against the real
//! mosquitto, and how they are kept in step with the configuration while the agent runs.
//!
//! # Layout
//! - [`rules`]: a cloud's topic rules (type defaults + configured), `route` and `inspect`.
//! - [`version`]: the installed mosquitto's version and what it changes.
//! - [`render`]: the pure renderer: cloud + rules → file text, with the YAML key of each line.
//! - [`output`]: atomic, change-only writes into `bridge.dir`; removal of stale generated files.

pub mod output;
pub mod render;
pub mod rules;
pub mod version;
