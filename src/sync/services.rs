//! The service configuration as sync carries it: a master's configured
//! model as `ipvsadm -S -n` text, cut into [`ServicesChunk`]s that fit a
//! datagram, and put together again on a backup ([`Assembler`]).
//!
//! # Contract
//! - A configuration is a versioned unit: each change of the master's
//!   text is the next generation, sent whole in the stream and again with
//!   every bulk (resync, refresh), so a backup that lost a chunk or
//!   restarted gets it with the next one.
//! - A backup hands a generation up only when all its chunks came, in
//!   any order, duplicates ignored. A chunk of a newer generation drops an
//!   incomplete older one; a chunk of an older generation than the one
//!   being put together is ignored (counted as refused, `services_old`).
//!   The same generation again (a refresh) is put together and handed up
//!   again: whoever applies it compares it with its own.

use std::collections::HashMap;
use std::net::SocketAddr;

use super::wire::ServicesChunk;

/// Chunks of one generation at most (with 1472-byte datagrams, about
/// 11 MB of `ipvsadm -S` text).
pub const MAX_CHUNKS: u16 = 8192;

/// A whole configuration a peer sent, for the daemon to apply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServicesUpdate {
    /// The peer it came from.
    pub from: SocketAddr,
    pub generation: u32,
    /// `ipvsadm -S -n` text (as `ipvsadm -R` reads it).
    pub text: String,
}

/// Cuts `text` into chunks of at most `room` bytes (at least one chunk,
/// empty for an empty configuration); `None` if that takes more than
/// [`MAX_CHUNKS`].
pub fn split(generation: u32, text: &[u8], room: usize) -> Option<Vec<ServicesChunk>> {
    let room = room.max(1);
    let n = text.len().div_ceil(room).max(1);
    if n > MAX_CHUNKS as usize {
        return None;
    }
    let mut pieces: Vec<&[u8]> = text.chunks(room).collect();
    if pieces.is_empty() {
        pieces.push(&[]);
    }
    Some(
        pieces
            .into_iter()
            .enumerate()
            .map(|(i, b)| ServicesChunk {
                generation,
                index: i as u16,
                count: n as u16,
                bytes: b.to_vec(),
            })
            .collect(),
    )
}

/// What a chunk did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fed {
    /// Kept; its generation is not whole yet (or it came already).
    Partial,
    /// The last missing one: the whole text of its generation.
    Whole(Vec<u8>),
    /// Of an older generation than the one being put together, or of
    /// more chunks than [`MAX_CHUNKS`]: dropped.
    Old,
}

struct Partial {
    generation: u32,
    parts: Vec<Option<Vec<u8>>>,
    got: usize,
}

/// Per sender, the generation being put together.
#[derive(Default)]
pub struct Assembler {
    senders: HashMap<u32, Partial>,
}

impl Assembler {
    /// Takes one chunk from `sender`.
    pub fn feed(&mut self, sender: u32, c: &ServicesChunk) -> Fed {
        if c.count == 0 || c.count > MAX_CHUNKS || c.index >= c.count {
            return Fed::Old;
        }
        let fresh = || Partial {
            generation: c.generation,
            parts: vec![None; c.count as usize],
            got: 0,
        };
        let p = self.senders.entry(sender).or_insert_with(fresh);
        if c.generation < p.generation {
            return Fed::Old;
        }
        if c.generation > p.generation || p.parts.len() != c.count as usize {
            *p = fresh();
        }
        let slot = &mut p.parts[c.index as usize];
        if slot.is_some() {
            return Fed::Partial;
        }
        *slot = Some(c.bytes.clone());
        p.got += 1;
        if p.got < p.parts.len() {
            return Fed::Partial;
        }
        let whole = p
            .parts
            .iter_mut()
            .flat_map(|b| b.take().unwrap_or_default());
        let text = whole.collect();
        // The same generation again (a refresh) starts afresh.
        p.got = 0;
        Fed::Whole(text)
    }

    /// Forgets the senders `keep` says no to.
    pub fn retain(&mut self, keep: impl Fn(u32) -> bool) {
        self.senders.retain(|s, _| keep(*s));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &[u8] =
        b"-A -t 192.0.2.10:80 -s rr\n-a -t 192.0.2.10:80 -r 198.51.100.2:80 -m -w 1\n";

    #[test]
    fn a_text_is_cut_into_chunks_that_fit_and_put_together_in_any_order() {
        let chunks = split(3, TEXT, 10).unwrap();
        assert_eq!(chunks.len(), TEXT.len().div_ceil(10));
        assert!(chunks.iter().all(|c| c.bytes.len() <= 10 && c.count == 8));
        let mut a = Assembler::default();
        // Reordered, with a duplicate: whole only at the last missing one.
        let mut order: Vec<usize> = (0..chunks.len()).rev().collect();
        order.insert(2, 7);
        let last = order.pop().unwrap();
        for i in order {
            assert_eq!(a.feed(9, &chunks[i]), Fed::Partial, "{i}");
        }
        assert_eq!(a.feed(9, &chunks[last]), Fed::Whole(TEXT.to_vec()));
        // A refresh of the same generation is whole again.
        for c in &chunks[..chunks.len() - 1] {
            assert_eq!(a.feed(9, c), Fed::Partial);
        }
        assert_eq!(a.feed(9, chunks.last().unwrap()), Fed::Whole(TEXT.to_vec()));
    }

    #[test]
    fn a_lost_chunk_waits_for_the_next_send_and_a_newer_generation_replaces_an_older() {
        let old = split(1, TEXT, 16).unwrap();
        let new = split(2, b"-A -u 192.0.2.10:53 -s wrr\n", 16).unwrap();
        let mut a = Assembler::default();
        // Generation 1 loses its chunk 2; generation 2 replaces it.
        for (i, c) in old.iter().enumerate() {
            if i != 2 {
                assert_eq!(a.feed(1, c), Fed::Partial);
            }
        }
        assert_eq!(a.feed(1, &new[1]), Fed::Partial);
        // The late chunk of generation 1 is too old now.
        assert_eq!(a.feed(1, &old[2]), Fed::Old);
        assert_eq!(
            a.feed(1, &new[0]),
            Fed::Whole(b"-A -u 192.0.2.10:53 -s wrr\n".to_vec())
        );
        // Another sender's generations are its own.
        let mut got = None;
        for c in &old {
            if let Fed::Whole(t) = a.feed(2, c) {
                got = Some(t);
            }
        }
        assert_eq!(got.as_deref(), Some(TEXT));
    }

    #[test]
    fn an_empty_configuration_is_one_empty_chunk_and_limits_hold() {
        let chunks = split(5, b"", 100).unwrap();
        assert_eq!(chunks.len(), 1);
        let mut a = Assembler::default();
        assert_eq!(a.feed(1, &chunks[0]), Fed::Whole(Vec::new()));
        let big = vec![b'x'; MAX_CHUNKS as usize * 2 + 1];
        assert!(split(1, &big, 2).is_none());
        let bad = ServicesChunk {
            generation: 9,
            index: 0,
            count: MAX_CHUNKS + 1,
            bytes: Vec::new(),
        };
        assert_eq!(a.feed(1, &bad), Fed::Old);
    }
}
