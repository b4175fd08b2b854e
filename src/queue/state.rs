//! The queue's state as plain Rust: the items, the bound, the unfinished-task
//! count, the shut-down flag and the lists of waiters.
//!
//! Nothing here calls back into Python except through the `lt` comparison a
//! caller passes for priority queues. Waiters are opaque (`W`): the binding
//! stores asyncio futures and does the waking itself, after releasing the
//! lock, exactly where asyncio's `Queue` would call `set_result`.

use super::heap;
use std::collections::VecDeque;

/// Which order items come out in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Fifo,
    Lifo,
    Priority,
}

/// The items, in the layout the matching asyncio class keeps them
/// (a deque, a list used as a stack, a `heapq` list).
enum Store<T> {
    Fifo(VecDeque<T>),
    Stack(Vec<T>),
    Heap(Vec<T>),
}

/// `maxsize`, reduced to what `full()` needs: `qsize() >= maxsize` unless
/// `maxsize <= 0`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Limit {
    Unbounded,
    Items(usize),
    /// A float bound; NaN and infinity are never reached.
    Float(f64),
}

impl Limit {
    /// The bound for an integer `maxsize` (`None` when it does not fit an
    /// `i64`; such a bound is never reached either way).
    pub fn from_int(n: Option<i64>) -> Limit {
        match n {
            Some(n) if n > 0 => usize::try_from(n).map_or(Limit::Unbounded, Limit::Items),
            _ => Limit::Unbounded,
        }
    }

    pub fn from_float(f: f64) -> Limit {
        if f <= 0.0 {
            Limit::Unbounded
        } else {
            Limit::Float(f)
        }
    }

    fn reached(self, len: usize) -> bool {
        match self {
            Limit::Unbounded => false,
            Limit::Items(n) => len >= n,
            Limit::Float(f) => (len as f64) >= f,
        }
    }
}

/// Why a non-waiting operation could not complete.
#[derive(Debug, PartialEq)]
pub enum QueueError<E> {
    Empty,
    Full,
    ShutDown,
    /// An item comparison (priority queues) raised.
    Compare(E),
}

/// Which waiter list an operation parks on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitList {
    Getters,
    Putters,
    Joiners,
}

pub struct QueueCore<T, W> {
    store: Store<T>,
    bound: Limit,
    pub unfinished: usize,
    pub shutdown: bool,
    pub getters: VecDeque<W>,
    pub putters: VecDeque<W>,
    pub joiners: VecDeque<W>,
    /// The loop the getters and putters were created on (asyncio's
    /// `Queue._loop`), and the one `join()` waited on (its `Event._loop`).
    pub loop_: Option<W>,
    pub join_loop: Option<W>,
}

impl<T, W> QueueCore<T, W> {
    pub fn new(kind: Kind, bound: Limit) -> Self {
        let store = match kind {
            Kind::Fifo => Store::Fifo(VecDeque::new()),
            Kind::Lifo => Store::Stack(Vec::new()),
            Kind::Priority => Store::Heap(Vec::new()),
        };
        QueueCore {
            store,
            bound,
            unfinished: 0,
            shutdown: false,
            getters: VecDeque::new(),
            putters: VecDeque::new(),
            joiners: VecDeque::new(),
            loop_: None,
            join_loop: None,
        }
    }

    pub fn len(&self) -> usize {
        match &self.store {
            Store::Fifo(d) => d.len(),
            Store::Stack(v) | Store::Heap(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn is_full(&self) -> bool {
        self.bound.reached(self.len())
    }

    /// The items in storage order (what asyncio's repr shows as `_queue`).
    pub fn items(&self) -> Vec<&T> {
        match &self.store {
            Store::Fifo(d) => d.iter().collect(),
            Store::Stack(v) | Store::Heap(v) => v.iter().collect(),
        }
    }

    /// Change the bound (a rebuilt copy takes its original's `maxsize`).
    pub fn set_bound(&mut self, bound: Limit) {
        self.bound = bound;
    }

    /// Whether futures wait on the queue or it is bound to a loop.
    pub fn in_use(&self) -> bool {
        !(self.getters.is_empty() && self.putters.is_empty() && self.joiners.is_empty())
            || self.loop_.is_some()
            || self.join_loop.is_some()
    }

    /// Replace the items with `items`, given in storage order (as `items()`
    /// lists them), without comparing them: a restored heap keeps the
    /// layout it was saved with, as a restored `heapq` list does.
    pub fn set_items(&mut self, items: Vec<T>) -> Vec<T> {
        match &mut self.store {
            Store::Fifo(d) => std::mem::replace(d, items.into()).into(),
            Store::Stack(v) | Store::Heap(v) => std::mem::replace(v, items),
        }
    }

    pub fn waiters(&mut self, which: WaitList) -> &mut VecDeque<W> {
        match which {
            WaitList::Getters => &mut self.getters,
            WaitList::Putters => &mut self.putters,
            WaitList::Joiners => &mut self.joiners,
        }
    }

    /// asyncio's `_put`: store the item, no checks. On a comparison error the
    /// queue is unchanged and the item is handed back.
    fn store_item<E>(
        &mut self,
        item: T,
        lt: impl FnMut(&T, &T) -> Result<bool, E>,
    ) -> Result<(), (T, E)> {
        match &mut self.store {
            Store::Fifo(d) => d.push_back(item),
            Store::Stack(v) => v.push(item),
            Store::Heap(v) => heap::push(v, item, lt)?,
        }
        Ok(())
    }

    /// asyncio's `_get` on a non-empty queue.
    fn take_item<E>(&mut self, lt: impl FnMut(&T, &T) -> Result<bool, E>) -> Result<T, E> {
        let item = match &mut self.store {
            Store::Fifo(d) => d.pop_front(),
            Store::Stack(v) => v.pop(),
            Store::Heap(v) => heap::pop(v, lt)?,
        };
        Ok(item.expect("take_item on an empty queue"))
    }

    /// `put_nowait` without the wake-up: the caller wakes a getter if
    /// `getters` is non-empty. On failure the item is handed back.
    pub fn put_nowait<E>(
        &mut self,
        item: T,
        lt: impl FnMut(&T, &T) -> Result<bool, E>,
    ) -> Result<(), (T, QueueError<E>)> {
        if self.shutdown {
            return Err((item, QueueError::ShutDown));
        }
        if self.is_full() {
            return Err((item, QueueError::Full));
        }
        self.store_item(item, lt)
            .map_err(|(item, e)| (item, QueueError::Compare(e)))?;
        self.unfinished = self.unfinished.saturating_add(1);
        Ok(())
    }

    /// `get_nowait` without the wake-up: the caller wakes a putter.
    pub fn get_nowait<E>(
        &mut self,
        lt: impl FnMut(&T, &T) -> Result<bool, E>,
    ) -> Result<T, QueueError<E>> {
        if self.is_empty() {
            return Err(if self.shutdown {
                QueueError::ShutDown
            } else {
                QueueError::Empty
            });
        }
        self.take_item(lt).map_err(QueueError::Compare)
    }

    /// Up to `max` items, as consecutive `get_nowait` calls would return
    /// them. A comparison error on the first item is returned; on a later
    /// one the items taken so far are returned and the rest stay queued.
    pub fn get_many<E>(
        &mut self,
        max: usize,
        mut lt: impl FnMut(&T, &T) -> Result<bool, E>,
    ) -> Result<Vec<T>, QueueError<E>> {
        let first = self.get_nowait(&mut lt)?;
        let n = max.min(self.len() + 1);
        let mut out = Vec::with_capacity(n);
        out.push(first);
        match &mut self.store {
            Store::Fifo(d) => out.extend(d.drain(..n - 1)),
            Store::Stack(v) => out.extend(v.drain(v.len() + 1 - n..).rev()),
            Store::Heap(v) => {
                while out.len() < n {
                    match heap::pop(v, &mut lt) {
                        Ok(Some(x)) => out.push(x),
                        Ok(None) | Err(_) => break,
                    }
                }
            }
        }
        Ok(out)
    }

    /// `task_done()` `n` times, all or nothing. Returns the join waiters to
    /// wake, or `None` when `n` is more than the unfinished count.
    pub fn task_done(&mut self, n: usize) -> Option<VecDeque<W>> {
        if n > self.unfinished {
            return None;
        }
        self.unfinished -= n;
        Some(if self.unfinished == 0 {
            std::mem::take(&mut self.joiners)
        } else {
            VecDeque::new()
        })
    }

    /// `shutdown(immediate)`. Returns what the caller must release after
    /// unlocking: dropped items, and the joiners, getters and putters to
    /// wake (in that order, as asyncio wakes them).
    pub fn shutdown(&mut self, immediate: bool) -> Shutdown<T, W> {
        self.shutdown = true;
        let mut out = Shutdown {
            dropped: Vec::new(),
            joiners: VecDeque::new(),
            getters: std::mem::take(&mut self.getters),
            putters: std::mem::take(&mut self.putters),
        };
        if immediate {
            out.dropped = match &mut self.store {
                Store::Fifo(d) => d.drain(..).collect(),
                Store::Stack(v) | Store::Heap(v) => std::mem::take(v),
            };
            self.unfinished = self.unfinished.saturating_sub(out.dropped.len());
            if self.unfinished == 0 {
                out.joiners = std::mem::take(&mut self.joiners);
            }
        }
        out
    }
}

pub struct Shutdown<T, W> {
    pub dropped: Vec<T>,
    pub joiners: VecDeque<W>,
    pub getters: VecDeque<W>,
    pub putters: VecDeque<W>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lt(a: &i32, b: &i32) -> Result<bool, ()> {
        Ok(a < b)
    }

    #[test]
    fn bounds() {
        assert!(!Limit::from_int(Some(0)).reached(10));
        assert!(!Limit::from_int(Some(-3)).reached(10));
        assert!(!Limit::from_int(None).reached(usize::MAX));
        assert!(Limit::from_int(Some(2)).reached(2));
        assert!(!Limit::from_float(2.5).reached(2));
        assert!(Limit::from_float(2.5).reached(3));
        assert!(!Limit::from_float(f64::NAN).reached(3));
        assert!(!Limit::from_float(-0.5).reached(3));
    }

    #[test]
    fn orders_and_counts() {
        for (kind, want) in [
            (Kind::Fifo, vec![3, 1, 2]),
            (Kind::Lifo, vec![2, 1, 3]),
            (Kind::Priority, vec![1, 2, 3]),
        ] {
            let mut q: QueueCore<i32, ()> = QueueCore::new(kind, Limit::Items(3));
            for x in [3, 1, 2] {
                q.put_nowait(x, lt).unwrap();
            }
            assert_eq!(q.put_nowait(4, lt), Err((4, QueueError::Full)));
            assert_eq!(q.get_many(5, lt).unwrap(), want);
            assert_eq!(q.get_nowait(lt), Err(QueueError::Empty));
            assert_eq!(q.unfinished, 3);
            assert!(q.task_done(4).is_none());
            assert!(q.task_done(3).is_some());
        }
    }

    #[test]
    fn shutdown_immediate_counts_dropped_items_done() {
        let mut q: QueueCore<i32, u8> = QueueCore::new(Kind::Fifo, Limit::Unbounded);
        q.put_nowait(1, lt).unwrap();
        q.put_nowait(2, lt).unwrap();
        q.joiners.push_back(7);
        let out = q.shutdown(true);
        assert_eq!(out.dropped, vec![1, 2]);
        assert_eq!(out.joiners, [7]);
        assert_eq!(q.unfinished, 0);
        assert_eq!(q.get_nowait(lt), Err(QueueError::ShutDown));
        assert_eq!(q.put_nowait(3, lt), Err((3, QueueError::ShutDown)));
    }
}
