//! The bounded outbound queue of one connection.
//!
//! Many producers (fan-out, handlers, the relay) and one consumer (the
//! connection's writer). Unlike a channel, it allocates nothing until the
//! first item and keeps only what it holds: an idle socket's queue costs a
//! few words, where a tokio channel preallocates a block of 32 slots per
//! connection. A drained queue gives its buffer back: most sockets are
//! idle most of the time, and one allocation per burst is nothing next to
//! the socket write that burst costs.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};
use tokio::sync::Notify;

/// Why an item was not queued.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    Full,
    Closed,
}

pub struct Queue<T> {
    inner: Mutex<Inner<T>>,
    capacity: usize,
    /// The consumer waits here for items.
    filled: Notify,
    /// Producers wait here for room.
    drained: Notify,
}

struct Inner<T> {
    items: VecDeque<T>,
    closed: bool,
}

impl<T> Queue<T> {
    pub fn new(capacity: usize) -> Self {
        Self {
            inner: Mutex::new(Inner {
                items: VecDeque::new(),
                closed: false,
            }),
            capacity: capacity.max(1),
            filled: Notify::new(),
            drained: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner<T>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queue `item` without waiting.
    pub fn try_push(&self, item: T) -> Result<(), Refused> {
        {
            let mut inner = self.lock();
            if inner.closed {
                return Err(Refused::Closed);
            }
            if inner.items.len() >= self.capacity {
                return Err(Refused::Full);
            }
            inner.items.push_back(item);
        }
        self.filled.notify_one();
        Ok(())
    }

    /// Queue `item`, waiting for room; `Err` once the queue is closed.
    pub async fn push(&self, item: T) -> Result<(), Refused> {
        let mut item = Some(item);
        loop {
            let room = self.drained.notified();
            tokio::pin!(room);
            // Registered before looking, so a drain in between is not lost.
            room.as_mut().enable();
            let Some(next) = item.take() else {
                return Ok(());
            };
            match self.try_push_back(next) {
                Ok(()) => return Ok(()),
                Err((Refused::Full, back)) => item = Some(back),
                Err((refused, _)) => return Err(refused),
            }
            room.await;
        }
    }

    fn try_push_back(&self, item: T) -> Result<(), (Refused, T)> {
        {
            let mut inner = self.lock();
            if inner.closed {
                return Err((Refused::Closed, item));
            }
            if inner.items.len() >= self.capacity {
                return Err((Refused::Full, item));
            }
            inner.items.push_back(item);
        }
        self.filled.notify_one();
        Ok(())
    }

    /// The next item, waiting for one.
    pub async fn pop(&self) -> T {
        loop {
            let filled = self.filled.notified();
            tokio::pin!(filled);
            filled.as_mut().enable();
            if let Some(item) = self.try_pop() {
                return item;
            }
            filled.await;
        }
    }

    /// The next item, if one is queued.
    pub fn try_pop(&self) -> Option<T> {
        let (item, was_full) = {
            let mut inner = self.lock();
            let was_full = inner.items.len() >= self.capacity;
            let item = inner.items.pop_front();
            if inner.items.is_empty() && inner.items.capacity() > 0 {
                inner.items = VecDeque::new();
            }
            (item?, was_full)
        };
        // Producers only wait on a full queue.
        if was_full {
            self.drained.notify_waiters();
        }
        Some(item)
    }

    /// Refuse further items and wake every waiting producer.
    pub fn close(&self) {
        self.lock().closed = true;
        self.drained.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[tokio::test]
    async fn bounded_in_order_and_waits_for_room() {
        let q = Arc::new(Queue::new(2));
        q.try_push(1).unwrap();
        q.try_push(2).unwrap();
        assert_eq!(q.try_push(3), Err(Refused::Full));
        let waiter = {
            let q = q.clone();
            tokio::spawn(async move { q.push(3).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished(), "waits while full");
        assert_eq!(q.pop().await, 1);
        waiter.await.unwrap().unwrap();
        assert_eq!(q.pop().await, 2);
        assert_eq!(q.pop().await, 3);
        assert_eq!(q.try_pop(), None);
    }

    #[tokio::test]
    async fn pop_waits_and_close_refuses() {
        let q = Arc::new(Queue::new(4));
        let reader = {
            let q = q.clone();
            tokio::spawn(async move { q.pop().await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        q.try_push("x").unwrap();
        assert_eq!(reader.await.unwrap(), "x");
        for i in 0..4 {
            q.try_push("y").unwrap_or_else(|e| panic!("{i}: {e:?}"));
        }
        let blocked = {
            let q = q.clone();
            tokio::spawn(async move { q.push("z").await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        q.close();
        assert_eq!(blocked.await.unwrap(), Err(Refused::Closed));
        assert_eq!(q.try_push("w"), Err(Refused::Closed));
    }

    #[test]
    fn an_empty_queue_holds_no_buffer() {
        let q: Queue<u64> = Queue::new(1024);
        assert_eq!(q.lock().items.capacity(), 0);
        for i in 0..100 {
            q.try_push(i).unwrap();
        }
        while q.try_pop().is_some() {}
        assert_eq!(
            q.lock().items.capacity(),
            0,
            "a drained queue holds no buffer"
        );
    }
}
