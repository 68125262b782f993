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

    /// [`Frame::truncate`] to `len` bytes, then [`Frame::insert_gap`] for
    /// a gap near the front (an outer header behind the Ethernet header,
    /// `at <= len - at`), the move chosen by the headroom alone: the `at`
    /// bytes in front into the headroom where it has `n` bytes, else the
    /// bytes behind into the tailroom. The frame is then what those two
    /// make of it, and its bytes are returned: the slice the move was
    /// checked against, so that what is written into the gap and in front
    /// of it is checked against the same length, not the frame's fields
    /// read again. On `NoRoom` the frame is as it was.
    #[inline(always)]
    pub fn open_front_gap(&mut self, len: usize, at: usize, n: usize) -> Result<&mut [u8], NoRoom> {
        let len = self.len.min(len);
        if at > len {
            return Err(NoRoom);
        }
        let from = self.start;
        // The frame as it will be, in one bounds check.
        let w = if from >= n {
            let w = self.buf.get_mut(from - n..).ok_or(NoRoom)?;
            let w = w.get_mut(..len + n).ok_or(NoRoom)?;
            // The Ethernet header (with a VLAN tag or without) moves as a
            // fixed-size copy the compiler inlines, not a memmove call.
            match at {
                14 => move_front::<14>(w, n),
                18 => move_front::<18>(w, n),
                _ => w.copy_within(n..n + at, 0),
            }
            self.start = from - n;
            w
        } else {
            let w = self.buf.get_mut(from..).ok_or(NoRoom)?;
            let w = w.get_mut(..len + n).ok_or(NoRoom)?;
            w.copy_within(at..len, at + n);
            w
        };
        self.len = len + n;
        Ok(w)
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

/// Moves the `K` bytes at `n` of `w` to its front (through a copy: the
/// two may overlap).
#[inline(always)]
fn move_front<const K: usize>(w: &mut [u8], n: usize) {
    let mut head = [0u8; K];
    head.copy_from_slice(&w[n..n + K]);
    w[..K].copy_from_slice(&head);
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

    /// `open_front_gap` next to `truncate` and `insert_gap`: the same
    /// frame, and the slice it returns is the frame's bytes.
    fn open_like_insert(buf: &[u8], head: usize, len: usize, end: usize, at: usize, n: usize) {
        let (mut a, mut b) = (buf.to_vec(), buf.to_vec());
        let mut fa = Frame::new(&mut a, head, len);
        let mut fb = Frame::new(&mut b, head, len);
        let before = fb.data().to_vec();
        fa.truncate(end);
        let ra = fa.insert_gap(at, n);
        let rb = fb.open_front_gap(end, at, n).map(|w| w.to_vec());
        let case = format!("head {head} len {len} end {end} at {at} n {n}");
        assert_eq!(ra, rb.clone().map(|_| ()), "{case}");
        match rb {
            Ok(w) => {
                assert_eq!((fa.start(), fa.len()), (fb.start(), fb.len()), "{case}");
                assert_eq!(&fb.data()[..at], &fa.data()[..at], "{case}");
                assert_eq!(&fb.data()[at + n..], &fa.data()[at + n..], "{case}");
                assert_eq!(&w[..], fb.data(), "{case}");
            }
            Err(_) => assert_eq!(fb.data(), &before[..], "{case}"),
        }
    }

    #[test]
    fn an_opened_front_gap_is_an_inserted_gap() {
        for (head, tail) in [(0, 3), (3, 0), (2, 3), (5, 5), (0, 0), (2, 2)] {
            let mut buf = vec![0u8; head + 8 + tail];
            buf[head..head + 8].copy_from_slice(b"abcdefgh");
            for end in [8, 9, 6, 4, 1] {
                open_like_insert(&buf, head, 8, end, 2, 3);
            }
        }
        // The Ethernet header's fixed-size moves, short and long gaps,
        // padding cut or none.
        for (at, n, head) in [
            (14, 20, 64),
            (18, 20, 64),
            (14, 40, 40),
            (14, 4, 4),
            (18, 2, 20),
            (14, 20, 0),
        ] {
            let mut buf = vec![0u8; head + 60 + 24];
            for (i, b) in buf[head..head + 60].iter_mut().enumerate() {
                *b = i as u8 + 1;
            }
            for end in [60, 100, 50] {
                open_like_insert(&buf, head, 60, end, at, n);
            }
        }
        let mut buf = [0u8; 16];
        let mut f = Frame::new(&mut buf, 4, 6);
        assert_eq!(f.open_front_gap(6, 7, 1), Err(NoRoom));
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
