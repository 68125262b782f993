//! The real-server side of LVS/TUN: frames xvs encapsulates, sent into a
//! namespace whose interface runs `tools/ipip-decap`, must reach the VIP on
//! that namespace's `lo` — shown by the kernel's answer (a RST, no listener)
//! going straight to the client from the VIP.
//!
//! ```text
//! [dir] d0 198.51.100.1 / 2001:db8:1::1 ── r0 198.51.100.4 / 2001:db8:1::4 [rs]
//!        client 203.0.113.7 on lo            VIP 192.0.2.10, 2001:db8::10 on lo
//! ```

use std::time::Duration;

use xvs::packet::Frame;
use xvs::pipeline::testnet::{self, Pkt, PORT_TUN, SYN};
use xvs::verdict::Verdict;
use xvs::Millis;

use crate::common::{root_or_skip, sh, temp_path, veth, Capture, Netns};

fn build_decap() -> std::path::PathBuf {
    let obj = temp_path("decap").with_extension("o");
    sh(&format!(
        "{}/tools/ipip-decap/build {}",
        env!("CARGO_MANIFEST_DIR"),
        obj.display()
    ));
    obj
}

/// A client SYN to the TUN service, through the pipeline, readdressed for the veth.
fn tunnelled_syn(n: &testnet::Net, src_mac: [u8; 6], dst_mac: [u8; 6]) -> Vec<u8> {
    let mut pipeline = testnet::pipeline();
    let input = Pkt::tcp(n.client, 40003, n.vip, PORT_TUN, SYN).bytes();
    let mut buf = vec![0u8; 2048];
    buf[256..256 + input.len()].copy_from_slice(&input);
    let mut frame = Frame::new(&mut buf, 256, input.len());
    let verdict = pipeline.process(Millis(1), 0, &mut frame);
    assert_eq!(verdict, Verdict::Transmit { port: 1 });
    let mut out = frame.data().to_vec();
    out[..6].copy_from_slice(&dst_mac);
    out[6..12].copy_from_slice(&src_mac);
    out
}

#[test]
fn ipip_decap_delivers_to_the_vip_and_the_rs_answers_directly() {
    if !root_or_skip("ipip_decap") {
        return;
    }
    let obj = build_decap();
    let dir = Netns::new("dir");
    let rs = Netns::new("rs");
    veth(&dir, "d0", &rs, "r0");
    dir.ip("addr add 198.51.100.1/24 dev d0");
    dir.ip("addr add 2001:db8:1::1/64 dev d0 nodad");
    dir.ip("addr add 203.0.113.7/32 dev lo");
    dir.ip("addr add 2001:db8:ff::7/128 dev lo");
    rs.ip("addr add 198.51.100.4/24 dev r0");
    rs.ip("addr add 2001:db8:1::4/64 dev r0 nodad");
    rs.ip("addr add 192.0.2.10/32 dev lo");
    rs.ip("addr add 2001:db8::10/128 dev lo");
    rs.ip("route add 203.0.113.0/24 via 198.51.100.1");
    rs.ip("-6 route add 2001:db8:ff::/48 via 2001:db8:1::1");
    // The decapsulated packet arrives on r0 for an address on lo.
    rs.exec("sysctl -qw net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.r0.rp_filter=0");
    rs.ip(&format!(
        "link set dev r0 xdp obj {} sec xdp",
        obj.display()
    ));
    let _ = std::fs::remove_file(&obj);
    // Neighbours resolved up front so the kernel's answers leave at once.
    dir.exec(
        "ping -c1 -W2 198.51.100.4 >/dev/null; ping -6 -c1 -W2 2001:db8:1::4 >/dev/null; true",
    );

    let cap = Capture::start(&dir, "d0", "tcp");
    let (src, dst) = (dir.mac("d0"), rs.mac("r0"));
    dir.send_frames(
        "d0",
        &[
            tunnelled_syn(&testnet::v4(), src, dst),
            tunnelled_syn(&testnet::v6(), src, dst),
        ],
    );
    let lines = cap.wait_for(
        "2001:db8::10.82 > 2001:db8:ff::7.40003",
        Duration::from_secs(5),
    );
    let text = lines.join("\n");
    assert!(
        text.contains("192.0.2.10.82 > 203.0.113.7.40003: Flags [R.]"),
        "no IPv4 answer from the VIP:\n{text}"
    );
    assert!(
        text.contains("2001:db8::10.82 > 2001:db8:ff::7.40003: Flags [R.]"),
        "no IPv6 answer from the VIP:\n{text}"
    );
}
