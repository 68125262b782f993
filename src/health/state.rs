//! One target's health as a sans-IO state machine: results in, changes
//! and the time of the next check out. It reads no clock and does no I/O;
//! the monitor's task for the target passes each check's result and the
//! instants it started and ended.

use std::time::{Duration, Instant};

use super::CheckSpec;

/// What one check found: up (with the weight a dynamic exec check asked
/// for, if any) or down, and why.
pub(crate) type Outcome = Result<Option<u32>, String>;

/// A target's counts toward `fall` and `rise`, and what it last reported.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Health {
    pub up: bool,
    /// Failures in a row while up (counting to `fall`).
    pub fails: u32,
    /// Successes in a row while down (counting to `rise`).
    pub oks: u32,
    /// The weight a dynamic exec check last asked for while up.
    pub weight: Option<u32>,
}

/// What a result changed, for the monitor to report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Change {
    /// Up turned down or down turned up.
    Transition,
    /// Still up, with another dynamic weight.
    Weight,
}

/// When the next check starts, as [`Health::record`] decides it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Next {
    /// One interval after the start of the check just done.
    Interval,
    /// `delay_before_retry` after the end of the failed check just done.
    Retry,
}

impl Health {
    /// A target as it starts: down if its spec says so (keepalived
    /// `alpha`), else up.
    pub fn new(spec: &CheckSpec) -> Health {
        Health::starting(!spec.start_down)
    }

    /// A target that starts in the given state (a restarted target keeps
    /// the state the daemon last heard of).
    pub fn starting(up: bool) -> Health {
        Health {
            up,
            fails: 0,
            oks: 0,
            weight: None,
        }
    }

    /// Counts one check's result: `fall` failures in a row turn up down
    /// (with `delay_before_retry` between the tries), `rise` successes in
    /// a row turn down up.
    pub fn record(&mut self, spec: &CheckSpec, outcome: &Outcome) -> (Option<Change>, Next) {
        match outcome {
            Ok(weight) => {
                self.fails = 0;
                if self.up {
                    if *weight != self.weight {
                        self.weight = *weight;
                        return (Some(Change::Weight), Next::Interval);
                    }
                    return (None, Next::Interval);
                }
                self.oks += 1;
                if self.oks >= spec.rise.max(1) {
                    self.up = true;
                    self.oks = 0;
                    self.weight = *weight;
                    return (Some(Change::Transition), Next::Interval);
                }
                (None, Next::Interval)
            }
            Err(_) => {
                self.oks = 0;
                if !self.up {
                    return (None, Next::Interval);
                }
                self.fails += 1;
                if self.fails >= spec.fall.max(1) {
                    self.up = false;
                    self.fails = 0;
                    self.weight = None;
                    return (Some(Change::Transition), Next::Interval);
                }
                (None, Next::Retry)
            }
        }
    }
}

/// When the next check starts: one interval after the last one started,
/// or `delay_before_retry` after a failed one ended; never before it ended.
pub(crate) fn next_start(
    spec: &CheckSpec,
    started: Instant,
    ended: Instant,
    next: Next,
) -> Instant {
    match next {
        Next::Interval => (started + spec.interval).max(ended),
        Next::Retry => ended + spec.delay_before_retry,
    }
}

/// The delay before a target's first check: a random part of `warmup`
/// (`random` is any random number), none without a warmup.
pub(crate) fn first_delay(spec: &CheckSpec, random: u64) -> Duration {
    let warmup = spec.warmup.as_millis() as u64;
    if warmup == 0 {
        return Duration::ZERO;
    }
    Duration::from_millis(random % (warmup + 1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::CheckKind;

    fn spec(fall: u32, rise: u32) -> CheckSpec {
        CheckSpec {
            fall,
            rise,
            ..CheckSpec::new(CheckKind::Tcp)
        }
    }

    fn fail() -> Outcome {
        Err("connection refused".into())
    }

    #[test]
    fn one_failure_turns_up_down_by_default() {
        let spec = CheckSpec::new(CheckKind::Tcp);
        let mut h = Health::new(&spec);
        assert!(h.up);
        assert_eq!(
            h.record(&spec, &fail()),
            (Some(Change::Transition), Next::Interval)
        );
        assert!(!h.up);
        assert_eq!(
            h.record(&spec, &Ok(None)),
            (Some(Change::Transition), Next::Interval)
        );
        assert!(h.up);
    }

    #[test]
    fn fall_counts_failures_in_a_row_with_retries_between() {
        let spec = spec(3, 1);
        let mut h = Health::new(&spec);
        assert_eq!(h.record(&spec, &fail()), (None, Next::Retry));
        assert_eq!(h.record(&spec, &fail()), (None, Next::Retry));
        // A success in between starts the count again.
        assert_eq!(h.record(&spec, &Ok(None)), (None, Next::Interval));
        assert_eq!(h.record(&spec, &fail()), (None, Next::Retry));
        assert_eq!(h.record(&spec, &fail()), (None, Next::Retry));
        assert!(h.up);
        assert_eq!(
            h.record(&spec, &fail()),
            (Some(Change::Transition), Next::Interval)
        );
        assert!(!h.up);
        // Down: further failures change nothing and wait a whole interval.
        assert_eq!(h.record(&spec, &fail()), (None, Next::Interval));
    }

    #[test]
    fn rise_counts_successes_in_a_row() {
        let spec = spec(1, 3);
        let mut h = Health::starting(false);
        assert_eq!(h.record(&spec, &Ok(None)), (None, Next::Interval));
        assert_eq!(h.record(&spec, &Ok(None)), (None, Next::Interval));
        assert_eq!(h.record(&spec, &fail()), (None, Next::Interval));
        assert_eq!(h.record(&spec, &Ok(None)), (None, Next::Interval));
        assert_eq!(h.record(&spec, &Ok(None)), (None, Next::Interval));
        assert!(!h.up);
        assert_eq!(
            h.record(&spec, &Ok(None)),
            (Some(Change::Transition), Next::Interval)
        );
        assert!(h.up);
    }

    #[test]
    fn alpha_starts_down_until_the_first_success() {
        let spec = CheckSpec {
            start_down: true,
            ..CheckSpec::new(CheckKind::Tcp)
        };
        let mut h = Health::new(&spec);
        assert!(!h.up);
        assert_eq!(h.record(&spec, &fail()), (None, Next::Interval));
        assert_eq!(
            h.record(&spec, &Ok(None)),
            (Some(Change::Transition), Next::Interval)
        );
        assert!(h.up);
    }

    #[test]
    fn flapping_reports_every_transition_and_nothing_else() {
        let spec = spec(2, 2);
        let mut h = Health::new(&spec);
        let mut transitions = 0;
        for round in 0..10 {
            for _ in 0..2 {
                let outcome = if round % 2 == 0 { fail() } else { Ok(None) };
                if h.record(&spec, &outcome).0 == Some(Change::Transition) {
                    transitions += 1;
                }
            }
            assert_eq!(h.up, round % 2 == 1, "round {round}");
        }
        assert_eq!(transitions, 10);
        // One failure between successes never reaches fall 2.
        for _ in 0..10 {
            assert_eq!(h.record(&spec, &fail()).0, None);
            assert_eq!(h.record(&spec, &Ok(None)).0, None);
        }
        assert!(h.up);
    }

    #[test]
    fn a_dynamic_weight_is_a_change_while_up() {
        let spec = spec(1, 1);
        let mut h = Health::new(&spec);
        assert_eq!(h.record(&spec, &Ok(Some(5))).0, Some(Change::Weight));
        assert_eq!(h.weight, Some(5));
        assert_eq!(h.record(&spec, &Ok(Some(5))).0, None);
        assert_eq!(h.record(&spec, &Ok(None)).0, Some(Change::Weight));
        assert_eq!(h.weight, None);
        assert_eq!(h.record(&spec, &fail()).0, Some(Change::Transition));
        // Coming up carries the weight asked for, as part of the transition.
        assert_eq!(h.record(&spec, &Ok(Some(7))).0, Some(Change::Transition));
        assert_eq!(h.weight, Some(7));
    }

    #[test]
    fn the_next_check_follows_the_interval_or_the_retry_delay() {
        let spec = CheckSpec {
            interval: Duration::from_secs(6),
            delay_before_retry: Duration::from_secs(1),
            ..CheckSpec::new(CheckKind::Tcp)
        };
        let t0 = Instant::now();
        let end = t0 + Duration::from_millis(300);
        assert_eq!(
            next_start(&spec, t0, end, Next::Interval),
            t0 + Duration::from_secs(6)
        );
        assert_eq!(
            next_start(&spec, t0, end, Next::Retry),
            end + Duration::from_secs(1)
        );
        // A check longer than the interval: the next starts when it ended.
        let late = t0 + Duration::from_secs(9);
        assert_eq!(next_start(&spec, t0, late, Next::Interval), late);
    }

    #[test]
    fn warmup_delays_the_first_check_by_at_most_itself() {
        let none = CheckSpec::new(CheckKind::Tcp);
        assert_eq!(first_delay(&none, 12345), Duration::ZERO);
        let spec = CheckSpec {
            warmup: Duration::from_secs(2),
            ..none
        };
        for random in [0, 1, 1999, 2000, 2001, u64::MAX] {
            assert!(first_delay(&spec, random) <= Duration::from_secs(2));
        }
        assert_eq!(first_delay(&spec, 1500), Duration::from_millis(1500));
        assert_eq!(first_delay(&spec, 2001), Duration::ZERO);
    }
}
