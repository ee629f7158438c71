//! In-order processing per ordering key, concurrent across keys.
//!
//! Messages with an ordering key (SQS FIFO group, Pub/Sub ordering key) are queued per key and
//! processed one at a time by a task that exists while the key has work. When a message is
//! retried, the messages queued behind it are released with the same delay, so they are not
//! processed ahead of it. At shutdown, queued messages that have not started are released.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

/// Per-key queues of pending work items.
pub struct Sequencer<T> {
    queues: Mutex<HashMap<String, VecDeque<T>>>,
}

impl<T> Default for Sequencer<T> {
    fn default() -> Self {
        Self {
            queues: Mutex::new(HashMap::new()),
        }
    }
}

impl<T> Sequencer<T> {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, VecDeque<T>>> {
        self.queues.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `item` under `key`. Returns the item back when no task runs the key yet: the
    /// caller must then start one that processes it and then calls [`Sequencer::next`].
    pub fn enqueue(&self, key: &str, item: T) -> Option<T> {
        let mut queues = self.lock();
        match queues.get_mut(key) {
            Some(q) => {
                q.push_back(item);
                None
            }
            None => {
                queues.insert(key.to_string(), VecDeque::new());
                Some(item)
            }
        }
    }

    /// The next item of `key`, or `None` when the key is done (its task must end).
    pub fn next(&self, key: &str) -> Option<T> {
        let mut queues = self.lock();
        let q = queues.get_mut(key)?;
        let item = q.pop_front();
        if item.is_none() {
            queues.remove(key);
        }
        item
    }

    /// Removes every item still queued under `key`.
    pub fn take_queued(&self, key: &str) -> Vec<T> {
        self.lock()
            .get_mut(key)
            .map(|q| q.drain(..).collect())
            .unwrap_or_default()
    }

    /// Removes every queued item of every key (at shutdown).
    pub fn take_all_queued(&self) -> Vec<T> {
        self.lock()
            .values_mut()
            .flat_map(|q| q.drain(..).collect::<Vec<_>>())
            .collect()
    }
}

/// Shared handle.
pub type SharedSequencer<T> = Arc<Sequencer<T>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_item_starts_a_task_and_later_ones_queue_in_order() {
        let s = Sequencer::default();
        assert_eq!(s.enqueue("a", 1), Some(1));
        assert_eq!(s.enqueue("a", 2), None);
        assert_eq!(s.enqueue("a", 3), None);
        assert_eq!(s.enqueue("b", 9), Some(9));
        assert_eq!(s.next("a"), Some(2));
        assert_eq!(s.take_queued("a"), vec![3]);
        assert_eq!(s.next("a"), None);
        assert_eq!(s.enqueue("a", 4), Some(4), "a finished key starts again");
    }

    #[test]
    fn take_all_queued_empties_every_key() {
        let s = Sequencer::default();
        s.enqueue("a", 1);
        s.enqueue("a", 2);
        s.enqueue("b", 3);
        s.enqueue("b", 4);
        let mut all = s.take_all_queued();
        all.sort();
        assert_eq!(all, vec![2, 4]);
    }
}
