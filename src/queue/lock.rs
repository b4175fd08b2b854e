//! A lock that is only ever tried, never waited for.
//!
//! Queue state is touched by whichever thread holds the interpreter, and
//! code that finds the lock taken must fail rather than wait (waiting while
//! attached would deadlock against the holder, which needs the interpreter
//! back to finish). A try-only lock needs no waiter bookkeeping, so
//! releasing it is a plain store: one atomic read-modify-write per critical
//! section instead of a mutex's two, on the hottest path of every `await`.

use std::cell::UnsafeCell;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicBool, Ordering};

pub struct TryLock<T> {
    busy: AtomicBool,
    value: UnsafeCell<T>,
}

// SAFETY: the value is only reached through a guard, and at most one guard
// exists at a time (acquired by a successful compare-exchange, released by
// the guard's drop), exactly as for a mutex.
unsafe impl<T: Send> Sync for TryLock<T> {}
unsafe impl<T: Send> Send for TryLock<T> {}

impl<T> TryLock<T> {
    pub fn new(value: T) -> Self {
        TryLock {
            busy: AtomicBool::new(false),
            value: UnsafeCell::new(value),
        }
    }

    /// The value, or `None` when a guard is alive.
    #[inline]
    pub fn try_lock(&self) -> Option<TryGuard<'_, T>> {
        self.busy
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .ok()
            .map(|_| TryGuard { lock: self })
    }

    /// The value through exclusive access (no guard can exist).
    pub fn get_mut(&mut self) -> &mut T {
        self.value.get_mut()
    }
}

pub struct TryGuard<'a, T> {
    lock: &'a TryLock<T>,
}

impl<T> Deref for TryGuard<'_, T> {
    type Target = T;
    #[inline]
    fn deref(&self) -> &T {
        // SAFETY: this guard is the only one.
        unsafe { &*self.lock.value.get() }
    }
}

impl<T> DerefMut for TryGuard<'_, T> {
    #[inline]
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: this guard is the only one, and it is borrowed mutably.
        unsafe { &mut *self.lock.value.get() }
    }
}

impl<T> Drop for TryGuard<'_, T> {
    #[inline]
    fn drop(&mut self) {
        self.lock.busy.store(false, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_guard_at_a_time() {
        let lock = TryLock::new(5);
        let mut g = lock.try_lock().unwrap();
        assert!(lock.try_lock().is_none());
        *g += 1;
        drop(g);
        assert_eq!(*lock.try_lock().unwrap(), 6);
    }

    #[test]
    fn threads_never_share_a_guard() {
        let lock = std::sync::Arc::new(TryLock::new(0u64));
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let lock = lock.clone();
                std::thread::spawn(move || {
                    let mut done = 0;
                    while done < 10_000 {
                        if let Some(mut g) = lock.try_lock() {
                            let v = *g;
                            *g = v + 1;
                            done += 1;
                        }
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(*lock.try_lock().unwrap(), 40_000);
    }
}
