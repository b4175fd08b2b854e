//! Invariants of the engine: FIFO, capacity, close, cancellation, and
//! exactly-once delivery under multi-thread stress.

use super::*;
use std::collections::{HashSet, VecDeque};
use std::future::Future;
use std::sync::Arc;
use std::task::{Wake, Waker};
use std::thread;
use std::time::{Duration, Instant};

struct Flag(std::sync::atomic::AtomicUsize);
impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}
fn counting_waker() -> (Arc<Flag>, Waker) {
    let f = Arc::new(Flag(0.into()));
    (f.clone(), Waker::from(f))
}
fn wakes(f: &Flag) -> usize {
    f.0.load(std::sync::atomic::Ordering::SeqCst)
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .unwrap()
}

#[test]
fn fifo_and_capacity() {
    let ch = Channel::new(Some(3));
    for i in 0..3 {
        ch.try_send(i).unwrap();
    }
    assert_eq!(ch.try_send(9), Err(TrySendError::Full(9)));
    assert_eq!(ch.len(), 3);
    assert_eq!(ch.try_recv(), Ok(0));
    ch.try_send(3).unwrap();
    let mut out = vec![];
    assert_eq!(ch.try_recv_many(10, &mut out), Ok(3));
    assert_eq!(out, vec![1, 2, 3]);
    assert_eq!(ch.try_recv(), Err(TryRecvError::Empty));
    let s = ch.stats();
    assert_eq!((s.sent, s.received, s.capacity), (4, 4, Some(3)));
}

#[test]
#[should_panic]
fn zero_capacity_is_rejected() {
    let _ = Channel::<u8>::new(Some(0));
}

#[test]
fn close_drains_then_ends() {
    let ch = Channel::new(None);
    ch.try_send(1).unwrap();
    ch.try_send(2).unwrap();
    assert!(ch.close());
    assert!(!ch.close());
    assert_eq!(ch.try_send(3), Err(TrySendError::Closed(3)));
    assert_eq!(ch.try_recv(), Ok(1));
    assert_eq!(ch.try_recv(), Ok(2));
    assert_eq!(ch.try_recv(), Err(TryRecvError::Closed));
}

#[test]
fn receiver_gets_handoff_and_cancel_puts_back_in_front() {
    let ch = Arc::new(Channel::new(None));
    let (f, w) = counting_waker();
    let RecvStart::Wait(ticket) = ch.recv_or_wait(&w) else {
        panic!()
    };
    ch.try_send(1).unwrap(); // handed to the waiting receiver
    ch.try_send(2).unwrap(); // queued
    assert_eq!(wakes(&f), 1);
    assert_eq!(ch.len(), 1);
    drop(ticket); // gave up after the hand-off: 1 goes back in front
    assert_eq!(ch.try_recv(), Ok(1));
    assert_eq!(ch.try_recv(), Ok(2));
    let s = ch.stats();
    assert_eq!((s.sent, s.received), (2, 2));
}

#[test]
fn cancelled_receiver_passes_item_to_next_receiver() {
    let ch = Arc::new(Channel::new(None));
    let (_f1, w1) = counting_waker();
    let (f2, w2) = counting_waker();
    let RecvStart::Wait(t1) = ch.recv_or_wait(&w1) else {
        panic!()
    };
    let RecvStart::Wait(mut t2) = ch.recv_or_wait(&w2) else {
        panic!()
    };
    ch.try_send(7).unwrap();
    drop(t1);
    assert_eq!(wakes(&f2), 1);
    assert!(matches!(t2.poll(None), RecvPoll::Ready(7)));
}

#[test]
fn cancelled_sender_leaves_nothing_and_passes_permit() {
    let ch = Arc::new(Channel::new(Some(1)));
    ch.try_send(0).unwrap();
    let (f1, w1) = counting_waker();
    let (f2, w2) = counting_waker();
    let SendStart::Wait(t1, _item1) = ch.send_or_wait(1, &w1) else {
        panic!()
    };
    let SendStart::Wait(mut t2, item2) = ch.send_or_wait(2, &w2) else {
        panic!()
    };
    assert_eq!(ch.stats().waiting_senders, 2);
    assert_eq!(ch.try_recv(), Ok(0)); // permit to sender 1
    assert_eq!(wakes(&f1), 1);
    drop(t1); // sender 1 gives up: permit passes to sender 2
    assert_eq!(wakes(&f2), 1);
    assert!(matches!(t2.poll(item2, None), SendPoll::Sent));
    assert_eq!(ch.try_recv(), Ok(2));
    assert_eq!(ch.try_recv(), Err(TryRecvError::Empty));
}

#[test]
fn close_wakes_waiters() {
    let ch = Arc::new(Channel::<i32>::new(Some(1)));
    let (fr, wr) = counting_waker();
    let RecvStart::Wait(mut rt) = ch.recv_or_wait(&wr) else {
        panic!()
    };
    ch.close();
    assert_eq!(wakes(&fr), 1);
    assert!(matches!(rt.poll(None), RecvPoll::Closed));

    let ch = Arc::new(Channel::new(Some(1)));
    ch.try_send(1).unwrap();
    let (fs, ws) = counting_waker();
    let SendStart::Wait(mut st, item) = ch.send_or_wait(2, &ws) else {
        panic!()
    };
    ch.close();
    assert_eq!(wakes(&fs), 1);
    assert!(matches!(st.poll(item, None), SendPoll::Closed(2)));
    assert_eq!(ch.try_recv(), Ok(1));
}

#[test]
fn permit_granted_before_close_is_not_used() {
    let ch = Arc::new(Channel::new(Some(1)));
    ch.try_send(1).unwrap();
    let (_f, w) = counting_waker();
    let SendStart::Wait(mut t, item) = ch.send_or_wait(2, &w) else {
        panic!()
    };
    assert_eq!(ch.try_recv(), Ok(1));
    ch.close();
    assert!(matches!(t.poll(item, None), SendPoll::Closed(2)));
    assert_eq!(ch.try_recv(), Err(TryRecvError::Closed));
}

#[test]
fn blocking_timeouts() {
    let ch = Arc::new(Channel::<i32>::new(Some(1)));
    let t0 = Instant::now();
    let d = Some(t0 + Duration::from_millis(30));
    assert_eq!(ch.recv_blocking(d), Err(RecvTimeoutError::Timeout));
    ch.try_send(1).unwrap();
    assert_eq!(
        ch.send_blocking(2, d.map(|d| d + Duration::from_millis(30))),
        Err(SendTimeoutError::Timeout(2))
    );
    assert!(t0.elapsed() >= Duration::from_millis(60));
    assert_eq!(ch.stats().waiting_senders, 0);
    assert_eq!(ch.try_recv(), Ok(1));
}

#[test]
fn tokio_recv_dropped_after_handoff_loses_nothing() {
    let rt = rt();
    let ch = Arc::new(Channel::new(None));
    rt.block_on(async {
        let c = ch.clone();
        let h = tokio::spawn(async move { c.recv().await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        h.abort();
        let _ = h.await;
        ch.try_send(5).unwrap();
        assert_eq!(ch.recv().await, Ok(5));
        // Drop a recv future that has an item handed to it but never polled again.
        let c = ch.clone();
        let mut fut = Box::pin(c.recv());
        let (_f, waker) = counting_waker();
        let mut cx = std::task::Context::from_waker(&waker);
        assert!(fut.as_mut().poll(&mut cx).is_pending());
        ch.try_send(6).unwrap();
        ch.try_send(7).unwrap();
        drop(fut);
        assert_eq!(ch.recv_many(10).await, Ok(vec![6, 7]));
    });
}

/// Threads (blocking), tokio tasks and ticket-level cancellations all at
/// once: every item arrives exactly once and each producer's items arrive
/// in order at each consumer.
#[test]
fn stress_exactly_once() {
    const PRODUCERS: u64 = 4;
    const PER: u64 = 20_000;
    let ch = Arc::new(Channel::<u64>::new(Some(64)));
    let rt = rt();
    let mut producers = vec![];
    for p in 0..PRODUCERS {
        let ch = ch.clone();
        if p % 2 == 0 {
            producers.push(thread::spawn(move || {
                for i in 0..PER {
                    ch.send_blocking(p * PER + i, None).unwrap();
                }
            }));
        } else {
            let h = rt.spawn(async move {
                for i in 0..PER {
                    // Some sends are started and abandoned; their item is re-sent.
                    if i % 7 == 0 {
                        let f = ch.send(p * PER + i);
                        let r = tokio::time::timeout(Duration::from_micros(1), f).await;
                        if matches!(r, Ok(Ok(()))) {
                            continue;
                        }
                    }
                    ch.send(p * PER + i).await.unwrap();
                }
            });
            producers.push(thread::spawn(move || futures_block(h)));
        }
    }
    let mut consumers = vec![];
    for c in 0..4 {
        let ch = ch.clone();
        if c % 2 == 0 {
            consumers.push(thread::spawn(move || {
                let mut got = vec![];
                while let Ok(v) = ch.recv_many_blocking_with(c + 1, None, || false) {
                    got.extend(v);
                }
                got
            }));
        } else {
            let h = rt.spawn(async move {
                let mut got = vec![];
                loop {
                    // Abandon some receives mid-wait; handed items must come back.
                    match tokio::time::timeout(Duration::from_micros(5), ch.recv()).await {
                        Ok(Ok(v)) => got.push(v),
                        Ok(Err(_)) => break,
                        Err(_) => continue,
                    }
                }
                got
            });
            consumers.push(thread::spawn(move || futures_block(h)));
        }
    }
    for p in producers {
        p.join().unwrap();
    }
    ch.close();
    let mut seen = HashSet::new();
    let mut total = 0;
    for c in consumers {
        let got = c.join().unwrap();
        for v in got {
            assert!(seen.insert(v), "duplicate {v}");
            total += 1;
        }
    }
    assert_eq!(total, PRODUCERS * PER);
    let s = ch.stats();
    assert_eq!(
        (s.sent, s.received, s.len),
        (PRODUCERS * PER, PRODUCERS * PER, 0)
    );
    assert_eq!((s.waiting_senders, s.waiting_receivers), (0, 0));
}

fn futures_block<R: Send + 'static>(h: tokio::task::JoinHandle<R>) -> R {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(h).unwrap()
}

#[test]
fn send_many_blocking_in_order() {
    let ch = Arc::new(Channel::new(Some(2)));
    let c = ch.clone();
    let h = thread::spawn(move || {
        let mut items: VecDeque<i32> = (0..100).collect();
        c.send_many_blocking(&mut items, None, || false).unwrap();
        c.close();
    });
    let mut got = vec![];
    while let Ok(v) = ch.recv_blocking(None) {
        got.push(v);
    }
    h.join().unwrap();
    assert_eq!(got, (0..100).collect::<Vec<_>>());
}
