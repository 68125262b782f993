//! Large arrays on transparent huge pages: the connection table's memory.
//!
//! Every frame reads two or three lines of the connection table at places
//! its hash picks, so a table of a few megabytes or more misses the TLB on
//! nearly every frame when its pages are 4 KiB (a core's second-level TLB
//! maps a few megabytes). [`HugeSlice`] maps such an array by itself,
//! aligned to 2 MiB, and asks for transparent huge pages on it
//! (`madvise(MADV_HUGEPAGE)`), which the kernel's default THP setting
//! (`madvise`) grants to regions that ask; each 2 MiB page is one TLB entry.
//! Whether the kernel could give huge pages is its business: without them
//! (THP off, memory too fragmented) the array works on small pages.
//!
//! Arrays under 2 MiB gain nothing from it and would round up to a whole
//! huge page each: they are mapped on small pages and not advised.
//!
//! Every element is written before the array is handed out, so the kernel
//! faults the pages in now, not under a worker's first frames.

use std::io;
use std::ops::Deref;
use std::ptr::NonNull;

/// The size of a transparent huge page on x86-64 and aarch64 (4 KiB base
/// pages).
pub const HUGE_PAGE: usize = 2 << 20;

/// `n` values of `T` in a mapping of their own: a `Box<[T]>` whose memory
/// is on transparent huge pages where the kernel has them.
pub struct HugeSlice<T> {
    ptr: NonNull<T>,
    len: usize,
    /// The mapping: `map_len` bytes from `ptr`.
    map_len: usize,
    huge: bool,
}

// SAFETY: a HugeSlice owns its elements as a Box<[T]> does; sending or
// sharing it sends or shares the Ts.
unsafe impl<T: Send> Send for HugeSlice<T> {}
// SAFETY: as above; `&HugeSlice` gives only `&[T]`.
unsafe impl<T: Sync> Sync for HugeSlice<T> {}

impl<T> HugeSlice<T> {
    /// `n` values from `f`, in order; the mapping's failure as an error.
    pub fn new(n: usize, mut f: impl FnMut() -> T) -> io::Result<HugeSlice<T>> {
        let bytes = n
            .checked_mul(size_of::<T>())
            .ok_or_else(|| io::Error::from(io::ErrorKind::OutOfMemory))?;
        assert!(align_of::<T>() <= 4096, "HugeSlice aligns to pages at most");
        if bytes == 0 {
            return Ok(HugeSlice {
                ptr: NonNull::dangling(),
                len: n,
                map_len: 0,
                huge: false,
            });
        }
        let huge = bytes >= HUGE_PAGE;
        let (base, map_len) = if huge {
            map_aligned(bytes.next_multiple_of(HUGE_PAGE))?
        } else {
            (map(bytes)?, bytes)
        };
        // A refusal (THP compiled out: EINVAL) leaves small pages.
        // SAFETY: [base, base + map_len) is our own fresh mapping; the
        // advice changes how it is backed, never what it holds.
        let advised =
            huge && unsafe { libc::madvise(base.cast(), map_len, libc::MADV_HUGEPAGE) } == 0;
        let mut s = HugeSlice {
            ptr: NonNull::new(base.cast::<T>()).expect("mmap returned a mapping"),
            len: 0,
            map_len,
            huge: advised,
        };
        for i in 0..n {
            // SAFETY: element i lies inside the mapping (n * size_of::<T>()
            // ≤ map_len), is aligned (the mapping is page-aligned and
            // align_of::<T>() ≤ 4096 divides size_of::<T>()), and is not
            // yet initialised; `len` counts the ones that are, so a panic
            // in `f` drops exactly those.
            unsafe { s.ptr.as_ptr().add(i).write(f()) };
            s.len = i + 1;
        }
        Ok(s)
    }

    /// Whether the kernel accepted the advice to back this array with huge
    /// pages (it still backs each 2 MiB with one only when it has one free).
    pub fn advised_huge(&self) -> bool {
        self.huge
    }
}

impl<T> Deref for HugeSlice<T> {
    type Target = [T];

    #[inline(always)]
    fn deref(&self) -> &[T] {
        // SAFETY: `len` elements from `ptr` are initialised and live as
        // long as `self`; a zero-length slice may dangle.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl<T> Drop for HugeSlice<T> {
    fn drop(&mut self) {
        // SAFETY: the `len` initialised elements are dropped once, then
        // the mapping they lived in is unmapped; nothing refers to either
        // after `drop`.
        unsafe {
            std::ptr::drop_in_place(std::ptr::slice_from_raw_parts_mut(
                self.ptr.as_ptr(),
                self.len,
            ));
            if self.map_len > 0 {
                libc::munmap(self.ptr.as_ptr().cast(), self.map_len);
            }
        }
    }
}

/// A private anonymous read-write mapping of `len` bytes.
fn map(len: usize) -> io::Result<*mut u8> {
    // SAFETY: a fresh anonymous mapping aliases nothing.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    Ok(p.cast())
}

/// A mapping of `len` bytes (a multiple of [`HUGE_PAGE`]) starting on a
/// [`HUGE_PAGE`] boundary: one huge page more is mapped, and what lies
/// before the boundary and after `len` is unmapped again.
fn map_aligned(len: usize) -> io::Result<(*mut u8, usize)> {
    let over = len
        .checked_add(HUGE_PAGE)
        .ok_or_else(|| io::Error::from(io::ErrorKind::OutOfMemory))?;
    let p = map(over)? as usize;
    let start = p.next_multiple_of(HUGE_PAGE);
    let (head, tail) = (start - p, over - len - (start - p));
    // SAFETY: both ranges are page-aligned parts of the mapping just made
    // that nothing refers to.
    unsafe {
        if head > 0 {
            libc::munmap(p as *mut libc::c_void, head);
        }
        if tail > 0 {
            libc::munmap((start + len) as *mut libc::c_void, tail);
        }
    }
    Ok((start as *mut u8, len))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    #[test]
    fn a_large_array_is_huge_page_aligned_and_holds_its_values() {
        let n = 3 * HUGE_PAGE / 8 + 5;
        let mut i = 0u64;
        let s = HugeSlice::new(n, || {
            i += 1;
            AtomicU64::new(i)
        })
        .expect("a few megabytes");
        assert_eq!(s.len(), n);
        assert_eq!(s.as_ptr() as usize % HUGE_PAGE, 0);
        assert_eq!(s[0].load(Ordering::Relaxed), 1);
        assert_eq!(s[n - 1].load(Ordering::Relaxed), n as u64);
        s[n - 1].store(7, Ordering::Relaxed);
        assert_eq!(
            s.iter().map(|a| a.load(Ordering::Relaxed)).max(),
            Some(n as u64 - 1)
        );
    }

    #[test]
    fn a_small_array_stays_on_small_pages() {
        let s = HugeSlice::new(100, || 9u32).expect("a small array");
        assert!(!s.advised_huge());
        assert_eq!(&s[..3], &[9, 9, 9]);
        let empty = HugeSlice::<u64>::new(0, || 0).expect("nothing");
        assert!(empty.is_empty());
    }

    #[test]
    fn elements_are_dropped_with_the_array() {
        let rc = std::rc::Rc::new(());
        let s = HugeSlice::new(1000, || rc.clone()).expect("a small array");
        assert_eq!(std::rc::Rc::strong_count(&rc), 1001);
        drop(s);
        assert_eq!(std::rc::Rc::strong_count(&rc), 1);
    }
}
