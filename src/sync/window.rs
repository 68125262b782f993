//! The replay window: which of a sender's recent sequence numbers were
//! seen. A datagram is accepted once; one older than [`WINDOW`] behind the
//! newest seen cannot be told from a replay and is refused too.

/// Sequence numbers a window remembers behind the newest.
pub const WINDOW: u64 = 1024;

/// One sender's window (IPsec's anti-replay window, as a ring of bits).
#[derive(Clone, Debug)]
pub struct Window {
    top: Option<u64>,
    bits: [u64; (WINDOW / 64) as usize],
}

impl Default for Window {
    fn default() -> Window {
        Window {
            top: None,
            bits: [0; (WINDOW / 64) as usize],
        }
    }
}

impl Window {
    /// Whether `seq` is new; marks it seen if so.
    pub fn accept(&mut self, seq: u64) -> bool {
        let Some(top) = self.top else {
            self.top = Some(seq);
            self.set(seq);
            return true;
        };
        if seq > top {
            if seq - top >= WINDOW {
                self.bits = [0; (WINDOW / 64) as usize];
            } else {
                for s in top + 1..seq {
                    self.clear(s);
                }
            }
            self.top = Some(seq);
            self.set(seq);
            return true;
        }
        if top - seq >= WINDOW || self.get(seq) {
            return false;
        }
        self.set(seq);
        true
    }

    fn slot(seq: u64) -> (usize, u64) {
        let i = seq % WINDOW;
        ((i / 64) as usize, 1 << (i % 64))
    }

    fn get(&self, seq: u64) -> bool {
        let (w, b) = Window::slot(seq);
        self.bits[w] & b != 0
    }

    fn set(&mut self, seq: u64) {
        let (w, b) = Window::slot(seq);
        self.bits[w] |= b;
    }

    fn clear(&mut self, seq: u64) {
        let (w, b) = Window::slot(seq);
        self.bits[w] &= !b;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_number_is_accepted_once_in_any_order_within_the_window() {
        let mut w = Window::default();
        assert!(w.accept(10));
        assert!(!w.accept(10), "a replay");
        assert!(w.accept(12));
        assert!(w.accept(11), "late, but unseen");
        assert!(!w.accept(11));
        assert!(!w.accept(12));
        assert!(w.accept(9), "before the first, inside the window");
        assert!(w.accept(12 + WINDOW - 1));
        assert!(!w.accept(12), "still inside the window: seen");
        assert!(w.accept(12 + WINDOW));
        assert!(w.accept(13), "never seen, just inside");
        assert!(!w.accept(12), "now too old to tell");
        assert!(!w.accept(0));
    }

    #[test]
    fn a_jump_past_the_window_forgets_everything_behind_it() {
        let mut w = Window::default();
        for s in 0..100 {
            assert!(w.accept(s));
        }
        assert!(w.accept(100 + 5 * WINDOW));
        assert!(w.accept(100 + 5 * WINDOW - 1), "cleared, not stale bits");
        assert!(!w.accept(99), "far behind");
        // Bits of numbers skipped over are clear: none is refused wrongly.
        let mut w = Window::default();
        assert!(w.accept(0));
        assert!(w.accept(WINDOW + 3));
        for s in 4..WINDOW + 3 {
            assert!(w.accept(s), "{s}");
        }
    }
}
