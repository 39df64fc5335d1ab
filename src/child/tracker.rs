//! Which commands the child is running, which wait, and which it has done: the rules that make
//! redelivery harmless. Synchronous and free of I/O; the runner's loop owns the one instance.
//!
//! - One command at a time per operation: an `init` for a busy operation waits, in arrival order
//!   (at most [`MAX_WAITING`] per operation; more are refused).
//! - An `init` for a command id that is running or waiting is ignored: the broker delivers a
//!   retained command again after every reconnect.
//! - An `init` for a command already done is ignored: done means this process reported it
//!   final, or someone published it `successful` or `failed` (a retained final status seen at
//!   start-up). The last [`MAX_REMEMBERED`] are remembered.
//!
//! A command is identified by its operation and id, as its topic is.

use std::collections::{HashMap, HashSet, VecDeque};

/// Done commands remembered, oldest forgotten first.
pub const MAX_REMEMBERED: usize = 10_000;
/// Commands waiting per operation.
pub const MAX_WAITING: usize = 64;

/// A command's identity: `(op, cmd_id)`.
pub type Key = (String, String);

/// What to do with an `init`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision<T> {
    /// Run it now.
    Start(T),
    /// Its operation is busy: it runs when the ones before it are done.
    Queued,
    /// Already running, waiting or done.
    Duplicate,
    /// Too many commands wait for this operation: refuse it (and it counts as done).
    Full,
}

/// The state of the commands of one child; `T` is whatever the runner needs to start one.
#[derive(Debug)]
pub struct Tracker<T> {
    /// Per operation, the id of the command running.
    running: HashMap<String, String>,
    waiting: HashMap<String, VecDeque<(String, T)>>,
    done: HashSet<Key>,
    done_order: VecDeque<Key>,
}

impl<T> Default for Tracker<T> {
    fn default() -> Self {
        Tracker {
            running: HashMap::new(),
            waiting: HashMap::new(),
            done: HashSet::new(),
            done_order: VecDeque::new(),
        }
    }
}

impl<T> Tracker<T> {
    /// An `init` for `op`/`id`; `job` is what starting it takes.
    pub fn on_init(&mut self, op: &str, id: &str, job: T) -> Decision<T> {
        if self.is_known(op, id) {
            return Decision::Duplicate;
        }
        if !self.running.contains_key(op) {
            self.running.insert(op.to_owned(), id.to_owned());
            return Decision::Start(job);
        }
        let queue = self.waiting.entry(op.to_owned()).or_default();
        if queue.len() >= MAX_WAITING {
            self.remember(op, id);
            return Decision::Full;
        }
        queue.push_back((id.to_owned(), job));
        Decision::Queued
    }

    /// Running, waiting or done.
    pub fn is_known(&self, op: &str, id: &str) -> bool {
        self.running.get(op).is_some_and(|running| running == id)
            || self
                .waiting
                .get(op)
                .is_some_and(|q| q.iter().any(|(waiting, _)| waiting == id))
            || self.done.contains(&(op.to_owned(), id.to_owned()))
    }

    /// `op`/`id` is final without having run here: refused, or reported final by someone.
    /// A waiting command of that id is dropped; a running one is left to finish.
    pub fn remember(&mut self, op: &str, id: &str) {
        if let Some(queue) = self.waiting.get_mut(op) {
            queue.retain(|(waiting, _)| waiting != id);
        }
        let key = (op.to_owned(), id.to_owned());
        if self.done.insert(key.clone()) {
            self.done_order.push_back(key);
            if self.done_order.len() > MAX_REMEMBERED {
                if let Some(oldest) = self.done_order.pop_front() {
                    self.done.remove(&oldest);
                }
            }
        }
    }

    /// The running `op`/`id` is done; the next waiting command of `op`, now running, if any.
    pub fn on_done(&mut self, op: &str, id: &str) -> Option<(String, T)> {
        self.remember(op, id);
        if self.running.get(op).is_some_and(|running| running == id) {
            self.running.remove(op);
        }
        if self.running.contains_key(op) {
            return None;
        }
        let next = self.waiting.get_mut(op).and_then(VecDeque::pop_front);
        if self.waiting.get(op).is_some_and(VecDeque::is_empty) {
            self.waiting.remove(op);
        }
        if let Some((id, _)) = &next {
            self.running.insert(op.to_owned(), id.clone());
        }
        next
    }

    /// How many commands run now.
    pub fn running(&self) -> usize {
        self.running.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_of_one_operation_run_one_at_a_time_in_arrival_order() {
        let mut t = Tracker::default();
        assert_eq!(t.on_init("fw", "1", 'a'), Decision::Start('a'));
        assert_eq!(t.on_init("fw", "2", 'b'), Decision::Queued);
        assert_eq!(t.on_init("fw", "3", 'c'), Decision::Queued);
        // Another operation is not held up.
        assert_eq!(t.on_init("cfg", "1", 'x'), Decision::Start('x'));
        assert_eq!(t.running(), 2);
        assert_eq!(t.on_done("fw", "1"), Some(("2".into(), 'b')));
        assert_eq!(t.on_done("fw", "2"), Some(("3".into(), 'c')));
        assert_eq!(t.on_done("fw", "3"), None);
        assert_eq!(t.on_done("cfg", "1"), None);
        assert_eq!(t.running(), 0);
        assert_eq!(t.on_init("fw", "4", 'd'), Decision::Start('d'));
    }

    #[test]
    fn an_init_for_a_command_running_waiting_or_done_is_a_duplicate() {
        let mut t = Tracker::default();
        assert_eq!(t.on_init("fw", "1", ()), Decision::Start(()));
        assert_eq!(t.on_init("fw", "2", ()), Decision::Queued);
        assert_eq!(t.on_init("fw", "1", ()), Decision::Duplicate);
        assert_eq!(t.on_init("fw", "2", ()), Decision::Duplicate);
        assert_eq!(t.on_done("fw", "1"), Some(("2".into(), ())));
        assert_eq!(t.on_init("fw", "1", ()), Decision::Duplicate);
        // The same id under another operation is another command.
        assert_eq!(t.on_init("cfg", "1", ()), Decision::Start(()));
    }

    #[test]
    fn a_command_reported_final_by_someone_is_not_run_and_leaves_the_queue() {
        let mut t = Tracker::default();
        t.remember("fw", "old");
        assert_eq!(t.on_init("fw", "old", ()), Decision::Duplicate);
        assert_eq!(t.on_init("fw", "1", ()), Decision::Start(()));
        assert_eq!(t.on_init("fw", "2", ()), Decision::Queued);
        assert_eq!(t.on_init("fw", "3", ()), Decision::Queued);
        t.remember("fw", "2");
        assert_eq!(t.on_done("fw", "1"), Some(("3".into(), ())));
    }

    #[test]
    fn a_full_queue_refuses_and_only_the_latest_done_commands_are_remembered() {
        let mut t = Tracker::default();
        assert_eq!(t.on_init("fw", "run", ()), Decision::Start(()));
        for i in 0..MAX_WAITING {
            assert_eq!(t.on_init("fw", &i.to_string(), ()), Decision::Queued);
        }
        assert_eq!(t.on_init("fw", "late", ()), Decision::Full);
        assert_eq!(t.on_init("fw", "late", ()), Decision::Duplicate);

        let mut t: Tracker<()> = Tracker::default();
        for i in 0..=MAX_REMEMBERED {
            t.remember("fw", &i.to_string());
        }
        assert!(!t.is_known("fw", "0"));
        assert!(t.is_known("fw", "1"));
        assert!(t.is_known("fw", &MAX_REMEMBERED.to_string()));
    }
}
