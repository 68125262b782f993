//! Arbitrary datagrams into a backup's sync session: no input may panic.
//!
//! The first byte says whether to give the rest a valid tag (of the
//! `--sync-insecure` empty key) before it is received, so that the body
//! parser and the session's handling run on arbitrary authentic content,
//! not only the MAC check. One session lives for the whole run, so senders,
//! windows and gaps built by earlier inputs meet later ones.

#![no_main]

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use hmac::{Hmac, Mac};
use libfuzzer_sys::fuzz_target;
use sha2::Sha256;
use xvs::packet::FlowKey;
use xvs::sync::session::Table;
use xvs::sync::stats::Refused;
use xvs::sync::wire::{ConnRecord, Entry, Key, TAG_LEN};
use xvs::sync::{Now, Session, SessionConfig, SyncStats};
use xvs::Millis;

#[derive(Default)]
struct Maps(HashMap<FlowKey, ConnRecord>);

impl Table for Maps {
    fn apply(&mut self, e: &Entry, _now: Millis) -> Result<(), Refused> {
        match e {
            Entry::Conn(c) => {
                self.0.insert(c.key, *c);
            }
            Entry::Closed(k) => {
                self.0.remove(k);
            }
            _ => {}
        }
        Ok(())
    }

    fn walk(&mut self, _now: Millis) -> Vec<Entry> {
        self.0.values().map(|c| Entry::Conn(*c)).collect()
    }
}

static SESSION: OnceLock<Mutex<(Session, Maps, u64)>> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let Some((&flag, rest)) = data.split_first() else {
        return;
    };
    let mut bytes = rest.to_vec();
    if flag & 1 == 1 && bytes.len() >= TAG_LEN {
        let n = bytes.len() - TAG_LEN;
        let mut m = Hmac::<Sha256>::new_from_slice(b"").unwrap();
        m.update(&bytes[..n]);
        bytes[n..].copy_from_slice(&m.finalize().into_bytes());
    }
    let cell = SESSION.get_or_init(|| {
        let mut s = Session::new(
            SessionConfig::new(1),
            Key::insecure(),
            Arc::new(SyncStats::default()),
        );
        let now = Now {
            mono: Millis(0),
            wall_ms: 0,
        };
        s.set_master(true, now);
        s.start_backup(now);
        Mutex::new((s, Maps::default(), 0))
    });
    let mut g = cell.lock().unwrap();
    let (session, table, t) = &mut *g;
    *t += 7;
    // The wall clock stays near 0 so fuzzed timestamps can be fresh.
    let now = Now {
        mono: Millis(*t),
        wall_ms: 30_000,
    };
    let from = "203.0.113.1:8848".parse().unwrap();
    let _ = session.receive(now, from, &bytes, table);
    session.tick(now, table);
    while session.poll_transmit().is_some() {}
});
