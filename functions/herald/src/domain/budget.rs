//! Rate budgets (DESIGN.md, "Rate limits"): each WebSocket connection has a frame budget, each
//! HTTP caller a request budget, e.g. 20 a second with bursts of 40, and each user a work budget
//! counted in the posts their frames cause.
//!
//! The rule is the generic cell rate algorithm (GCRA), a token bucket kept as one number: the
//! *theoretical arrival time* (TAT) — when the bucket would be full again if nothing else came.
//! One number means one DynamoDB attribute updated atomically, with no read-modify-write race
//! between the Lambda instances that serve one connection's frames. This module is the pure rule;
//! `store::Budgets` keeps the TAT and `limiter` applies it.

use crate::domain::config::{ConfigError, Source, bounded};

/// `rate` units a second, at most `burst` at once. A refused unit costs nothing: the TAT only
/// moves for allowed ones, so a flood cannot push its own sender's recovery further out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Milliseconds one unit costs (1000 / rate).
    interval_ms: u64,
    /// How far ahead of now the TAT may run: (burst - 1) intervals.
    tolerance_ms: u64,
}

/// What a unit gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Served; the stored TAT becomes `tat`.
    Allow { tat: u64 },
    /// Refused; the next unit fits in `retry_after_ms`.
    Deny { retry_after_ms: u64 },
}

impl Budget {
    /// `None` when `rate` is 0 (no budget: everything is served).
    pub fn new(rate: u32, burst: u32) -> Option<Self> {
        if rate == 0 {
            return None;
        }
        let interval_ms = (1000 / u64::from(rate)).max(1);
        Some(Self {
            interval_ms,
            tolerance_ms: interval_ms * u64::from(burst.max(1) - 1),
        })
    }

    /// Reads `{rate_name}` (a second, 0 = unlimited) and `{burst_name}`, with defaults.
    pub fn from_source(
        src: &dyn Source,
        rate_name: &'static str,
        burst_name: &'static str,
        default_rate: u32,
        default_burst: u32,
    ) -> Result<Option<Self>, ConfigError> {
        let rate = bounded(src, rate_name, default_rate, 0, 1000)?;
        let burst = bounded(src, burst_name, default_burst, 1, 10_000)?;
        Ok(Self::new(rate, burst))
    }

    /// A WebSocket connection's frame budget: `HERALD_FRAME_RATE` (default 20 a second),
    /// `HERALD_FRAME_BURST` (default 40).
    pub fn frames(src: &dyn Source) -> Result<Option<Self>, ConfigError> {
        Self::from_source(src, "HERALD_FRAME_RATE", "HERALD_FRAME_BURST", 20, 40)
    }

    /// An HTTP caller's request budget: `HERALD_HTTP_RATE` (default 10 a second),
    /// `HERALD_HTTP_BURST` (default 30).
    pub fn http(src: &dyn Source) -> Result<Option<Self>, ConfigError> {
        Self::from_source(src, "HERALD_HTTP_RATE", "HERALD_HTTP_BURST", 10, 30)
    }

    /// A user's work budget, in posts their frames cause (a resume page's replayed frames, a
    /// publish's recipients), over all their connections: `HERALD_WORK_RATE` (default 50 a
    /// second), `HERALD_WORK_BURST` (default 1,000: five full resume pages at once).
    pub fn work(src: &dyn Source) -> Result<Option<Self>, ConfigError> {
        Self::from_source(src, "HERALD_WORK_RATE", "HERALD_WORK_BURST", 50, 1_000)
    }

    /// A user's connects (`$connect` with a valid token): `HERALD_CONNECT_RATE` (default 2 a
    /// second), `HERALD_CONNECT_BURST` (default 20).
    pub fn connects(src: &dyn Source) -> Result<Option<Self>, ConfigError> {
        Self::from_source(src, "HERALD_CONNECT_RATE", "HERALD_CONNECT_BURST", 2, 20)
    }

    pub fn interval_ms(&self) -> u64 {
        self.interval_ms
    }

    pub fn tolerance_ms(&self) -> u64 {
        self.tolerance_ms
    }

    /// The rule: a unit at `now` is served when the TAT (never earlier than now) is at most
    /// `tolerance` ahead; serving it moves the TAT one interval on.
    pub fn decide(&self, stored_tat: Option<u64>, now: u64) -> Decision {
        self.decide_units(stored_tat, now, 1)
    }

    /// The same rule for `units` at once (work reserved before it is done, e.g. a resume page's
    /// posts): served when the TAT is within the tolerance, and then it moves `units` intervals
    /// on, possibly past the tolerance, so what follows waits until the debt is paid.
    pub fn decide_units(&self, stored_tat: Option<u64>, now: u64, units: u64) -> Decision {
        let tat = stored_tat.unwrap_or(now).max(now);
        if tat <= now + self.tolerance_ms {
            Decision::Allow {
                tat: tat + units.saturating_mul(self.interval_ms),
            }
        } else {
            Decision::Deny {
                retry_after_ms: tat - self.tolerance_ms - now,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `n` units at `now` through the rule, as the store would.
    fn spend(b: &Budget, tat: &mut Option<u64>, now: u64, n: usize) -> (usize, Option<u64>) {
        let (mut served, mut retry) = (0, None);
        for _ in 0..n {
            match b.decide(*tat, now) {
                Decision::Allow { tat: t } => {
                    *tat = Some(t);
                    served += 1;
                }
                Decision::Deny { retry_after_ms } => retry = Some(retry_after_ms),
            }
        }
        (served, retry)
    }

    #[test]
    fn a_burst_is_served_then_the_rate() {
        let b = Budget::new(20, 40).unwrap();
        let mut tat = None;
        let (served, retry) = spend(&b, &mut tat, 1_000_000, 300);
        assert_eq!(served, 40, "the burst");
        assert_eq!(retry, Some(50), "one interval until the next fits");
        // 50 ms later exactly one more fits; a second later, twenty.
        assert_eq!(spend(&b, &mut tat, 1_000_050, 5).0, 1);
        assert_eq!(spend(&b, &mut tat, 1_001_050, 100).0, 20);
    }

    #[test]
    fn refused_units_do_not_delay_recovery() {
        let b = Budget::new(10, 2).unwrap();
        let mut tat = None;
        assert_eq!(spend(&b, &mut tat, 0, 2).0, 2);
        let before = tat;
        assert_eq!(spend(&b, &mut tat, 0, 1000).0, 0);
        assert_eq!(tat, before, "a flood of refusals leaves the TAT where it was");
        assert_eq!(spend(&b, &mut tat, 100, 1).0, 1);
    }

    #[test]
    fn work_reserved_up_front_is_waited_out_before_the_next_unit() {
        let b = Budget::new(50, 1_000).unwrap(); // 20 ms a unit
        let now = 1_000_000;
        // Resume pages reserve 200 posts each: five fit the burst at once ...
        let mut tat = None;
        for _ in 0..5 {
            match b.decide_units(tat, now, 200) {
                Decision::Allow { tat: t } => tat = Some(t),
                d => panic!("{d:?}"),
            }
        }
        assert_eq!(tat, Some(now + 5 * 4_000));
        // ... the sixth waits until the TAT is back within the tolerance.
        match b.decide_units(tat, now, 200) {
            Decision::Deny { retry_after_ms } => assert_eq!(retry_after_ms, 20_000 - b.tolerance_ms()),
            d => panic!("{d:?}"),
        }
        assert!(matches!(b.decide_units(tat, now + 20, 200), Decision::Allow { .. }));
    }

    #[test]
    fn an_idle_budget_refills_to_the_burst_and_no_further() {
        let b = Budget::new(20, 40).unwrap();
        let mut tat = Some(5);
        assert_eq!(spend(&b, &mut tat, 10_000_000, 100).0, 40);
    }

    #[test]
    fn rate_zero_disables_and_settings_are_bounded() {
        assert_eq!(Budget::new(0, 40), None);
        let src = |name: &str| match name {
            "R" => Some("5".to_owned()),
            _ => None,
        };
        let b = Budget::from_source(&src, "R", "B", 20, 40).unwrap().unwrap();
        assert_eq!((b.interval_ms(), b.tolerance_ms()), (200, 39 * 200));
        let bad = |name: &str| (name == "R").then(|| "1001".to_owned());
        assert!(Budget::from_source(&bad, "R", "B", 20, 40).is_err());
    }
}
