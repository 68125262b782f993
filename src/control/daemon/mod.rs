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
//! - Health checks ([`health`]), when the configuration has any, run on
//!   the monitor's own threads; the daemon owns the monitor
//!   ([`Daemon::with_health`]), applies the reports waiting in the
//!   inbox's slots every round, and gives the monitor the model's targets
//!   after every change of the model. Drains ([`drain`]) advance every
//!   round; the daemon never waits on one.
//! - xvs's own commands come as requests marked by
//!   [`Request::xvs_args`](super::protocol::Request::xvs_args): `status
//!   [--json]`, `drain ...`, `drain-progress ID`.

pub mod drain;
#[cfg(test)]
mod fake;
pub mod health;
mod plane;
pub mod rates;
pub mod requests;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::inbox::{Mailbox, Message};
use super::metrics::Scrape;
use super::protocol::Response;
use crate::director::{Director, DirectorError, DirectorOptions};
use crate::health::CheckConfig;
use crate::service::{ServiceKey, ServiceModel, ServicePolicy};
use crate::xsk::prog::SteerCounter;
use crate::xsk::worker::WorkerStats;

pub use drain::Drains;
pub use health::{Checks, HealthChecks};

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
    health: Option<HealthChecks>,
    drains: Drains,
    /// The model generation whose configuration sync was last given.
    services_told: Option<u64>,
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
            health: None,
            drains: Drains::default(),
            services_told: None,
        }
    }

    /// Runs `checks` (the monitor, started) with the targets of `config`
    /// from now on; `policies` are given back to a service of theirs that
    /// is deleted and defined anew.
    pub fn with_health(
        mut self,
        checks: Box<dyn Checks>,
        config: CheckConfig,
        policies: &[(ServiceKey, ServicePolicy)],
    ) -> Daemon<P> {
        let model = self.control.model();
        // As the model holds them (a sorry server's port forced), so that
        // comparing them with the model finds what was lost, not a form.
        let policies = policies
            .iter()
            .map(|(k, _)| (*k, model.policy(k)))
            .collect();
        self.health = Some(HealthChecks {
            checks,
            config,
            policies,
            seen: None,
            reals: None,
        });
        self.follow_model();
        self
    }

    /// Runs rounds until `stop` is set.
    pub fn run(&mut self, stop: &AtomicBool) {
        while !stop.load(Ordering::Relaxed) {
            self.round();
        }
    }

    /// One round: upkeep, every waiting message, health reports, drains,
    /// rates.
    pub fn round(&mut self) {
        self.plane.round(self.pace.wait(Instant::now()));
        while let Some(message) = self.mailbox.try_recv() {
            self.serve(message);
            self.pace.served(Instant::now());
        }
        while let Some(h) = self.plane.peer_health() {
            // A real server this director checks itself follows its own
            // checks: a peer's word would flip it until the next transition.
            let own = self
                .health
                .as_ref()
                .is_some_and(|c| c.config.checks(&h.service, h.real));
            if !own {
                self.control.peer_health(&mut self.plane, &h);
            }
        }
        while let Some(u) = self.plane.peer_services() {
            let outcome = self.control.peer_services(&mut self.plane, &u);
            self.plane.services_applied(outcome);
        }
        self.apply_reports();
        if self.drains.busy() {
            self.drains
                .advance(&mut self.control, &mut self.plane, Instant::now());
        }
        self.follow_model();
        self.tell_services();
        self.control.tick(&self.plane);
    }

    /// Gives sync the configured services after a change of the model
    /// (sync sends them only if they differ from the last: a health change
    /// sends nothing).
    fn tell_services(&mut self) {
        let generation = self.control.generation();
        if self.services_told != Some(generation) && self.plane.syncs_services() {
            self.services_told = Some(generation);
            self.plane.services_changed(self.control.configured_save());
        }
    }

    /// The health reports waiting, applied and published together.
    fn apply_reports(&mut self) {
        let reports = self.mailbox.reports();
        if reports.is_empty() {
            return;
        }
        for r in &reports {
            tracing::info!(
                "health: {} in {} is {}{}: {}",
                r.real,
                health::service_label(&r.service),
                if r.up { "up" } else { "down" },
                r.weight
                    .map(|w| format!(" (weight {w})"))
                    .unwrap_or_default(),
                r.reason
            );
        }
        match self
            .control
            .apply_edits(&mut self.plane, &health::edits(&reports))
        {
            Ok(_) => {}
            Err(e) => tracing::error!("health reports not applied: {e}"),
        }
    }

    /// After a change of the model: lost policies back, the monitor's
    /// targets anew.
    fn follow_model(&mut self) {
        let generation = self.control.generation();
        let Some(h) = &self.health else {
            return;
        };
        if h.seen == Some(generation) {
            return;
        }
        let lost = health::lost_policies(self.control.model(), &h.policies);
        if !lost.is_empty() {
            match self.control.apply_edits(&mut self.plane, &lost) {
                Ok(refused) => {
                    for (edit, e) in refused {
                        tracing::warn!("{edit:?} refused: {e}");
                    }
                }
                Err(e) => tracing::error!("policies not given back: {e}"),
            }
        }
        if let Some(h) = &mut self.health {
            // Targets only change with the set of real servers: a round of
            // reports (health, weights) costs a comparison, not a rebuild.
            let model = self.control.model();
            let reals = health::real_set(model);
            if h.reals.as_ref() != Some(&reals) {
                h.checks.set_targets(h.config.targets(model));
                h.reals = Some(reals);
            }
            h.seen = Some(self.control.generation());
        }
    }

    /// Answers one message on its own reply channel.
    fn serve(&mut self, message: Message) {
        match message {
            Message::Ipvsadm { request, reply } => {
                let response = match request.xvs_args() {
                    Some(args) => self.xvs(args),
                    None => self.control.handle(&mut self.plane, &request),
                };
                let _ = reply.send(response);
            }
            Message::Scrape { reply } => {
                let _ = reply.send(self.scrape());
            }
            Message::Health => self.apply_reports(),
        }
    }

    /// One of xvs's own commands (`status`, `drain`, `drain-progress`).
    fn xvs(&mut self, args: &[String]) -> Response {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let now = Instant::now();
        match args[..] {
            ["status", ref rest @ ..] if rest.iter().all(|a| *a == "--json") => {
                let statuses = self
                    .health
                    .as_ref()
                    .map(|h| h.checks.status())
                    .unwrap_or_default();
                let rows = health::rows(self.control.model(), &statuses);
                Response::ok(health::render(
                    &rows,
                    !rest.is_empty(),
                    std::time::SystemTime::now(),
                ))
            }
            ["drain", real, within, ref service @ ..] => {
                let parsed = drain_args(real, within, service);
                match parsed.and_then(|(real, within, service)| {
                    self.drains.start(
                        &mut self.control,
                        &mut self.plane,
                        real,
                        service,
                        within,
                        now,
                    )
                }) {
                    Ok(id) => Response::ok(format!("{id}\n")),
                    Err(e) => Response::error(255, format!("xvs drain: {e}")),
                }
            }
            ["drain-progress", id] => match id.parse() {
                Ok(id) => {
                    let (code, line) = self.drains.progress(id, now);
                    Response {
                        exit_code: code,
                        stdout: format!("{line}\n"),
                        stderr: String::new(),
                    }
                }
                Err(_) => Response::error(255, format!("xvs: bad drain id {id:?}")),
            },
            _ => Response::error(
                255,
                format!(
                    "xvs: this director does not know the command {:?} (an older xvs?)",
                    args.join(" ")
                ),
            ),
        }
    }

    /// The numbers a metrics scrape shows, read now.
    pub fn scrape(&self) -> Scrape {
        let mut s = self.control.scrape(&self.plane);
        if let Some(h) = &self.health {
            s.health = super::metrics::HealthMetrics::from_status(
                &h.checks.status(),
                h.checks.latency_by_kind(),
            );
        }
        s
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

    /// Stops the checks, the workers and detaches the programs; the
    /// workers' final counters, for the exit summary.
    pub fn stop(self) -> Vec<Arc<WorkerStats>> {
        drop(self.health);
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

/// `REAL WITHIN_SECONDS [PROTO VIP:PORT]`, as `xvs drain` sends them.
fn drain_args(
    real: &str,
    within: &str,
    service: &[&str],
) -> Result<(std::net::SocketAddr, Duration, Option<ServiceKey>), String> {
    let real = real
        .parse()
        .map_err(|_| format!("{real:?} is not ADDRESS:PORT"))?;
    let within = within
        .parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s >= 0.0 && *s <= 86_400.0)
        .map(Duration::from_secs_f64)
        .ok_or_else(|| format!("--within {within:?}: give seconds, 0 to 86400"))?;
    let service = match service {
        [] => None,
        [proto, vip] => Some(super::config::checks::parse_service(&format!(
            "{proto} {vip}"
        ))?),
        _ => return Err(format!("bad service {:?}", service.join(" "))),
    };
    Ok((real, within, service))
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

    /// With services sync on, the configured services go to sync after
    /// a change of them (not after a health-only change), and a peer's
    /// are applied in a round and counted.
    #[test]
    fn configured_services_go_to_sync_and_a_peers_are_applied() {
        use crate::service::{Edit, Health};
        let (inbox, mailbox) = inbox::channel();
        let mut plane = Fake::new();
        plane.syncs_services = true;
        let mut d = Daemon::new(plane, ServiceModel::new(4), mailbox);
        d.round();
        assert_eq!(d.plane().services_sent, vec![String::new()]);
        ipvsadm(&mut d, &inbox, "-A -t 192.0.2.10:80 -s rr");
        ipvsadm(&mut d, &inbox, "-a -t 192.0.2.10:80 -r 198.51.100.2:80 -m");
        let sent = d.plane().services_sent.clone();
        assert_eq!(sent.len(), 3, "{sent:?}");
        assert!(sent[2].contains("-r 198.51.100.2:80 -m -w 1"), "{sent:?}");
        // A health change: sync is told again and finds the text the same.
        let key = d.control().model().services()[0].key;
        let at = "198.51.100.2:80".parse().unwrap();
        d.control
            .apply_edits(&mut d.plane, &[Edit::SetHealth(key, at, Health::Down)])
            .unwrap();
        d.round();
        let sent = &d.plane().services_sent;
        assert_eq!(sent[sent.len() - 1], sent[2], "weights as configured");
        d.plane
            .peer_services
            .push_back(crate::sync::ServicesUpdate {
                from: "192.0.2.1:8848".parse().unwrap(),
                generation: 2,
                text: "-A -t 192.0.2.11:80 -s wrr\n".into(),
            });
        d.round();
        assert_eq!(d.plane().services_outcomes, vec![Ok(true)]);
        let model = d.control().model();
        assert_eq!(model.services()[0].key.addr.to_string(), "192.0.2.11");
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

    /// The monitor's stand-in: remembers the targets it was given.
    #[derive(Clone, Default)]
    struct FakeChecks(Arc<std::sync::Mutex<Vec<Vec<crate::health::Target>>>>);

    impl Checks for FakeChecks {
        fn set_targets(&self, targets: Vec<crate::health::Target>) {
            self.0.lock().unwrap().push(targets);
        }
        fn status(&self) -> Vec<crate::health::TargetStatus> {
            let given = self.0.lock().unwrap();
            given
                .last()
                .into_iter()
                .flatten()
                .map(|t| crate::health::TargetStatus {
                    service: t.service,
                    real: t.real,
                    kind: t.check.kind.name(),
                    up: true,
                    since: std::time::SystemTime::now(),
                    transitions: 0,
                    weight: None,
                    last: None,
                    latency: Default::default(),
                })
                .collect()
        }
    }

    fn checked_daemon() -> (Daemon<Fake>, Inbox, FakeChecks) {
        let (inbox, mailbox) = inbox::channel();
        let mut d = Daemon::new(Fake::new(), ServiceModel::new(8), mailbox);
        ipvsadm(&mut d, &inbox, "-A -t 192.0.2.10:80 -s rr");
        ipvsadm(
            &mut d,
            &inbox,
            "-a -t 192.0.2.10:80 -r 198.51.100.2:80 -m -w 3",
        );
        let key = d.control().model().services()[0].key;
        let config = CheckConfig {
            services: vec![(
                key,
                crate::health::CheckSpec::new(crate::health::CheckKind::Tcp),
                Default::default(),
            )],
            reals: vec![],
        };
        let policy = ServicePolicy {
            on_failure: crate::service::OnFailure::Remove,
            ..ServicePolicy::default()
        };
        d.control
            .apply_edits(
                &mut d.plane,
                &[crate::service::Edit::SetPolicy(key, policy)],
            )
            .unwrap();
        let checks = FakeChecks::default();
        let d = d.with_health(Box::new(checks.clone()), config, &[(key, policy)]);
        (d, inbox, checks)
    }

    /// A report posted from the monitor's thread takes the server out of
    /// the published snapshot; a real server added by ipvsadm becomes a
    /// target; a service defined anew gets its policy back.
    #[test]
    fn health_reports_reach_the_model_and_targets_follow_it() {
        let (mut d, inbox, checks) = checked_daemon();
        assert_eq!(checks.0.lock().unwrap().last().unwrap().len(), 1);
        let key = d.control().model().services()[0].key;
        let real: std::net::SocketAddr = "198.51.100.2:80".parse().unwrap();
        inbox.report(crate::health::Report {
            service: key,
            real,
            up: false,
            weight: None,
            reason: "connect refused".into(),
        });
        d.round();
        let published = d.plane().published.last().unwrap();
        assert!(
            published.services()[0].reals.is_empty(),
            "removed while down"
        );
        assert_eq!(
            checks.0.lock().unwrap().len(),
            1,
            "a report changes no target"
        );
        let out = ipvsadm(&mut d, &inbox, "-L -n").stdout;
        assert!(!out.contains("198.51.100.2"), "{out}");
        ipvsadm(&mut d, &inbox, "-a -t 192.0.2.10:80 -r 198.51.100.3:80 -m");
        assert_eq!(checks.0.lock().unwrap().last().unwrap().len(), 2);
        ipvsadm(&mut d, &inbox, "-C");
        ipvsadm(&mut d, &inbox, "-A -t 192.0.2.10:80 -s rr");
        d.round();
        assert_eq!(
            d.control().model().policy(&key).on_failure,
            crate::service::OnFailure::Remove
        );
        // xvs status: the checked servers.
        ipvsadm(
            &mut d,
            &inbox,
            "-a -t 192.0.2.10:80 -r 198.51.100.2:80 -m -w 3",
        );
        let r = ask(&mut d, &inbox, |i| {
            i.ipvsadm(
                Request::xvs(["status"]),
                Instant::now() + Duration::from_secs(30),
            )
            .unwrap()
        });
        assert_eq!(r.exit_code, 0, "{r:?}");
        assert!(
            r.stdout.contains("198.51.100.2:80") && r.stdout.contains("tcp"),
            "{r:?}"
        );
        let s = d.scrape();
        assert_eq!(s.health.targets.len(), 1);
    }

    /// A sync peer's health record marks a real server this director does
    /// not check; one it checks itself follows its own checks.
    #[test]
    fn a_peers_health_applies_only_to_servers_not_checked_here() {
        let (mut d, inbox, _checks) = checked_daemon();
        let checked = d.control().model().services()[0].key;
        ipvsadm(&mut d, &inbox, "-A -t 192.0.2.10:81 -s rr");
        ipvsadm(&mut d, &inbox, "-a -t 192.0.2.10:81 -r 198.51.100.2:81 -m");
        let unchecked = d.control().model().services()[1].key;
        let record = |service, port| crate::sync::HealthRecord {
            service,
            real: std::net::SocketAddr::new("198.51.100.2".parse().unwrap(), port),
            up: false,
        };
        d.plane.peer_reports.push_back(record(checked, 80));
        d.plane.peer_reports.push_back(record(unchecked, 81));
        d.round();
        let health = |key| {
            let m = d.control().model();
            m.health(m.service(&key).unwrap().reals[0].id)
        };
        assert_eq!(health(checked), crate::service::Health::Up);
        assert_eq!(health(unchecked), crate::service::Health::Down);
    }

    /// `xvs drain` through the daemon: quiesced at once, removed in a later
    /// round once no connection is active; progress until then.
    #[test]
    fn a_drain_goes_on_across_rounds() {
        let (inbox, mailbox) = inbox::channel();
        let mut d = Daemon::new(Fake::new(), ServiceModel::new(8), mailbox);
        ipvsadm(&mut d, &inbox, "-A -t 192.0.2.10:80 -s rr");
        ipvsadm(
            &mut d,
            &inbox,
            "-a -t 192.0.2.10:80 -r 198.51.100.2:80 -m -w 3",
        );
        d.plane.counts.insert(
            crate::service::RealId(0),
            crate::service::RealCounts {
                active_conns: 1,
                inact_conns: 0,
                persist_conns: 0,
            },
        );
        let xvs = |d: &mut Daemon<Fake>, args: Vec<String>| {
            ask(d, &inbox, move |i| {
                i.ipvsadm(Request::xvs(args), Instant::now() + Duration::from_secs(30))
                    .unwrap()
            })
        };
        let r = xvs(
            &mut d,
            ["drain", "198.51.100.2:80", "60", "tcp", "192.0.2.10:80"]
                .map(String::from)
                .to_vec(),
        );
        assert_eq!(r.exit_code, 0, "{r:?}");
        let id = r.stdout.trim().to_string();
        assert_eq!(d.control().model().services()[0].reals[0].weight, 0);
        let r = xvs(&mut d, vec!["drain-progress".into(), id.clone()]);
        assert_eq!(r.exit_code, drain::EXIT_DRAINING, "{r:?}");
        assert!(r.stdout.contains("1 active connection(s) left"), "{r:?}");
        d.plane.counts.clear();
        d.round();
        assert!(d.control().model().services()[0].reals.is_empty());
        let r = xvs(&mut d, vec!["drain-progress".into(), id]);
        assert_eq!(r.exit_code, 0, "{r:?}");
        let r = xvs(&mut d, vec!["frobnicate".into()]);
        assert_eq!(r.exit_code, 255);
    }
}
