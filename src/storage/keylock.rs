//! Per-key write serialization inside one shard.
//!
//! A replica write is read-merge-write of the key's version set, and the commit-log
//! append between the read and the write is an await: without this, two writes to the
//! same key on the same shard could both read the old set and one would be lost. The
//! set of keys being written is a plain map on the shard (single-threaded, no Mutex).

use std::cell::RefCell;
use std::future::poll_fn;
use std::rc::Rc;
use std::task::{Poll, Waker};

use ahash::AHashMap;
use bytes::Bytes;

/// Keys with a write in progress, and the tasks waiting for each.
#[derive(Default)]
pub struct KeyLocks {
    held: RefCell<AHashMap<Bytes, Vec<Waker>>>,
}

/// Held while a write to one key is in progress; dropping it lets the next one in.
pub struct KeyGuard {
    locks: Rc<KeyLocks>,
    key: Bytes,
}

impl KeyLocks {
    /// Waits until no other write to `key` is in progress, then holds the key.
    pub async fn lock(self: &Rc<Self>, key: &Bytes) -> KeyGuard {
        poll_fn(|cx| {
            let mut held = self.held.borrow_mut();
            match held.get_mut(key.as_ref()) {
                None => {
                    held.insert(key.clone(), Vec::new());
                    Poll::Ready(())
                }
                Some(waiters) => {
                    waiters.push(cx.waker().clone());
                    Poll::Pending
                }
            }
        })
        .await;
        KeyGuard {
            locks: self.clone(),
            key: key.clone(),
        }
    }

    /// Keys currently held (for tests and metrics).
    pub fn held_count(&self) -> usize {
        self.held.borrow().len()
    }
}

impl Drop for KeyGuard {
    fn drop(&mut self) {
        let waiters = self.locks.held.borrow_mut().remove(self.key.as_ref());
        // Every waiter retries; one wins and the rest queue again behind it.
        for waker in waiters.into_iter().flatten() {
            waker.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::run;
    use std::cell::Cell;

    #[test]
    fn writes_to_one_key_never_overlap() {
        run(|| async {
            let locks = Rc::new(KeyLocks::default());
            let inside = Rc::new(Cell::new(0u32));
            let done = Rc::new(Cell::new(0u32));
            let mut tasks = Vec::new();
            for _ in 0..20 {
                let (locks, inside, done) = (locks.clone(), inside.clone(), done.clone());
                tasks.push(glommio::spawn_local(async move {
                    let key = Bytes::from_static(b"k");
                    let _guard = locks.lock(&key).await;
                    inside.set(inside.get() + 1);
                    assert_eq!(inside.get(), 1, "two writers inside one key");
                    glommio::yield_if_needed().await;
                    glommio::timer::sleep(std::time::Duration::from_micros(50)).await;
                    inside.set(inside.get() - 1);
                    done.set(done.get() + 1);
                }));
            }
            for task in tasks {
                task.await;
            }
            assert_eq!(done.get(), 20);
            assert_eq!(locks.held_count(), 0);
        });
    }
}
