//! Interned measurement names (issue #2, memory). Thousands of children usually report the same
//! few measurement types and series names; the store keeps one shared copy of each. Names no
//! entity uses any more are dropped whenever the table has doubled since the last sweep, so a
//! client inventing names cannot make it grow without bound.

use std::collections::HashSet;
use std::sync::Arc;

const FIRST_SWEEP: usize = 1024;

#[derive(Debug)]
pub struct Names {
    set: HashSet<Arc<str>>,
    sweep_at: usize,
}

impl Default for Names {
    fn default() -> Self {
        Names {
            set: HashSet::new(),
            sweep_at: FIRST_SWEEP,
        }
    }
}

impl Names {
    pub fn intern(&mut self, name: &str) -> Arc<str> {
        if let Some(shared) = self.set.get(name) {
            return shared.clone();
        }
        let shared: Arc<str> = Arc::from(name);
        self.set.insert(shared.clone());
        if self.set.len() >= self.sweep_at {
            self.set.retain(|n| Arc::strong_count(n) > 1);
            self.sweep_at = (self.set.len() * 2).max(FIRST_SWEEP);
        }
        shared
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.set.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_names_share_one_allocation() {
        let mut names = Names::default();
        let a = names.intern("temperature");
        let b = names.intern("temperature");
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn unused_names_are_swept_when_the_table_doubles() {
        let mut names = Names::default();
        let kept = names.intern("kept");
        for i in 0..(FIRST_SWEEP * 4) {
            names.intern(&format!("transient-{i}"));
        }
        assert!(names.len() < FIRST_SWEEP * 2, "{}", names.len());
        assert!(Arc::ptr_eq(&kept, &names.intern("kept")));
    }
}
