//! Graceful drains (`xvs drain`): quiesce a real server, wait for its
//! ActiveConn to reach 0 or a deadline, then remove it.
//!
//! # Contract
//! - [`Drains::start`] sets the real server's weight to 0 in every
//!   service that has it (or the one named), as `ipvsadm -e -w 0` would:
//!   no new connections, established ones go on; a health check's weight
//!   does not override it. It answers at once with the drain's id.
//! - The daemon never waits on a drain: [`Drains::advance`] runs every
//!   round, sums the server's ActiveConn over its services and, at 0 or at
//!   the deadline, deletes it from each (`ipvsadm -d`: its connections are
//!   kept or expired as `expire_nodest_conn` says).
//! - [`Drains::progress`] is what the client polls: the connections left
//!   and the time to the deadline, or how the drain ended. An ended drain
//!   is remembered for [`KEEP_ENDED`].
//!
//! The wire form (xvs commands, [`Request::xvs`]):
//! `drain REAL WITHIN_SECONDS [PROTO VIP:PORT]` answers the id on stdout;
//! `drain-progress ID` answers one line, with exit status
//! [`EXIT_DRAINING`] while it goes on, 0 once drained, 1 once removed at
//! the deadline with connections left.
//!
//! [`Request::xvs`]: crate::control::protocol::Request::xvs

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::plane::Plane;
use super::requests::Control;
use crate::service::{Edit, RealId, RealSpec, ServiceKey};

/// How long an ended drain's outcome can still be asked for.
pub const KEEP_ENDED: Duration = Duration::from_secs(300);
/// The exit status of a progress answer while the drain goes on.
pub const EXIT_DRAINING: u8 = 75;

/// The drains going on, and those ended lately.
#[derive(Debug, Default)]
pub struct Drains {
    next: u64,
    list: Vec<Drain>,
}

#[derive(Debug)]
struct Drain {
    id: u64,
    real: SocketAddr,
    /// The services it is drained from, and its id in each.
    members: Vec<(ServiceKey, RealId)>,
    started: Instant,
    deadline: Instant,
    /// ActiveConn at the last round.
    active: u32,
    end: Option<(Instant, End)>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum End {
    Drained,
    /// Removed at the deadline with this many active connections.
    Deadline(u32),
    /// The removal was refused (the daemon could not publish).
    Failed(String),
}

impl Drains {
    /// Quiesces `real` in `service` (or every service that has it) and
    /// starts tracking it; the drain's id.
    pub fn start(
        &mut self,
        control: &mut Control,
        plane: &mut impl Plane,
        real: SocketAddr,
        service: Option<ServiceKey>,
        within: Duration,
        now: Instant,
    ) -> Result<u64, String> {
        let model = control.model();
        let mut members = Vec::new();
        let mut edits = Vec::new();
        for s in model.services() {
            if service.is_some_and(|k| k != s.key) {
                continue;
            }
            if let Some(r) = s
                .reals
                .iter()
                .find(|r| SocketAddr::new(r.addr, r.port) == real)
            {
                members.push((s.key, r.id));
                edits.push(Edit::EditReal(
                    s.key,
                    RealSpec {
                        addr: r.addr,
                        port: r.port,
                        method: r.method,
                        weight: 0,
                        upper_threshold: r.upper_threshold,
                        lower_threshold: r.lower_threshold,
                    },
                ));
            }
        }
        if members.is_empty() {
            return Err(match service {
                Some(k) if model.service(&k).is_none() => {
                    format!("no virtual service {}", super::health::service_label(&k))
                }
                Some(k) => format!(
                    "{real} is not a real server of {}",
                    super::health::service_label(&k)
                ),
                None => format!("no virtual service has the real server {real}"),
            });
        }
        if let Some(d) = self
            .list
            .iter()
            .find(|d| d.end.is_none() && d.members.iter().any(|m| members.contains(m)))
        {
            return Err(format!("{real} is being drained already (drain {})", d.id));
        }
        let refused = control.apply_edits(plane, &edits)?;
        if let Some((_, e)) = refused.first() {
            return Err(e.to_string());
        }
        self.next += 1;
        self.list.push(Drain {
            id: self.next,
            real,
            members,
            started: now,
            deadline: now + within,
            active: u32::MAX,
            end: None,
        });
        Ok(self.next)
    }

    /// One round: counts each drain's connections, removes the servers
    /// that are done or out of time, forgets drains ended long ago.
    pub fn advance(&mut self, control: &mut Control, plane: &mut impl Plane, now: Instant) {
        self.list.retain(|d| {
            d.end
                .as_ref()
                .is_none_or(|(at, _)| now.duration_since(*at) < KEEP_ENDED)
        });
        for d in self.list.iter_mut().filter(|d| d.end.is_none()) {
            // A server deleted meanwhile (by ipvsadm) is no member any more.
            let model = control.model();
            d.members.retain(|(k, id)| {
                model
                    .service(k)
                    .is_some_and(|s| s.reals.iter().any(|r| r.id == *id))
            });
            d.active = d
                .members
                .iter()
                .map(|(_, id)| plane.real_counts(*id).active_conns)
                .sum();
            if d.active > 0 && now < d.deadline {
                continue;
            }
            let edits: Vec<Edit> = d
                .members
                .iter()
                .map(|(k, _)| Edit::DeleteReal(*k, d.real))
                .collect();
            let end = match control.apply_edits(plane, &edits) {
                Ok(_) if d.active == 0 => End::Drained,
                Ok(_) => End::Deadline(d.active),
                Err(e) => End::Failed(e),
            };
            tracing::info!(
                "drain {} of {}: {}",
                d.id,
                d.real,
                describe(&end, now.duration_since(d.started))
            );
            d.end = Some((now, end));
        }
    }

    /// Whether a drain goes on (the daemon then rounds briskly).
    pub fn busy(&self) -> bool {
        self.list.iter().any(|d| d.end.is_none())
    }

    /// One line on drain `id`, and the exit status that goes with it.
    pub fn progress(&self, id: u64, now: Instant) -> (u8, String) {
        let Some(d) = self.list.iter().find(|d| d.id == id) else {
            return (
                255,
                format!(
                    "no drain {id} (ended more than {} s ago?)",
                    KEEP_ENDED.as_secs()
                ),
            );
        };
        match &d.end {
            None => {
                let active = if d.active == u32::MAX {
                    "counting".to_string()
                } else {
                    format!("{} active connection(s) left", d.active)
                };
                let left = d.deadline.saturating_duration_since(now).as_secs_f64();
                (
                    EXIT_DRAINING,
                    format!("draining {}: {active}, {left:.1} s to the deadline", d.real),
                )
            }
            Some((at, end)) => {
                let line = format!(
                    "{}: {}",
                    d.real,
                    describe(end, at.duration_since(d.started))
                );
                (u8::from(*end != End::Drained), line)
            }
        }
    }
}

fn describe(end: &End, took: Duration) -> String {
    match end {
        End::Drained => format!(
            "drained: no active connection left after {:.1} s; removed",
            took.as_secs_f64()
        ),
        End::Deadline(n) => format!(
            "deadline reached after {:.1} s with {n} active connection(s) left; removed",
            took.as_secs_f64()
        ),
        End::Failed(e) => format!("the removal failed: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::super::fake::Fake;
    use super::*;
    use crate::control::protocol::Request;
    use crate::service::{RealCounts, ServiceModel};

    fn run(c: &mut Control, p: &mut Fake, line: &str) {
        let r = c.handle(
            p,
            &Request {
                args: line.split_whitespace().map(str::to_string).collect(),
                stdin: None,
            },
        );
        assert_eq!(r.exit_code, 0, "{line}: {r:?}");
    }

    fn active(p: &mut Fake, id: u32, n: u32) {
        p.counts.insert(
            RealId(id),
            RealCounts {
                active_conns: n,
                inact_conns: 0,
                persist_conns: 0,
            },
        );
    }

    fn setup() -> (Control, Fake) {
        let mut p = Fake::new();
        let mut c = Control::new(ServiceModel::new(8), &p);
        for vip in ["192.0.2.10:80", "192.0.2.10:443"] {
            run(&mut c, &mut p, &format!("-A -t {vip} -s rr"));
            run(
                &mut c,
                &mut p,
                &format!("-a -t {vip} -r 198.51.100.2 -g -w 3"),
            );
            run(
                &mut c,
                &mut p,
                &format!("-a -t {vip} -r 198.51.100.3 -g -w 1"),
            );
        }
        (c, p)
    }

    fn reals(c: &Control) -> Vec<(u16, String, u32)> {
        c.model()
            .services()
            .iter()
            .flat_map(|s| {
                s.reals
                    .iter()
                    .map(|r| (s.key.port, r.addr.to_string(), r.weight))
            })
            .collect()
    }

    /// Quiesced in both services at once, removed from both when its last
    /// active connection ends; progress says how many are left.
    #[test]
    fn a_drain_quiesces_then_removes_when_the_connections_are_gone() {
        let (mut c, mut p) = setup();
        let t0 = Instant::now();
        let mut d = Drains::default();
        let real: SocketAddr = "198.51.100.2:80".parse().unwrap();
        // DR: the real server's port is the service's, so each service's
        // member is at its own port; name the one at 80.
        let id = d
            .start(&mut c, &mut p, real, None, Duration::from_secs(30), t0)
            .unwrap();
        assert_eq!(
            reals(&c),
            [
                (80, "198.51.100.2".into(), 0),
                (80, "198.51.100.3".into(), 1),
                (443, "198.51.100.2".into(), 3),
                (443, "198.51.100.3".into(), 1),
            ]
        );
        active(&mut p, 0, 2);
        d.advance(&mut c, &mut p, t0 + Duration::from_secs(1));
        assert_eq!(
            d.progress(id, t0 + Duration::from_secs(1)),
            (
                EXIT_DRAINING,
                "draining 198.51.100.2:80: 2 active connection(s) left, 29.0 s to the deadline"
                    .into()
            )
        );
        assert!(d.busy());
        active(&mut p, 0, 0);
        d.advance(&mut c, &mut p, t0 + Duration::from_secs(2));
        assert_eq!(reals(&c).len(), 3);
        let (code, line) = d.progress(id, t0 + Duration::from_secs(3));
        assert_eq!(code, 0, "{line}");
        assert!(line.contains("drained") && line.contains("2.0 s"), "{line}");
        assert!(!d.busy());
        // Forgotten after a while.
        d.advance(&mut c, &mut p, t0 + KEEP_ENDED + Duration::from_secs(3));
        assert_eq!(d.progress(id, t0).0, 255);
    }

    #[test]
    fn a_drain_out_of_time_removes_the_server_with_its_connections() {
        let (mut c, mut p) = setup();
        let t0 = Instant::now();
        let mut d = Drains::default();
        let real = "198.51.100.3:443".parse().unwrap();
        let key = c.model().services()[1].key;
        let id = d
            .start(&mut c, &mut p, real, Some(key), Duration::from_secs(5), t0)
            .unwrap();
        active(&mut p, 3, 4);
        // Twice the same real server: refused while the first goes on.
        let e = d
            .start(&mut c, &mut p, real, None, Duration::from_secs(5), t0)
            .unwrap_err();
        assert_eq!(
            e,
            format!("198.51.100.3:443 is being drained already (drain {id})")
        );
        d.advance(&mut c, &mut p, t0 + Duration::from_secs(4));
        assert_eq!(reals(&c).len(), 4);
        d.advance(&mut c, &mut p, t0 + Duration::from_secs(5));
        assert_eq!(reals(&c).len(), 3);
        let (code, line) = d.progress(id, t0 + Duration::from_secs(6));
        assert_eq!(code, 1);
        assert!(
            line.contains("4 active connection(s) left; removed"),
            "{line}"
        );
    }

    #[test]
    fn a_drain_of_no_such_server_says_so() {
        let (mut c, mut p) = setup();
        let mut d = Drains::default();
        let t0 = Instant::now();
        let within = Duration::from_secs(5);
        let e = d
            .start(
                &mut c,
                &mut p,
                "198.51.100.9:80".parse().unwrap(),
                None,
                within,
                t0,
            )
            .unwrap_err();
        assert_eq!(e, "no virtual service has the real server 198.51.100.9:80");
        let mut other = c.model().services()[0].key;
        other.port = 8080;
        let e = d
            .start(
                &mut c,
                &mut p,
                "198.51.100.2:80".parse().unwrap(),
                Some(other),
                within,
                t0,
            )
            .unwrap_err();
        assert_eq!(e, "no virtual service TCP 192.0.2.10:8080");
        assert!(!d.busy());
    }
}
