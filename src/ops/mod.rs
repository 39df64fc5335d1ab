//! Operations on child devices (issue #5): the agent makes a file available in its file store,
//! notifies the child on `te/<entity>/cmd/<op>/<cmd_id>`, and follows the command to its end.
//!
//! # Layout
//! - [`model`]: a request and an operation record, and the rules of one operation's life.
//! - [`store`]: the synchronous table of operations: start, follow, time out, cancel, end.
//! - [`fetch`]: downloads of remote files: cached, shared, resumed, retried, verified.
//! - [`persist`]: the table on disk, so that an operation in flight survives a restart.
//! - [`task`]: the task owning the table, and the handle the HTTP layer uses.

pub mod fetch;
pub mod model;
pub mod persist;
pub mod store;
pub mod task;
