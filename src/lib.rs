//! edge-agent: a sidecar for IoT gateways that keeps the local digital twin of a piece of
//! equipment from a Mosquitto bus (thin-edge.io's `te/` schema) and serves it over HTTP.
//!
//! # Layout
//! - [`config`]: the YAML configuration, from raw file and environment to a validated [`config::Config`].
//! - [`cli`]: the command line (clap).
//! - [`manual`]: completion scripts and manual pages, generated from the command line.
//! - [`bridge`]: the Mosquitto bridge files for the clouds: render, prove, keep in step.
//! - [`app`]: wiring: bind sockets, load state, spawn the tasks, shut down with a grace period.
//! - [`service`]: `run` under a service manager: signals (SIGHUP reloads) and systemd's notify
//!   protocol (ready, status, watchdog, reloading, stopping).
//! - [`topic`]: the `te/` topic grammar: entity topic ids and channels.
//! - [`twin`]: the digital twin: model, payload parsers, the synchronous store, persistence and
//!   the task that owns them.
//! - [`ops`]: operations on child devices: make the file available, notify, follow to the end.
//! - [`mqtt`]: the broker connection: options, the event-loop task, acknowledged publishing.
//! - [`files`]: the file transfer store: safe paths, atomic uploads, digests, ranges, quota.
//! - [`client`]: the `files` commands' client of the file transfer service: upload, resumable
//!   and verified download, delete, progress; and the `op` commands' client of the operations
//!   API: start (uploading a local file), follow, list, show, cancel, fetch; `health`'s probe.
//! - [`http`]: the warp server on its own accept loop (HTTP/1.1, optional TLS): the entity API,
//!   our extensions, health and readiness.
//! - [`metrics`]: `GET /metrics`: the figures of the twin, the connection, the file transfers,
//!   the operations, the bridges and the process, in the OpenMetrics text format.
//! - [`report`]: an error and its causes on one line.
//! - [`readiness`]: the readiness value shared by the MQTT task and the HTTP layer.
//! - [`child`]: `edge-agent child`, the reference child device: registers, announces its
//!   handlers' operations, runs the commands sent to it with their files, reports their status.
#![forbid(unsafe_code)]

pub mod app;
pub mod bridge;
pub mod child;
pub mod cli;
pub mod client;
pub mod config;
pub mod files;
pub mod http;
pub mod manual;
pub mod metrics;
pub mod mqtt;
pub mod ops;
pub mod readiness;
pub mod report;
pub mod service;
pub mod topic;
pub mod twin;
