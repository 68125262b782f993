//! A frame in a buffer with room around it.
//!
//! Encapsulation (TUN) and ICMP errors make a frame longer. [`Frame`] knows the
//! buffer the frame sits in, so it can open a gap inside the frame by moving the
//! shorter side: the bytes in front into the headroom when there is headroom
//! (usually just the Ethernet header), otherwise the bytes behind into the
//! tailroom.

/// Not enough room in the buffer to grow the frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NoRoom;

/// A mutable frame `buf[start..start + len]` inside a larger buffer.
#[derive(Debug)]
pub struct Frame<'a> {
    buf: &'a mut [u8],
    start: usize,
    len: usize,
}

impl<'a> Frame<'a> {
    /// A frame of `len` bytes at `start` in `buf`; clamped to the buffer.
    pub fn new(buf: &'a mut [u8], start: usize, len: usize) -> Frame<'a> {
        let start = start.min(buf.len());
        let len = len.min(buf.len() - start);
        Frame { buf, start, len }
    }

    /// A frame filling the whole of `buf`, with no room around it.
    pub fn whole(buf: &'a mut [u8]) -> Frame<'a> {
        let len = buf.len();
        Frame::new(buf, 0, len)
    }

    #[inline]
    pub fn data(&self) -> &[u8] {
        &self.buf[self.start..self.start + self.len]
    }

    #[inline]
    pub fn data_mut(&mut self) -> &mut [u8] {
        &mut self.buf[self.start..self.start + self.len]
    }

    /// Offset of the frame's first byte in the buffer.
    pub fn start(&self) -> usize {
        self.start
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn headroom(&self) -> usize {
        self.start
    }

    pub fn tailroom(&self) -> usize {
        self.buf.len() - self.start - self.len
    }

    /// Shortens the frame to `len` bytes (no-op if it is shorter already).
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// Opens `n` bytes at offset `at` of the frame; the frame grows by `n` and
    /// what was at `at` is now at `at + n`. The gap's contents are unspecified.
    #[inline(always)]
    pub fn insert_gap(&mut self, at: usize, n: usize) -> Result<(), NoRoom> {
        if at > self.len {
            return Err(NoRoom);
        }
        if self.headroom() >= n && at <= self.len - at {
            let from = self.start;
            self.buf.copy_within(from..from + at, from - n);
            self.start -= n;
        } else if self.tailroom() >= n {
            let from = self.start + at;
            self.buf.copy_within(from..self.start + self.len, from + n);
        } else if self.headroom() >= n {
            let from = self.start;
            self.buf.copy_within(from..from + at, from - n);
            self.start -= n;
        } else {
            return Err(NoRoom);
        }
        self.len += n;
        Ok(())
    }

    /// [`Frame::insert_gap`] for a gap near the front (an outer header
    /// behind the Ethernet header, `at <= len - at`), the move chosen by
    /// the headroom alone: the `at` bytes in front into the headroom where
    /// it has `n` bytes, else the bytes behind into the tailroom. The
    /// frame is then what `insert_gap` makes of it.
    #[inline(always)]
    pub fn insert_front_gap(&mut self, at: usize, n: usize) -> Result<(), NoRoom> {
        if at > self.len {
            return Err(NoRoom);
        }
        let from = self.start;
        if from >= n {
            // The Ethernet header (with a VLAN tag or without) moves as a
            // fixed-size copy the compiler inlines, not a memmove call.
            match at {
                14 => self.move_front::<14>(from, n),
                18 => self.move_front::<18>(from, n),
                _ => self.buf.copy_within(from..from + at, from - n),
            }
            self.start = from - n;
        } else {
            let end = from + self.len;
            if self.buf.len() - end < n {
                return Err(NoRoom);
            }
            self.buf.copy_within(from + at..end, from + at + n);
        }
        self.len += n;
        Ok(())
    }

    /// Moves the `K` bytes at `from` to `from - n` (through a copy: the
    /// two may overlap).
    #[inline(always)]
    fn move_front<const K: usize>(&mut self, from: usize, n: usize) {
        let mut head = [0u8; K];
        head.copy_from_slice(&self.buf[from..from + K]);
        self.buf[from - n..from - n + K].copy_from_slice(&head);
    }

    /// Removes `n` bytes at offset `at` by moving the bytes in front of them
    /// forward (decapsulation strips an outer header this way).
    pub fn remove(&mut self, at: usize, n: usize) {
        let n = n.min(self.len.saturating_sub(at));
        let from = self.start;
        self.buf.copy_within(from..from + at, from + n);
        self.start += n;
        self.len -= n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gap_uses_headroom_for_a_short_front() {
        let mut buf = [0u8; 16];
        buf[4..10].copy_from_slice(b"abcdef");
        let mut f = Frame::new(&mut buf, 4, 6);
        f.insert_gap(2, 3).unwrap();
        assert_eq!(f.start(), 1);
        assert_eq!(&f.data()[..2], b"ab");
        assert_eq!(&f.data()[5..], b"cdef");
    }

    #[test]
    fn gap_uses_tailroom_without_headroom() {
        let mut buf = [0u8; 12];
        buf[..6].copy_from_slice(b"abcdef");
        let mut f = Frame::new(&mut buf, 0, 6);
        f.insert_gap(2, 3).unwrap();
        assert_eq!(f.start(), 0);
        assert_eq!(f.len(), 9);
        assert_eq!(&f.data()[..2], b"ab");
        assert_eq!(&f.data()[5..], b"cdef");
        assert_eq!(f.insert_gap(0, 4), Err(NoRoom));
    }

    #[test]
    fn a_front_gap_is_an_inserted_gap() {
        for (head, tail) in [(0, 3), (3, 0), (2, 3), (5, 5), (0, 0), (2, 2)] {
            let mut a = vec![0u8; head + 8 + tail];
            a[head..head + 8].copy_from_slice(b"abcdefgh");
            let mut b = a.clone();
            let mut fa = Frame::new(&mut a, head, 8);
            let mut fb = Frame::new(&mut b, head, 8);
            let (ra, rb) = (fa.insert_gap(2, 3), fb.insert_front_gap(2, 3));
            assert_eq!(ra, rb, "head {head} tail {tail}");
            assert_eq!((fa.start(), fa.len()), (fb.start(), fb.len()));
            if ra.is_ok() {
                assert_eq!(&fb.data()[..2], b"ab");
                assert_eq!(&fb.data()[5..], b"cdefgh");
            } else {
                assert_eq!(fb.data(), b"abcdefgh");
            }
        }
        // The Ethernet header's fixed-size moves, short and long gaps.
        for (at, n, head) in [
            (14, 20, 64),
            (18, 20, 64),
            (14, 40, 40),
            (14, 4, 4),
            (18, 2, 20),
        ] {
            let body: Vec<u8> = (0..60u8).collect();
            let mut a = vec![0u8; head + body.len() + 8];
            a[head..head + body.len()].copy_from_slice(&body);
            let mut b = a.clone();
            let mut fa = Frame::new(&mut a, head, body.len());
            let mut fb = Frame::new(&mut b, head, body.len());
            assert_eq!(fa.insert_gap(at, n), fb.insert_front_gap(at, n));
            assert_eq!(
                (fa.start(), fa.len()),
                (fb.start(), fb.len()),
                "at {at} n {n}"
            );
            assert_eq!(&fb.data()[..at], &body[..at]);
            assert_eq!(&fb.data()[at + n..], &body[at..]);
        }
        let mut buf = [0u8; 16];
        let mut f = Frame::new(&mut buf, 4, 6);
        assert_eq!(f.insert_front_gap(7, 1), Err(NoRoom));
    }

    #[test]
    fn remove_is_the_inverse_of_insert() {
        let mut buf = [0u8; 16];
        buf[4..10].copy_from_slice(b"abcdef");
        let mut f = Frame::new(&mut buf, 4, 6);
        f.insert_gap(2, 3).unwrap();
        f.remove(2, 3);
        assert_eq!(f.data(), b"abcdef");
    }
}
