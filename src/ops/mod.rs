//! Operations on child devices (issue #5): the agent makes a file available in its file store,
//! notifies the child on `te/<entity>/cmd/<op>/<cmd_id>`, and follows the command to its end.
//!
//! # Layout
//! - [`model`]: a request and an operation record, and the rules of one operation's life.
//! - [`store`]: the synchronous table of operations: start, follow, time out, cancel, end.

pub mod model;
pub mod store;
