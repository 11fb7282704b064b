//! The visibility horizon: how far a reader may be told it has read.
//!
//! A notification's cursor is taken when it is claimed, and its log entry becomes visible a
//! little later. Two dispatchers race: N1 claimed first (older cursor), N2 logged first. A reader
//! that reads the log between the two writes sees N2 and not N1; if it were handed N2's cursor as
//! its position, N1 would land behind that position and never be read (issue: "a reader can
//! skip a notification for good"). The same holds for live pushes, which arrive in any order.
//!
//! The rule, in two halves, each checked where it applies:
//!
//! * **Readers** (`resume`'s `resumed.cursor`, `missed`'s `cursor`) are never handed a position
//!   newer than `t - LAG`, `t` being the clock when their read began ([`Horizon::cap`]).
//!   Entries newer than that are still sent; they are sent again by the next read, and clients
//!   drop the copy by id.
//! * **Writers** (`dispatch`) make every entry visible before its cursor falls behind the
//!   horizon: a claim older than a quarter of the lag is logged under a fresh cursor
//!   ([`Horizon::write_cursor`]), and a write that returned too late is written again under a
//!   fresh cursor ([`Horizon::landed_in_time`]). A late copy left behind is a duplicate by id.
//!
//! Together: when a read that began at `t` hands out position `p`, `p <= t - LAG`, and every
//! entry with a cursor `c <= p` was visible by `c + LAG - MARGIN < t`, so it was there for that
//! read. Clocks of different Lambda hosts agree to milliseconds (NTP); the margin below
//! covers them and DynamoDB's eventually consistent reads.
//!
//! **Any cursor is a resume point.** Clients also resume from cursors no read handed out: the
//! last live frame's, `published.cursor`. Live frames arrive out of cursor order, so such a
//! cursor `c` can be ahead of an entry still on its way. Every post is made while its cursor is
//! young: the log write lands (and so the fan-out starts) by `cursor + LAG / 2` or is redone
//! under a fresh cursor ([`Horizon::landed_in_time`]), and a post that cannot be made is not
//! retried later but closes the connection (`delivery::post_or_close`), within the post and close
//! timeouts. So an entry a connection missed is never more than `LAG` older than a frame it
//! received after it (the write lands by `LAG / 2 - MARGIN`; a post, one more post and a close
//! take at most 2 s each), and a read from `c - LAG` ([`Horizon::reread_from`]) finds it. The price
//! is a re-read of at most `LAG` of entries per resume, which `have` (ids the client holds)
//! keeps from being posted again.
//!
//! **A live cursor is a resume point once the connection has caught up.** Before its first
//! complete resume, what the client missed while it had no connection may still be unread, and a
//! live cursor would pass it; such a connection's frames go out without their cursor
//! (`store::Connections::mark_caught_up`, `broadcast::variants`).

use crate::domain::cursor::{Cursor, now_millis};

/// How far behind the clock a reader's position trails.
pub const LAG_MS: u64 = 10_000;

/// What a writer keeps in hand against clock skew and replication lag.
pub const MARGIN_MS: u64 = 2_000;

/// How far the clocks of two Lambda hosts may disagree when one host's time is compared with a
/// cursor taken on another (NTP keeps them within milliseconds).
pub const SKEW_MS: u64 = 250;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Horizon {
    lag_ms: u64,
    margin_ms: u64,
}

impl Default for Horizon {
    fn default() -> Self {
        Self {
            lag_ms: LAG_MS,
            margin_ms: MARGIN_MS,
        }
    }
}

impl Horizon {
    /// The newest position a reader may be handed at `now_ms`.
    pub fn safe_at(&self, now_ms: u64) -> Cursor {
        Cursor::at_millis(now_ms.saturating_sub(self.lag_ms))
    }

    /// A reader started at `since` and read up to `reached`, in a read that began at `read_at_ms`:
    /// the position to hand out. Never before `since` (positions only move forward), never past
    /// the horizon of the read's start.
    pub fn cap(&self, since: Cursor, reached: Cursor, read_at_ms: u64) -> Cursor {
        since.max(reached.min(self.safe_at(read_at_ms)))
    }

    /// Where a read for a client that holds `since` starts: `LAG` before it (see "any cursor is a
    /// resume point" above).
    pub fn reread_from(&self, since: Cursor) -> Cursor {
        if since == Cursor::MIN {
            return since;
        }
        Cursor::at_millis(since.millis().saturating_sub(self.lag_ms))
    }

    /// The cursor to log a claimed notification under at `now_ms`: the claim's own while a
    /// write started now can still land in time, a fresh one otherwise (a takeover after a
    /// crash, a claim that waited on throttling).
    pub fn write_cursor(&self, claimed: Cursor, now_ms: u64) -> Cursor {
        if now_ms.saturating_sub(claimed.millis()) <= self.lag_ms / 4 {
            claimed
        } else {
            Cursor::now()
        }
    }

    /// Whether a write under `cursor` that returned at `now_ms` became visible before any reader
    /// could have been handed a position at or past `cursor`, early enough that its posts keep
    /// every cursor a resume point: by half the lag, so that posts, and the close of a connection
    /// that could not take one, are done within the lag.
    pub fn landed_in_time(&self, cursor: Cursor, now_ms: u64) -> bool {
        now_ms + self.margin_ms < cursor.millis() + self.lag_ms / 2
    }

    /// [`Self::landed_in_time`] against the clock.
    pub fn landed_now(&self, cursor: Cursor) -> bool {
        self.landed_in_time(cursor, now_millis())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: u64 = 1_800_000_000_000;

    #[test]
    fn readers_never_pass_the_horizon_nor_go_back() {
        let h = Horizon::default();
        let since = Cursor::from_parts(T - 60_000, 7);
        let newest = Cursor::from_parts(T - 1, 3);
        let capped = h.cap(since, newest, T);
        assert_eq!(capped, Cursor::at_millis(T - LAG_MS));
        // Everything read is older than the horizon: hand out what was read.
        let old = Cursor::from_parts(T - 30_000, 1);
        assert_eq!(h.cap(since, old, T), old);
        // A position given out earlier is never taken back.
        let recent_since = Cursor::from_parts(T - 5_000, 1);
        assert_eq!(h.cap(recent_since, newest, T), recent_since);
    }

    #[test]
    fn a_claim_too_old_to_land_in_time_gets_a_fresh_cursor() {
        let h = Horizon::default();
        let young = Cursor::from_parts(T - 1_000, 1);
        assert_eq!(h.write_cursor(young, T), young);
        let old = Cursor::from_parts(T - 3_000, 1);
        let fresh = h.write_cursor(old, T);
        assert_ne!(fresh, old);
        assert!(fresh.millis() >= now_millis() - 1_000);
    }

    #[test]
    fn a_write_is_in_time_only_with_the_margin_to_spare() {
        let h = Horizon::default();
        let c = Cursor::from_parts(T, 1);
        assert!(h.landed_in_time(c, T + 100));
        assert!(h.landed_in_time(c, T + LAG_MS / 2 - MARGIN_MS - 1));
        assert!(!h.landed_in_time(c, T + LAG_MS / 2 - MARGIN_MS));
        assert!(!h.landed_in_time(c, T + 60_000));
    }

    #[test]
    fn a_resume_reads_the_lag_before_the_cursor_it_is_given() {
        let h = Horizon::default();
        let c = Cursor::from_parts(T, 42);
        assert_eq!(h.reread_from(c), Cursor::at_millis(T - LAG_MS));
        assert_eq!(h.reread_from(Cursor::MIN), Cursor::MIN);
        assert_eq!(h.reread_from(Cursor::from_parts(5, 1)), Cursor::MIN);
    }

    /// The argument of the module comment, on one interleaving: N1 claimed first and logged
    /// late, N2 claimed later and logged at once; a reader reads between the two writes.
    #[test]
    fn the_reader_between_two_writes_is_not_handed_a_position_past_the_late_one() {
        let h = Horizon::default();
        let n1 = Cursor::from_parts(T, 1);
        let n2 = Cursor::from_parts(T + 50, 1);
        let read_at = T + 200; // sees n2 only
        let position = h.cap(Cursor::MIN, n2, read_at);
        // N1's write returns at T + 3 s: in time, so it is logged under n1...
        assert!(h.landed_in_time(n1, T + 2_500));
        // ...and the position handed out is still before it.
        assert!(position < n1);
        // A write that returns after the horizon could have passed it is redone fresh.
        assert!(!h.landed_in_time(n1, T + 9_000));
    }
}
