//! The bounded outbound queue of one connection.
//!
//! Many producers (fan-out, handlers, the relay) and one consumer (the
//! connection's writer). Unlike a channel, it keeps only what it holds: an
//! idle socket's queue costs a few words, where a tokio channel
//! preallocates a block of 32 slots per connection. The oldest item sits
//! in the queue itself, so the common case of a fan-out — one frame queued
//! to a socket that was idle — allocates nothing; a buffer is taken only
//! while more than one item waits, and a drained queue gives it back.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
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
    /// Producers wait here for room.
    drained: Notify,
}

struct Inner<T> {
    /// The oldest item; `None` only when the queue is empty.
    head: Option<T>,
    /// The items after `head`.
    rest: VecDeque<T>,
    closed: bool,
    /// The consumer was told to stop (the connection is closing).
    stopped: bool,
    /// The consumer, while it waits for an item. Kept under the same lock
    /// as the items: a push that finds it takes it and wakes it, one that
    /// finds the consumer busy costs nothing more. A `Notify` here would
    /// add a second lock and a waiter-list update to every frame queued.
    consumer: Option<Waker>,
}

impl<T> Inner<T> {
    fn len(&self) -> usize {
        usize::from(self.head.is_some()) + self.rest.len()
    }

    fn push(&mut self, item: T) {
        if self.head.is_none() {
            self.head = Some(item);
        } else {
            self.rest.push_back(item);
        }
    }

    fn pop(&mut self) -> Option<T> {
        let item = self.head.take()?;
        self.head = self.rest.pop_front();
        if self.rest.is_empty() && self.rest.capacity() > 0 {
            self.rest = VecDeque::new();
        }
        Some(item)
    }
}

impl<T> Queue<T> {
    pub fn new(capacity: usize) -> Self {
        Self {
            inner: Mutex::new(Inner {
                head: None,
                rest: VecDeque::new(),
                closed: false,
                stopped: false,
                consumer: None,
            }),
            capacity: capacity.max(1),
            drained: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner<T>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queue `item` without waiting.
    pub fn try_push(&self, item: T) -> Result<(), Refused> {
        self.try_push_back(item).map_err(|(refused, _)| refused)
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
        let consumer = {
            let mut inner = self.lock();
            if inner.closed {
                return Err((Refused::Closed, item));
            }
            if inner.len() >= self.capacity {
                return Err((Refused::Full, item));
            }
            inner.push(item);
            inner.consumer.take()
        };
        if let Some(waker) = consumer {
            waker.wake();
        }
        Ok(())
    }

    /// The next item, waiting for one; `None` once the consumer is told to
    /// stop.
    #[cfg(test)]
    pub async fn pop(&self) -> Option<T> {
        std::future::poll_fn(|cx| self.poll_pop(cx)).await
    }

    /// The next item, `None` once [`Queue::stop_consumer`] was called
    /// (whatever is still queued), or `Pending` with the consumer's waker
    /// kept: the next push or the stop wakes it.
    pub fn poll_pop(&self, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let (item, was_full) = {
            let mut inner = self.lock();
            if inner.stopped {
                return Poll::Ready(None);
            }
            match self.pop_from(&mut inner) {
                Some(popped) => popped,
                None => {
                    if !inner
                        .consumer
                        .as_ref()
                        .is_some_and(|w| w.will_wake(cx.waker()))
                    {
                        inner.consumer = Some(cx.waker().clone());
                    }
                    return Poll::Pending;
                }
            }
        };
        self.room_made(was_full);
        Poll::Ready(Some(item))
    }

    /// The next item, if one is queued.
    pub fn try_pop(&self) -> Option<T> {
        let (item, was_full) = self.pop_from(&mut self.lock())?;
        self.room_made(was_full);
        Some(item)
    }

    /// Pop under the lock; also whether the queue was full (producers may
    /// be waiting for room).
    fn pop_from(&self, inner: &mut Inner<T>) -> Option<(T, bool)> {
        let was_full = inner.len() >= self.capacity;
        inner.pop().map(|item| (item, was_full))
    }

    /// Producers only wait on a full queue.
    fn room_made(&self, was_full: bool) {
        if was_full {
            self.drained.notify_waiters();
        }
    }

    /// Tell the consumer to stop: [`Queue::poll_pop`] answers `None` from
    /// now on, and a waiting consumer is woken to see it.
    pub fn stop_consumer(&self) {
        let consumer = {
            let mut inner = self.lock();
            inner.stopped = true;
            inner.consumer.take()
        };
        if let Some(waker) = consumer {
            waker.wake();
        }
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
        assert_eq!(q.pop().await, Some(1));
        waiter.await.unwrap().unwrap();
        assert_eq!(q.pop().await, Some(2));
        assert_eq!(q.pop().await, Some(3));
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
        assert_eq!(reader.await.unwrap(), Some("x"));
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

    #[tokio::test]
    async fn stopping_wakes_a_waiting_consumer_and_skips_what_is_queued() {
        let q: Arc<Queue<u8>> = Arc::new(Queue::new(4));
        let consumer = {
            let q = q.clone();
            tokio::spawn(async move { q.pop().await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!consumer.is_finished(), "waits for an item");
        q.stop_consumer();
        let woken = tokio::time::timeout(Duration::from_secs(2), consumer).await;
        assert_eq!(woken.expect("woken").unwrap(), None);
        // Stopped is stopped, items or not.
        q.try_push(7).unwrap();
        assert_eq!(q.pop().await, None);
    }

    #[test]
    fn an_empty_queue_holds_no_buffer() {
        let q: Queue<u64> = Queue::new(1024);
        assert_eq!(q.lock().rest.capacity(), 0);
        for i in 0..100 {
            q.try_push(i).unwrap();
        }
        for i in 0..100 {
            assert_eq!(q.try_pop(), Some(i), "in order");
        }
        assert_eq!(q.try_pop(), None);
        assert_eq!(
            q.lock().rest.capacity(),
            0,
            "a drained queue holds no buffer"
        );
    }

    #[test]
    fn one_item_at_a_time_allocates_nothing_and_keeps_order() {
        let q: Queue<u64> = Queue::new(3);
        for round in 0..10 {
            q.try_push(round).unwrap();
            assert_eq!(q.lock().rest.capacity(), 0, "a lone item needs no buffer");
            assert_eq!(q.try_pop(), Some(round));
        }
        // Interleaved pushes and pops across the inline slot stay in order
        // and count towards the bound.
        q.try_push(1).unwrap();
        q.try_push(2).unwrap();
        assert_eq!(q.try_pop(), Some(1));
        q.try_push(3).unwrap();
        q.try_push(4).unwrap();
        assert_eq!(q.try_push(5), Err(Refused::Full));
        assert_eq!(q.try_pop(), Some(2));
        assert_eq!(q.try_pop(), Some(3));
        assert_eq!(q.try_pop(), Some(4));
        assert_eq!(q.try_pop(), None);
    }
}
