//! A binary min-heap over a `Vec` that makes exactly the comparisons CPython's
//! `heapq.heappush`/`heapq.heappop` make, in the same order, and lands every
//! element in the same slot.
//!
//! The one deliberate difference: a comparison that fails leaves the heap
//! exactly as it was. `heapq` swaps as it goes, so a failing `<` can leave its
//! list half sifted (and `heappop` drops the popped item on the floor). Here
//! all comparisons of an operation run first, against an untouched vector;
//! elements only move once every comparison has succeeded. This is possible
//! because every comparison `heapq` makes involves elements that its earlier
//! swaps have not moved yet (or whose new position is known), so the sequence
//! of `(a, b)` pairs it compares can be replayed without moving anything.

/// Push `item`, sifting it towards the root (heapq's `siftdown(heap, 0, n)`).
///
/// `lt(a, b)` is `a < b`. On a comparison error the heap is unchanged and the
/// item is handed back with the error.
pub fn push<T, E>(
    heap: &mut Vec<T>,
    item: T,
    mut lt: impl FnMut(&T, &T) -> Result<bool, E>,
) -> Result<(), (T, E)> {
    let start = heap.len();
    let mut pos = start;
    while pos > 0 {
        let parent = (pos - 1) >> 1;
        match lt(&item, &heap[parent]) {
            Ok(true) => pos = parent,
            Ok(false) => break,
            Err(e) => return Err((item, e)),
        }
    }
    heap.push(item);
    let mut p = start;
    while p > pos {
        let parent = (p - 1) >> 1;
        heap.swap(p, parent);
        p = parent;
    }
    Ok(())
}

/// Pop the smallest item (heapq's `heappop`: move the last element to the
/// root, bubble the smaller child up to a leaf, then sift back).
///
/// Returns `Ok(None)` on an empty heap. On a comparison error the heap is
/// unchanged.
pub fn pop<T, E>(
    heap: &mut Vec<T>,
    mut lt: impl FnMut(&T, &T) -> Result<bool, E>,
) -> Result<Option<T>, E> {
    let Some(last) = heap.pop() else {
        return Ok(None);
    };
    if heap.is_empty() {
        return Ok(Some(last));
    }
    // `heap` now has the size heapq's list has after it removed the last
    // element; `last` conceptually sits at the root.
    let end = heap.len();
    let limit = end >> 1;
    let mut path = vec![0usize];
    let mut pos = 0;
    while pos < limit {
        let mut child = 2 * pos + 1;
        if child + 1 < end {
            match lt(&heap[child], &heap[child + 1]) {
                Ok(true) => {}
                Ok(false) => child += 1,
                Err(e) => {
                    heap.push(last);
                    return Err(e);
                }
            }
        }
        path.push(child);
        pos = child;
    }
    // Sift back up: heapq compares `last` with what now sits in the parent
    // slot, which is the original element of the path one step further down.
    let mut land = path.len() - 1;
    while land > 0 {
        match lt(&last, &heap[path[land]]) {
            Ok(true) => land -= 1,
            Ok(false) => break,
            Err(e) => {
                heap.push(last);
                return Err(e);
            }
        }
    }
    for w in path[..=land].windows(2) {
        heap.swap(w[0], w[1]);
    }
    Ok(Some(std::mem::replace(&mut heap[path[land]], last)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A transcription of heapq's swap-as-you-go algorithm, for comparison.
    fn ref_push(h: &mut Vec<(i32, u32)>, item: (i32, u32), log: &mut Vec<(u32, u32)>) {
        h.push(item);
        let mut pos = h.len() - 1;
        while pos > 0 {
            let parent = (pos - 1) >> 1;
            log.push((h[pos].1, h[parent].1));
            if h[pos].0 < h[parent].0 {
                h.swap(pos, parent);
                pos = parent;
            } else {
                break;
            }
        }
    }

    fn ref_pop(h: &mut Vec<(i32, u32)>, log: &mut Vec<(u32, u32)>) -> Option<(i32, u32)> {
        let last = h.pop()?;
        if h.is_empty() {
            return Some(last);
        }
        let ret = std::mem::replace(&mut h[0], last);
        let end = h.len();
        let mut pos = 0;
        while pos < end >> 1 {
            let mut child = 2 * pos + 1;
            if child + 1 < end {
                log.push((h[child].1, h[child + 1].1));
                if h[child].0 >= h[child + 1].0 {
                    child += 1;
                }
            }
            h.swap(pos, child);
            pos = child;
        }
        while pos > 0 {
            let parent = (pos - 1) >> 1;
            log.push((h[pos].1, h[parent].1));
            if h[pos].0 < h[parent].0 {
                h.swap(pos, parent);
                pos = parent;
            } else {
                break;
            }
        }
        Some(ret)
    }

    #[test]
    fn same_comparisons_and_layout_as_heapq() {
        // Small keys so ties are frequent; the id tells elements apart.
        let mut seed = 12345u64;
        let mut rand = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..200 {
            let (mut a, mut b) = (Vec::new(), Vec::new());
            for id in 0..60u32 {
                let (mut la, mut lb) = (Vec::new(), Vec::new());
                if rand() % 3 == 0 {
                    let x = pop(&mut a, |x: &(i32, u32), y: &(i32, u32)| {
                        la.push((x.1, y.1));
                        Ok::<_, ()>(x.0 < y.0)
                    })
                    .unwrap();
                    assert_eq!(x, ref_pop(&mut b, &mut lb));
                } else {
                    let item = ((rand() % 5) as i32, id);
                    push(&mut a, item, |x, y| {
                        la.push((x.1, y.1));
                        Ok::<_, ()>(x.0 < y.0)
                    })
                    .unwrap();
                    ref_push(&mut b, item, &mut lb);
                }
                assert_eq!(la, lb);
                assert_eq!(a, b);
            }
        }
    }

    #[test]
    fn failed_comparison_leaves_heap_unchanged() {
        let mut h: Vec<i32> = Vec::new();
        for x in [5, 3, 8, 1, 9, 2, 7] {
            push(&mut h, x, |a, b| Ok::<_, ()>(a < b)).unwrap();
        }
        let before = h.clone();
        // Fail on the second comparison of each operation.
        let mut n = 0;
        let r = push(&mut h, 0, |a, b| {
            n += 1;
            if n == 2 {
                Err("boom")
            } else {
                Ok(a < b)
            }
        });
        assert_eq!(r, Err((0, "boom")));
        assert_eq!(h, before);
        let mut n = 0;
        let r = pop(&mut h, |a, b| {
            n += 1;
            if n == 2 {
                Err("boom")
            } else {
                Ok(a < b)
            }
        });
        assert_eq!(r, Err("boom"));
        assert_eq!(h, before);
    }
}
