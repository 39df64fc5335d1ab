//! Cloud bridges (issue #4, spec/bridges.md): the Mosquitto bridge files edge-agent generates
//! from the `bridge` section of its configuration, how they are proven against the real
//! mosquitto, and how they are kept in step with the configuration while the agent runs.
//!
//! # Layout
//! - [`rules`]: a cloud's topic rules (type defaults + configured), `route` and `inspect`.
//! - [`version`]: the installed mosquitto's version and what it changes.
//! - [`render`]: the pure renderer: cloud + rules → file text, with the YAML key of each line.
//! - [`output`]: atomic, change-only writes into `bridge.dir`; removal of stale generated files.
//! - [`credentials`]: the CA, certificate and key files: readable, matching, not expired.
//! - [`check`]: a cloud's file checks, as findings naming YAML keys.
//! - [`plan`]: config → checked, rendered files (shared by the commands and `run`).
//! - [`prove`]: starting the real mosquitto on rendered files (`bridge validate`).
//! - [`restart`]: the restart command, paced.
//! - [`commands`]: the `edge-agent bridge` commands and their exit codes.
//! - [`watch`]: `run`'s live re-rendering when the configuration file changes.

pub mod check;
pub mod commands;
pub mod credentials;
pub mod output;
pub mod plan;
pub mod prove;
pub mod render;
pub mod restart;
pub mod rules;
pub mod version;
pub mod watch;
