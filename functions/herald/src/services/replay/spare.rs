//! Which entries of a read the client already holds, so the read passes them without sending
//! them again. A read starts a lag before the client's cursor ([`crate::domain::horizon`]), so without
//! this every resume would send the lag's worth again, and so would everything a fan-out posted
//! to the connection while it re-joined and resumed.
//!
//! An entry is held when any of these shows it:
//! 1. **`have`**: the client listed its id.
//! 2. **The cursor**: it is the entry whose frame carried `since`, or one up to `since` whose
//!    fan-out had posted to every member connection (or closed it) before `since` was claimed.
//!    Whoever received the frame with cursor `since` on a connection received it after those
//!    posts: that connection took the entry (a closed one received nothing after), or it joined
//!    later and its own catch-up covered the entry.
//! 3. **Posted live to this connection**: its fan-out is complete (every member connection took
//!    the frame or was closed, nothing left to shard jobs or the retry queue), this connection
//!    is not one that answered 410 inside its `$connect` (the completion time lists those: they
//!    may have opened without the frame), and its cursor is
//!    newer than the moment the connection's membership row for its topic became visible (by
//!    more than the clock skew). The cursor is taken before the entry is logged, and the fan-out
//!    reads the group's rows (strongly consistent) only after the log write: so that read found
//!    this connection, and the frame was posted to it — or the connection was closed, and then
//!    this read's answer cannot reach the client either. The client's own publishes are not
//!    spared this way (a publish without `echo` skips the publishing connection).
//!
//! Rule 2 also holds for a cursor a `missed` read or a replay handed out, though such a read
//! queries its topics one by one and the client's socket may have missed the frame: the read
//! hands out only cursors claimed before it began ([`super::ReadPlan::shows_cursor`]), so an
//! entry whose fan-out completed before such a cursor was visible to that read, which sent it.
//! A connection listed as missing the frame inside its `$connect` matters to rule 3 only: a
//! connection that took a live cursor had caught up, so a 410 after that was a dead socket.
//! Fan-outs that record no completion time (shard jobs, retries, more connections inside their
//! `$connect` than a completion time lists) are sent again: resending is the safe side.

use std::collections::{HashMap, HashSet};

use crate::domain::cursor::Cursor;
use crate::domain::horizon::SKEW_MS;
use crate::domain::notification::LogEntry;
use crate::io::store::Posted;

/// What a reader is known to hold, before the claims are read.
#[derive(Debug, Clone, Default)]
pub struct Holdings<'a> {
    /// Ids the client listed.
    pub have: HashSet<&'a str>,
    /// The cursor the read started a lag before.
    pub since: Option<Cursor>,
    /// Per topic the reader is a member of on this connection: since when (epoch ms) fan-outs
    /// find it. Empty for readers without a connection (`missed`).
    pub visible_since: HashMap<&'a str, u64>,
    /// The reader's user id: their own publishes are never spared by (3).
    pub user: &'a str,
    /// The reader's connection (empty for `missed`).
    pub connection: &'a str,
}

impl Holdings<'_> {
    /// Held without reading anything more: listed in `have`, or the entry `since` names.
    pub fn known(&self, e: &LogEntry) -> bool {
        // An update or recall (#33) is a new state of an id the client may hold in an older
        // one: neither `have` nor the id's original fan-out says the client holds this one.
        let revised = e.content.version.is_some() || e.content.recalled;
        (!revised && self.have.contains(e.id.as_str())) || self.since == Some(e.cursor)
    }

    fn revised(e: &LogEntry) -> bool {
        e.content.version.is_some() || e.content.recalled
    }

    /// Whether a completion time would decide this entry, so its claim is worth reading.
    pub fn decided_by_posting(&self, e: &LogEntry) -> bool {
        !self.known(e) && !Self::revised(e) && (self.since.is_some_and(|s| e.cursor < s) || self.posted_live_if_complete(e))
    }

    /// Held, given when its fan-out completed (`None` when it recorded no time).
    pub fn holds(&self, e: &LogEntry, posted: Option<&Posted>) -> bool {
        if self.known(e) {
            return true;
        }
        if Self::revised(e) {
            return false;
        }
        let Some(posted) = posted else { return false };
        let before_since = self.since.is_some_and(|s| e.cursor < s && posted.at + SKEW_MS < s.millis());
        let missed_here = posted.missed_by.iter().any(|c| c == self.connection);
        before_since || (!missed_here && self.posted_live_if_complete(e))
    }

    /// Rule (3) but for the completion: the entry was logged after this connection's row for
    /// its topic was visible, and is not the reader's own publish.
    fn posted_live_if_complete(&self, e: &LogEntry) -> bool {
        let own = e.content.from.as_ref().is_some_and(|f| f.user == self.user);
        !own && self
            .visible_since
            .get(e.topic.as_str())
            .is_some_and(|since| e.cursor.millis() > since + SKEW_MS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::notification::{Content, Sender};

    fn entry(id: &str, topic: &str, millis: u64) -> LogEntry {
        LogEntry {
            id: id.into(),
            cursor: Cursor::at_millis(millis),
            topic: topic.into(),
            content: Content {
                event: "e".into(),
                ..Content::default()
            },
            created_at: String::new(),
        }
    }

    const JOINED: u64 = 1_000_000;

    /// A fan-out that completed at `ms`, every connection reached.
    fn complete_at(ms: u64) -> Posted {
        Posted {
            at: ms,
            missed_by: Vec::new(),
        }
    }

    fn connection() -> Holdings<'static> {
        Holdings {
            visible_since: HashMap::from([("course:1", JOINED)]),
            user: "u1",
            connection: "c1",
            ..Holdings::default()
        }
    }

    /// A connection that answered 410 inside its `$connect` may have opened without the frame:
    /// its own resume sends the entry (rule 3 does not hold it there), another connection's is
    /// spared it as before, and so is any reader holding a cursor claimed after the completion
    /// (rule 2 does not look at the list).
    #[test]
    fn a_connection_that_missed_the_frame_inside_its_connect_gets_it_from_its_resume() {
        let e = entry("a", "course:1", JOINED + 5_000);
        let missed = Posted {
            at: JOINED + 6_000,
            missed_by: vec!["c0".into(), "c1".into()],
        };
        assert!(!connection().holds(&e, Some(&missed)));
        let other = Holdings {
            connection: "c2",
            ..connection()
        };
        assert!(other.holds(&e, Some(&missed)));
        // A cursor claimed after the completion spares it on any connection (rule 2): whoever
        // holds that cursor got it live after the posts, or from a read that found the entry.
        let later_cursor = Holdings {
            since: Some(Cursor::at_millis(JOINED + 6_000 + SKEW_MS + 1)),
            ..connection()
        };
        assert!(later_cursor.holds(&entry("a", "course:0", JOINED + 5_000), Some(&missed)));
    }

    #[test]
    fn an_entry_logged_after_the_join_and_fully_posted_is_held() {
        let h = connection();
        let e = entry("a", "course:1", JOINED + SKEW_MS + 1);
        assert!(h.decided_by_posting(&e));
        assert!(h.holds(&e, Some(&complete_at(JOINED + 2_000))));
        // Not complete (shard jobs, retries): sent again.
        assert!(!h.holds(&e, None));
    }

    #[test]
    fn an_entry_logged_before_the_join_or_within_the_skew_is_sent() {
        let h = connection();
        for at in [JOINED - 5_000, JOINED, JOINED + SKEW_MS] {
            let e = entry("a", "course:1", at);
            assert!(!h.decided_by_posting(&e), "{at}");
            assert!(!h.holds(&e, Some(&complete_at(JOINED + 10_000))), "{at}");
        }
    }

    #[test]
    fn another_topic_or_a_reader_without_a_connection_is_not_spared_by_the_join() {
        let h = connection();
        let e = entry("a", "course:2", JOINED + 5_000);
        assert!(!h.holds(&e, Some(&complete_at(JOINED + 6_000))));
        let poller = Holdings {
            user: "u1",
            ..Holdings::default()
        };
        assert!(!poller.holds(&entry("a", "course:1", JOINED + 5_000), Some(&complete_at(JOINED + 6_000))));
    }

    #[test]
    fn the_readers_own_publish_is_sent_however_late() {
        let h = connection();
        let mut e = entry("a", "course:1", JOINED + 5_000);
        e.content.from = Some(Sender { user: "u1".into() });
        assert!(!h.holds(&e, Some(&complete_at(JOINED + 6_000))));
        e.content.from = Some(Sender { user: "u2".into() });
        assert!(h.holds(&e, Some(&complete_at(JOINED + 6_000))));
    }

    #[test]
    fn the_cursor_holds_what_was_posted_before_it_was_claimed() {
        let since = Cursor::at_millis(2_000_000);
        let h = Holdings {
            since: Some(since),
            user: "u1",
            ..Holdings::default()
        };
        let mut at_since = entry("s", "user:u1", 0);
        at_since.cursor = since;
        assert!(h.known(&at_since) && h.holds(&at_since, None));
        let older = entry("o", "user:u1", 2_000_000 - 3_000);
        assert!(h.decided_by_posting(&older));
        assert!(h.holds(&older, Some(&complete_at(2_000_000 - SKEW_MS - 1))));
        assert!(!h.holds(&older, Some(&complete_at(2_000_000 - SKEW_MS))));
        assert!(!h.holds(&older, None));
        // Newer than the cursor: only the join can spare it.
        assert!(!h.decided_by_posting(&entry("n", "user:u1", 2_000_100)));
    }

    #[test]
    fn listed_ids_are_held_without_a_claim() {
        let h = Holdings {
            have: HashSet::from(["x"]),
            user: "u1",
            ..Holdings::default()
        };
        let e = entry("x", "tenant", 5);
        assert!(h.known(&e) && !h.decided_by_posting(&e) && h.holds(&e, None));
    }
}
