//! Arbitrary bytes through `Pipeline::process`: no input may panic.
//!
//! The first byte picks the ingress port and how much headroom the frame has;
//! the rest is the frame. One pipeline lives for the whole run, so connections
//! created by earlier inputs (a SYN, say) are there for later ones (an answer,
//! an ICMP error about it), as they would be on the wire.

#![no_main]

use std::sync::Mutex;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use xvs::packet::Frame;
use xvs::pipeline::{testnet, Pipeline};
use xvs::Millis;

static PIPELINE: OnceLock<Mutex<(Pipeline, u64)>> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let Some((&ctl, frame)) = data.split_first() else {
        return;
    };
    let cell = PIPELINE.get_or_init(|| Mutex::new((testnet::pipeline(), 0)));
    let mut guard = cell.lock().unwrap_or_else(|e| e.into_inner());
    let (pipeline, clock) = &mut *guard;
    *clock += 1;
    let mut buf = vec![0u8; 4096];
    let head = if ctl & 0x80 != 0 { 256 } else { 0 };
    let len = frame.len().min(buf.len() - head);
    buf[head..head + len].copy_from_slice(&frame[..len]);
    let mut f = Frame::new(&mut buf, head, len);
    let _ = pipeline.process(Millis(*clock * 10), ctl & 1, &mut f);
});
