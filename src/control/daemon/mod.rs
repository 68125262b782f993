//! The daemon: the director thread's loop, and the one owner of the
//! service model.
//!
//! # Contract
//! - [`Daemon::run`] loops until told to stop. Each round is the data
//!   plane's upkeep ([`Plane::round`]: next hops, local addresses,
//!   scheduler state), waiting up to 20 ms for the kernel's network
//!   changes; then every message waiting in the [`Mailbox`], answered in
//!   the order they came; then the rate estimator's tick. So a request
//!   waits at most about 20 ms; for a second after one the rounds are
//!   1 ms, so a script of ipvsadm commands runs at about a millisecond a
//!   line instead of twenty ([`Pace`]).
//! - Other threads reach the model only by posting to the daemon's
//!   [`Inbox`](super::inbox::Inbox) ([`super::inbox`]); nothing else reads
//!   or changes it. Requests are handled by [`Control`] ([`requests`]),
//!   rates estimated as IPVS does ([`rates`]).
//! - A scrape is answered with plain numbers ([`Scrape`]); the metrics
//!   endpoint encodes them on its own thread.
//! - The data plane is a [`Plane`]: the [`Director`] in `xvs director`, a
//!   fake of plain maps in tests, so every message's handling is tested
//!   without root.

#[cfg(test)]
mod fake;
mod plane;
pub mod rates;
pub mod requests;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::inbox::{Mailbox, Message};
use super::metrics::Scrape;
use crate::director::{Director, DirectorError, DirectorOptions};
use crate::service::ServiceModel;
use crate::xsk::prog::SteerCounter;
use crate::xsk::worker::WorkerStats;

pub use plane::Plane;
pub use rates::RATE_INTERVAL;
pub use requests::Control;

/// A round's wait when no request came lately.
pub const IDLE_ROUND: Duration = Duration::from_millis(20);
/// A round's wait for a while after a request.
pub const BRISK_ROUND: Duration = Duration::from_millis(1);
/// How long rounds stay brisk after a request.
pub const BRISK_FOR: Duration = Duration::from_secs(1);

/// The director thread: the data plane, the model, and the mailbox other
/// threads post to.
pub struct Daemon<P: Plane = Director> {
    plane: P,
    control: Control,
    mailbox: Mailbox,
    pace: Pace,
}

impl<P: Plane> Daemon<P> {
    /// Takes over `plane` and `model` (already published to it).
    pub fn new(plane: P, model: ServiceModel, mailbox: Mailbox) -> Daemon<P> {
        let control = Control::new(model, &plane);
        Daemon {
            plane,
            control,
            mailbox,
            pace: Pace::new(Instant::now()),
        }
    }

    /// Runs rounds until `stop` is set.
    pub fn run(&mut self, stop: &AtomicBool) {
        while !stop.load(Ordering::Relaxed) {
            self.round();
        }
    }

    /// One round: upkeep, every waiting message, rates.
    pub fn round(&mut self) {
        self.plane.round(self.pace.wait(Instant::now()));
        while let Some(message) = self.mailbox.try_recv() {
            self.serve(message);
            self.pace.served(Instant::now());
        }
        self.control.tick(&self.plane);
    }

    /// Answers one message on its own reply channel.
    fn serve(&mut self, message: Message) {
        match message {
            Message::Ipvsadm { request, reply } => {
                let _ = reply.send(self.control.handle(&mut self.plane, &request));
            }
            Message::Scrape { reply } => {
                let _ = reply.send(self.scrape());
            }
        }
    }

    /// The numbers a metrics scrape shows, read now.
    pub fn scrape(&self) -> Scrape {
        self.control.scrape(&self.plane)
    }

    pub fn plane(&self) -> &P {
        &self.plane
    }

    pub fn control(&self) -> &Control {
        &self.control
    }
}

impl Daemon<Director> {
    /// Starts the director with `model`'s services; messages will come to
    /// `mailbox`. A failed start leaves nothing attached.
    pub fn start(
        opts: &DirectorOptions,
        model: ServiceModel,
        mailbox: Mailbox,
    ) -> Result<Daemon<Director>, DirectorError> {
        let director = Director::start(opts, model.snapshot())?;
        Ok(Daemon::new(director, model, mailbox))
    }

    /// `directing on d0 (Native XDP), ... with N worker(s) on CPU ...; M
    /// virtual service(s)`: what the director announces at start.
    pub fn describe(&self) -> String {
        let d = &self.plane;
        let names: Vec<String> = d
            .interfaces()
            .iter()
            .zip(d.xdp_modes())
            .map(|(i, m)| format!("{} ({m:?} XDP)", i.name))
            .collect();
        let placement = if d.other_cpus().is_empty() {
            String::new()
        } else {
            format!(
                " on CPU {} (other threads on {})",
                crate::cpus::format_list(d.worker_cpus()),
                crate::cpus::format_list(d.other_cpus())
            )
        };
        format!(
            "directing on {} with {} worker(s){placement}; {} virtual service(s)",
            names.join(", "),
            d.worker_stats().len(),
            d.services().services().len(),
        )
    }

    /// Stops the workers and detaches the programs; the workers' final
    /// counters, for the exit summary.
    pub fn stop(self) -> Vec<Arc<WorkerStats>> {
        let stats = self.plane.worker_stats().to_vec();
        // Read before the programs (and their counters) go.
        for (iface, counts) in Plane::steering(&self.plane) {
            let counts: Vec<String> = SteerCounter::ALL
                .iter()
                .zip(counts)
                .map(|(c, n)| format!("{} {n}", c.name()))
                .collect();
            tracing::info!("steering {iface}: {}", counts.join(" "));
        }
        self.plane.stop();
        stats
    }
}

/// How long a round waits: [`IDLE_ROUND`], or [`BRISK_ROUND`] for
/// [`BRISK_FOR`] after a message.
#[derive(Clone, Copy, Debug)]
pub struct Pace {
    brisk_until: Instant,
}

impl Pace {
    pub fn new(now: Instant) -> Pace {
        Pace { brisk_until: now }
    }

    /// The wait of a round starting at `now`.
    pub fn wait(&self, now: Instant) -> Duration {
        if now < self.brisk_until {
            BRISK_ROUND
        } else {
            IDLE_ROUND
        }
    }

    /// A message was served at `now`.
    pub fn served(&mut self, now: Instant) {
        self.brisk_until = now + BRISK_FOR;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::inbox::{self, Inbox, Unanswered};
    use crate::control::metrics::{encode, WorkerMetrics};
    use crate::control::protocol::{Request, Response};
    use fake::Fake;

    fn request(line: &str) -> Request {
        Request {
            args: line.split_whitespace().map(str::to_string).collect(),
            stdin: None,
        }
    }

    /// Posts from another thread, as the socket and metrics threads do,
    /// while this one runs the daemon's rounds until the answer is back.
    fn ask<P: Plane, T: Send + 'static>(
        daemon: &mut Daemon<P>,
        inbox: &Inbox,
        post: impl FnOnce(Inbox) -> T + Send + 'static,
    ) -> T {
        let inbox = inbox.clone();
        let asker = std::thread::spawn(move || post(inbox));
        while !asker.is_finished() {
            daemon.round();
            std::thread::sleep(Duration::from_millis(1));
        }
        asker.join().unwrap()
    }

    fn ipvsadm(daemon: &mut Daemon<Fake>, inbox: &Inbox, line: &str) -> Response {
        let request = request(line);
        ask(daemon, inbox, move |i| {
            i.ipvsadm(request, Instant::now() + Duration::from_secs(30))
                .unwrap()
        })
    }

    #[test]
    fn requests_posted_to_the_inbox_edit_the_model_and_are_answered() {
        let (inbox, mailbox) = inbox::channel();
        let mut d = Daemon::new(Fake::new(), ServiceModel::new(4), mailbox);
        let r = ipvsadm(&mut d, &inbox, "-A -t 192.0.2.10:80 -s rr");
        assert_eq!((r.exit_code, r.stderr.as_str()), (0, ""));
        let r = ipvsadm(
            &mut d,
            &inbox,
            "-a -t 192.0.2.10:80 -r 198.51.100.2:8080 -m -w 3",
        );
        assert_eq!(r.exit_code, 0, "{r:?}");
        assert_eq!(d.plane().published.len(), 2);
        assert_eq!(d.control().model().services()[0].reals.len(), 1);
        let r = ipvsadm(&mut d, &inbox, "-A -t 192.0.2.10:80");
        assert_eq!(
            (r.exit_code, r.stderr.as_str()),
            (255, "Service already exists\n")
        );
        assert_eq!(
            d.plane().published.len(),
            2,
            "a refused edit publishes nothing"
        );
        let out = ipvsadm(&mut d, &inbox, "-L -n").stdout;
        assert!(out.contains("-> 198.51.100.2:8080"), "{out}");
        assert!(d.plane().rounds > 0);
    }

    #[test]
    fn a_scrape_is_the_models_numbers_as_plain_data() {
        let (inbox, mailbox) = inbox::channel();
        let mut plane = Fake::new();
        plane.workers = vec![WorkerMetrics {
            counters: crate::counters::WorkerCounters {
                rx: 7,
                ..Default::default()
            },
            ..WorkerMetrics::default()
        }];
        plane.table.conns = 3;
        let mut d = Daemon::new(plane, ServiceModel::new(4), mailbox);
        ipvsadm(&mut d, &inbox, "-A -t 192.0.2.10:80 -s rr");
        ipvsadm(
            &mut d,
            &inbox,
            "-a -t 192.0.2.10:80 -r 198.51.100.2:8080 -m -w 3",
        );
        let s = ask(&mut d, &inbox, |i| {
            i.scrape(Instant::now() + Duration::from_secs(30)).unwrap()
        });
        assert_eq!(s.services.len(), 1);
        assert_eq!(s.services[0].label, "TCP 192.0.2.10:80");
        assert_eq!(s.services[0].reals[0].label, "198.51.100.2:8080");
        assert_eq!(s.services[0].reals[0].weight, 3);
        assert_eq!((s.workers.len(), s.workers[0].counters.rx), (1, 7));
        assert_eq!((s.table.conns, s.table_capacity), (3, 1000));
        let text = encode(&s);
        assert!(
            text.contains(
                "xvs_real_weight{service=\"TCP 192.0.2.10:80\",real=\"198.51.100.2:8080\"} 3"
            ),
            "{text}"
        );
    }

    #[test]
    fn a_daemon_that_is_gone_is_told_apart_from_a_slow_one() {
        let (inbox, mailbox) = inbox::channel();
        // Posted, never taken: no answer by the deadline.
        let soon = Instant::now() + Duration::from_millis(50);
        assert_eq!(inbox.scrape(soon).err(), Some(Unanswered::NoAnswer));
        drop(mailbox);
        let soon = Instant::now() + Duration::from_millis(50);
        assert_eq!(
            inbox.ipvsadm(request("-L -n"), soon).err(),
            Some(Unanswered::NotPosted)
        );
    }

    #[test]
    fn rounds_are_brisk_for_a_second_after_a_message() {
        let t0 = Instant::now();
        let mut pace = Pace::new(t0);
        assert_eq!(pace.wait(t0), IDLE_ROUND);
        pace.served(t0);
        assert_eq!(pace.wait(t0 + Duration::from_millis(500)), BRISK_ROUND);
        assert_eq!(pace.wait(t0 + BRISK_FOR), IDLE_ROUND);
        assert!(IDLE_ROUND <= Duration::from_millis(20));
    }
}
