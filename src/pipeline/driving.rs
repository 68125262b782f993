//! The pipeline as the worker drives it: a batch at a time, then the
//! outbox drained (which packets leave which events).

use super::testnet::{pipeline, pipeline_with_room_for, v4, Pkt, ACK, PORT_DNS, PORT_NAT, SYN};
use super::{ConnClosed, Event, Pipeline, CONN_EVENTS};
use crate::conntrack::ConnState;
use crate::packet::{FlowKey, Frame, L4Proto};
use crate::service::ForwardMethod;
use crate::verdict::Verdict;
use crate::Millis;

const EXT: u8 = 0;
const INT: u8 = 1;

fn send(p: &mut Pipeline, now: u64, pkt: &Pkt, port: u8) -> Verdict {
    let b = pkt.bytes();
    let mut buf = vec![0u8; 2048];
    buf[..b.len()].copy_from_slice(&b);
    let mut f = Frame::new(&mut buf, 0, b.len());
    p.process(Millis(now), port, &mut f)
}

fn events(p: &mut Pipeline) -> Vec<Event> {
    std::iter::from_fn(|| p.poll_event()).collect()
}

#[test]
fn connection_events_are_off_by_default() {
    let n = v4();
    let mut p = pipeline();
    send(
        &mut p,
        1,
        &Pkt::tcp(n.client, 40000, n.vip, PORT_NAT, SYN),
        EXT,
    );
    assert_eq!(events(&mut p), []);
    p.end_batch(Millis(1_000_000));
    assert_eq!(events(&mut p), []);
}

#[test]
fn a_connection_is_opened_changed_and_closed_in_the_outbox() {
    let n = v4();
    let mut p = pipeline();
    p.set_conn_events(true);
    let key = FlowKey::new(L4Proto::Tcp, n.client, 40000, n.vip, PORT_NAT);
    let client = |flags| Pkt::tcp(n.client, 40000, n.vip, PORT_NAT, flags);
    let from_rs = |flags| {
        Pkt::tcp(n.rs_nat, super::testnet::RPORT_NAT, n.client, 40000, flags)
            .macs(super::testnet::RS_NAT_MAC, super::testnet::INT_MAC)
    };
    send(&mut p, 1, &client(SYN), EXT);
    let opened = match events(&mut p).as_slice() {
        [Event::Opened(e)] => *e,
        other => panic!("{other:?}"),
    };
    assert_eq!(opened.key, key);
    assert_eq!(opened.method, ForwardMethod::Nat);
    assert_eq!(opened.real.ip(), n.rs_nat);
    assert_eq!(opened.state, ConnState::SynRecv);
    assert!(opened.timeout_ms > 0 && opened.template.is_none());
    send(&mut p, 2, &from_rs(SYN | ACK), INT);
    send(&mut p, 3, &client(ACK), EXT);
    let changes: Vec<ConnState> = events(&mut p)
        .iter()
        .map(|e| match e {
            Event::Changed(c) => {
                assert_eq!((c.key, c.real_id), (key, opened.real_id));
                c.state
            }
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(changes.last(), Some(&ConnState::Established), "{changes:?}");
    // A data segment changes nothing.
    send(&mut p, 4, &client(ACK), EXT);
    assert_eq!(events(&mut p), []);
    // Expired and swept: closed.
    for ms in 0..100 {
        p.end_batch(Millis(1_000_000_000 + ms));
    }
    assert_eq!(
        events(&mut p),
        [Event::Closed(ConnClosed {
            key,
            real_id: opened.real_id
        })]
    );
}

#[test]
fn resolve_requests_come_out_as_events() {
    let n = v4();
    let mut p = pipeline();
    let syn = Pkt::tcp(n.client, 41000, n.vip, super::testnet::PORT_UNRESOLVED, SYN);
    send(&mut p, 1, &syn, EXT);
    assert_eq!(events(&mut p), [Event::Resolve(n.rs_unknown)]);
}

#[test]
fn events_that_do_not_fit_are_counted() {
    let n = v4();
    let mut p = pipeline_with_room_for(4 * CONN_EVENTS);
    p.set_conn_events(true);
    for sport in 0..CONN_EVENTS as u16 + 10 {
        send(
            &mut p,
            1,
            &Pkt::udp(n.client, 1000 + sport, n.vip, PORT_DNS),
            EXT,
        );
    }
    assert_eq!(p.stats().outbox_overflow, 10);
    assert_eq!(events(&mut p).len(), CONN_EVENTS);
}

#[test]
fn a_batch_gets_the_verdicts_single_calls_get() {
    let n = v4();
    let pkts: Vec<Pkt> = (0..150u16)
        .map(|k| match k % 5 {
            0 => Pkt::tcp(n.client, 2000 + k, n.vip, PORT_NAT, SYN),
            1 => Pkt::tcp(n.client, 2000 + k - 1, n.vip, PORT_NAT, ACK),
            2 => Pkt::udp(n.client, 3000 + k, n.vip, PORT_DNS),
            3 => Pkt::tcp(n.client, 4000 + k, n.vip, PORT_NAT, ACK),
            _ => Pkt::tcp(n.client, 40000, n.ext, 22, SYN),
        })
        .collect();
    let mut single = pipeline();
    let want: Vec<(Verdict, Vec<u8>)> = pkts
        .iter()
        .map(|pkt| {
            let b = pkt.bytes();
            let mut buf = vec![0u8; 2048];
            buf[..b.len()].copy_from_slice(&b);
            let mut f = Frame::new(&mut buf, 0, b.len());
            let v = single.process(Millis(5), EXT, &mut f);
            (v, f.data().to_vec())
        })
        .collect();
    let mut batched = pipeline();
    let mut bufs: Vec<Vec<u8>> = pkts.iter().map(|_| vec![0u8; 2048]).collect();
    let mut frames: Vec<Frame> = bufs
        .iter_mut()
        .zip(&pkts)
        .map(|(buf, pkt)| {
            let b = pkt.bytes();
            buf[..b.len()].copy_from_slice(&b);
            Frame::new(buf, 0, b.len())
        })
        .collect();
    let mut got = vec![None; pkts.len()];
    batched.process_batch(Millis(5), EXT, &mut frames, |i, v, _| got[i] = Some(v));
    for (i, (v, bytes)) in want.iter().enumerate() {
        assert_eq!(got[i], Some(*v), "frame {i}");
        assert_eq!(frames[i].data(), &bytes[..], "frame {i}");
    }
    assert_eq!(batched.stats(), single.stats());
}
