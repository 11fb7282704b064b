//! Applies a rate budget (`budget`) to a caller: WebSocket frames per connection, HTTP requests
//! per user, and the work a user's frames cause (posts), over all their connections: a frame
//! that causes work is admitted on that budget too, and charged what it cost once done. The shared state is in DynamoDB (`store::Budgets`), because a connection's frames
//! are spread over every instance of the function.
//!
//! A unit is charged at the time API Gateway received it (`requestTimeEpoch`, `timeEpoch`), not
//! when an instance got round to it: the budget is about how fast the client sends, and a burst
//! that queued up before the function must not pass for a steady stream because the function
//! took its time. Every time compared comes from that one clock.
//!
//! Each instance also remembers, for a short while, whom it refused and until when. A refusal
//! means the stored TAT is more than the burst ahead, and refused units never move it, so every
//! unit before that time is refused too: answering them from memory is exact, and it is what
//! keeps a flood cheap — after one refusal per instance, the flood's frames cost no I/O, so they
//! hold a Lambda instance for microseconds instead of a DynamoDB round trip, and other
//! connections' frames are not queued behind them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::Value;

use crate::domain::budget::{Budget, Decision};
use crate::domain::cursor::now_millis;
use crate::domain::frames::{self, ClientFrame, ErrorFrame};
use crate::domain::metrics::Metrics;
use crate::io::store::{Store, StoreError};

/// How far API Gateway's receive time may be from this instance's clock and still be used. A
/// frame does not queue that long, so anything further off is a wrong timestamp (a replayed test
/// event, a skewed clock), and charging it could refuse a connection for days.
const MAX_SKEW_MS: u64 = 60_000;

/// The time a unit is charged at: when API Gateway received it, unless that is missing or
/// implausible; then the instance's clock.
fn charge_time(received_ms: i64, clock_ms: u64) -> u64 {
    match u64::try_from(received_ms) {
        Ok(r) if r > 0 && r.abs_diff(clock_ms) <= MAX_SKEW_MS => r,
        _ => clock_ms,
    }
}

/// Refusals remembered per instance; beyond it, expired ones are dropped (then all, if a flood
/// of distinct keys filled it — forgetting only costs a DynamoDB call).
const REMEMBERED: usize = 10_000;

#[derive(Clone, Debug)]
pub struct Limiter {
    store: Store,
    budget: Option<Budget>,
    work: Option<Budget>,
    refused_until: Arc<Mutex<HashMap<String, u64>>>,
}

impl Limiter {
    /// `budget: None` serves everything.
    pub fn new(store: Store, budget: Option<Budget>) -> Self {
        Self {
            store,
            budget,
            work: None,
            refused_until: Arc::default(),
        }
    }

    /// With a work budget per user (`None`: work is not counted).
    pub fn with_work(mut self, work: Option<Budget>) -> Self {
        self.work = work;
        self
    }

    /// The key of a user's work budget.
    pub fn work_key(tenant: &str, user: &str) -> String {
        format!("work#{tenant}#{user}")
    }

    /// Admits a frame that causes work on its user's work budget, reserving `reserve` posts (a
    /// resume page's most): `Some(ms)` when it is refused for `ms`, and nothing is done then.
    /// Reserving before the work, not charging after, is what holds concurrent frames (spread
    /// over instances) to the budget.
    pub async fn admit_work(&self, tenant: &str, user: &str, received_ms: i64, reserve: usize) -> Result<Option<u64>, StoreError> {
        let Some(work) = &self.work else { return Ok(None) };
        let key = Self::work_key(tenant, user);
        let now = charge_time(received_ms, now_millis());
        if let Some(until) = self.remembered(&key, now) {
            return Ok(Some(until - now));
        }
        match self.store.budgets.spend_units(&key, work, now, reserve as u64).await? {
            Decision::Allow { .. } => Ok(None),
            Decision::Deny { retry_after_ms } => {
                let retry_after_ms = retry_after_ms.max(1);
                self.remember(&key, now + retry_after_ms, now);
                Ok(Some(retry_after_ms))
            }
        }
    }

    /// Admits a client frame that makes Herald post or write in bulk on its user's work budget,
    /// before anything is done: an ack reserves its ids, a publish one unit (a join is charged
    /// by `Joins`, which alone knows whether it announces presence; a resume by the resumer,
    /// once its page is read and its posts are known: [`Limiter::charge_work`]).
    /// `Ok(Ok(reserved))`: go ahead, then [`Limiter::settle_frame`] at what it cost;
    /// `Ok(Err(frame))`: refused, answer `frame` and do nothing.
    pub async fn admit_frame_work(
        &self,
        function: &'static str,
        tenant: &str,
        user: &str,
        received_ms: i64,
        frame: &ClientFrame,
    ) -> Result<Result<usize, ErrorFrame>, StoreError> {
        let reserved = match frame {
            // Refused from memory while a refusal lasts, so a flood of resumes reads nothing.
            ClientFrame::Resume { .. } => {
                let now = charge_time(received_ms, now_millis());
                return Ok(match self.work.and(self.remembered(&Self::work_key(tenant, user), now)) {
                    Some(until) => Err(self.work_limited(function, until - now, frame.reference().cloned())),
                    None => Ok(0),
                });
            }
            ClientFrame::Ack { ids, .. } => ids.len(),
            ClientFrame::Publish(_) => 1,
            _ => 0,
        };
        if reserved > 0
            && let Some(ms) = self.admit_work(tenant, user, received_ms, reserved).await?
        {
            return Ok(Err(self.work_limited(function, ms, frame.reference().cloned())));
        }
        Ok(Ok(reserved))
    }

    /// Charges `posts` a frame is about to make, known before any is made (a resume's page,
    /// once read): the exact cost up front, so nothing is settled afterwards, and a page with
    /// nothing to send costs no write at all. `Ok(Err(frame))`: refused, post nothing.
    pub async fn charge_work(
        &self,
        function: &'static str,
        tenant: &str,
        user: &str,
        received_ms: i64,
        posts: usize,
        reference: Option<Value>,
    ) -> Result<Result<(), ErrorFrame>, StoreError> {
        if posts == 0 {
            return Ok(Ok(()));
        }
        Ok(match self.admit_work(tenant, user, received_ms, posts).await? {
            Some(ms) => Err(self.work_limited(function, ms, reference)),
            None => Ok(()),
        })
    }

    fn work_limited(&self, function: &'static str, retry_after_ms: u64, reference: Option<Value>) -> ErrorFrame {
        Metrics::new(function).count("WorkLimited", 1).flush();
        ErrorFrame::rate_limited(retry_after_ms, reference)
    }

    /// Settles a frame's reservation once done, only when the cost differs from it: one write
    /// less for most frames.
    pub async fn settle_frame(&self, tenant: &str, user: &str, reserved: usize, used: usize) -> Result<(), StoreError> {
        if reserved > 0 && used != reserved {
            self.settle_work(tenant, user, reserved, used).await?;
        }
        Ok(())
    }

    /// Settles a reservation once the work is done: `used` posts instead of `reserved`.
    pub async fn settle_work(&self, tenant: &str, user: &str, reserved: usize, used: usize) -> Result<(), StoreError> {
        let Some(work) = &self.work else { return Ok(()) };
        let units = used as i64 - reserved as i64;
        self.store.budgets.adjust(&Self::work_key(tenant, user), work, units).await
    }

    /// The key of a WebSocket connection's frame budget.
    pub fn connection_key(connection_id: &str) -> String {
        format!("ws#{connection_id}")
    }

    /// The key of a user's connect budget.
    pub fn connect_key(tenant: &str, user: &str) -> String {
        format!("connect#{tenant}#{user}")
    }

    /// The key of an HTTP caller's request budget.
    pub fn caller_key(tenant: &str, user: &str) -> String {
        format!("http#{tenant}#{user}")
    }

    /// `Ok(None)` when the unit is served, `Ok(Some(ms))` when it is refused for `ms`.
    /// `received_ms`: when API Gateway received it (0 or absent: now).
    pub async fn check(&self, key: &str, received_ms: i64) -> Result<Option<u64>, StoreError> {
        let Some(budget) = &self.budget else { return Ok(None) };
        let now = charge_time(received_ms, now_millis());
        if let Some(until) = self.remembered(key, now) {
            return Ok(Some(until - now));
        }
        match self.store.budgets.spend(key, budget, now).await? {
            Decision::Allow { .. } => Ok(None),
            Decision::Deny { retry_after_ms } => {
                let retry_after_ms = retry_after_ms.max(1);
                self.remember(key, now + retry_after_ms, now);
                Ok(Some(retry_after_ms))
            }
        }
    }

    /// Parses a client frame and spends one unit of its connection's budget, a malformed frame
    /// too (it cost an invocation). `Ok(Err(frame))`: the error frame to answer, and nothing
    /// else to do — the frame was malformed, or over budget (then otherwise ignored). `function`
    /// names the metric's function.
    pub async fn admit_frame(
        &self,
        function: &'static str,
        connection_id: &str,
        received_ms: i64,
        body: &str,
    ) -> Result<Result<ClientFrame, ErrorFrame>, StoreError> {
        let parsed = frames::parse(body);
        match self.check(&Self::connection_key(connection_id), received_ms).await? {
            None => Ok(parsed),
            Some(ms) => {
                tracing::debug!(connection = %connection_id, retry_after_ms = ms, "frame refused: over budget");
                Metrics::new(function).count("RateLimited", 1).flush();
                let reference = match &parsed {
                    Ok(f) => f.reference().cloned(),
                    Err(e) => e.reference.clone(),
                };
                Ok(Err(ErrorFrame::rate_limited(ms, reference)))
            }
        }
    }

    fn remembered(&self, key: &str, now: u64) -> Option<u64> {
        let map = self.refused_until.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        map.get(key).copied().filter(|until| *until > now)
    }

    fn remember(&self, key: &str, until: u64, now: u64) {
        let mut map = self.refused_until.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if map.len() >= REMEMBERED {
            map.retain(|_, u| *u > now);
            if map.len() >= REMEMBERED {
                map.clear();
            }
        }
        map.insert(key.to_owned(), until);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_are_charged_at_the_receive_time_unless_it_is_implausible() {
        let clock = 1_795_900_000_000;
        assert_eq!(charge_time(clock as i64 - 2_000, clock), clock - 2_000, "queued two seconds");
        assert_eq!(charge_time(0, clock), clock, "no receive time");
        assert_eq!(charge_time(-5, clock), clock);
        assert_eq!(charge_time(1_795_428_000_123, clock), clock, "a days-old test event");
        assert_eq!(charge_time(clock as i64 + 120_000, clock), clock, "from the future");
    }
}
