//! Replay: reading the log for `resume` and `missed`, one home for both.
//!
//! - this module: where a read starts and what it answers ([`ReadPlan`], [`PageToken`]: the
//!   horizon rule for readers), and merging several topics' logs into one page;
//! - [`spare`]: which entries the client already holds, so they are not sent again;
//! - [`service`]: the read itself ([`Replay`]), store in, entries and resume point out;
//! - [`resume`]: `resume` over a connection ([`Resumer`]): the read, the replayed posts, the answer.
//!
//! Merging several topics' logs into one cursor-ordered page:
//! Each topic is read in cursor order, one page at a time. Entries from all topics can only be
//! emitted up to the smallest "last position read" among topics that have more to read: anything
//! beyond it might be preceded by an unread entry of that topic. That bound keeps the merged
//! stream in cursor order without reading every topic to the end. The position read counts
//! expired entries too (they are skipped, not unread), so a page of nothing but expired entries
//! still moves the cursor forward instead of stalling or skipping what follows.

pub mod resume;
pub mod service;
pub mod spare;

pub use resume::{RESUME_PAGE, ResumeError, ResumeFrom, Resumer};
pub use service::{Read, ReadRequest, Replay, Unread};

use crate::domain::cursor::{Cursor, CursorError};

use crate::domain::horizon::{Horizon, LAG_MS, SKEW_MS};
use crate::domain::notification::LogEntry;
use crate::io::store::LogPage;

/// Where a read of the log (`resume`, `missed`) starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    /// No cursor: everything the retention window still holds.
    Beginning,
    /// A cursor the client holds: any cursor Herald handed out, live or replayed.
    Since(Cursor),
    /// The `next` of the previous page of this read.
    Page(PageToken),
}

/// Who continues a paged read: a page token continues only the read it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reader {
    /// A WebSocket connection (a hash of its id: the token does not carry the id itself).
    Connection(u32),
    /// An HTTP poller, at this clock (epoch ms).
    Poller(u64),
}

impl Reader {
    pub fn connection(id: &str) -> Self {
        // FNV-1a: a tag to tell connections apart, not a secret.
        let hash = id
            .bytes()
            .fold(0x811c_9dc5_u32, |h, b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193));
        Self::Connection(hash)
    }
}

/// `next`: where the following page of a read continues (`position`, read past exactly), the
/// resume point reached so far (`safe`) and when the read's first page began (`began`, epoch
/// ms). Distinct from a cursor: `position` may be past the horizon, and is only trusted by the
/// read it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageToken {
    pub position: Cursor,
    pub safe: Cursor,
    pub reader: Reader,
    pub began: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a page token")]
pub struct PageTokenError;

impl From<CursorError> for PageTokenError {
    fn from(_: CursorError) -> Self {
        PageTokenError
    }
}

const TOKEN_PREFIX: &str = "p2.";

impl PageToken {
    pub fn encode(&self) -> String {
        let reader = match self.reader {
            Reader::Connection(h) => format!("c{h:08x}"),
            Reader::Poller(ms) => format!("t{ms}"),
        };
        format!("{TOKEN_PREFIX}{}.{}.{reader}.{}", self.position, self.safe, self.began)
    }

    pub fn is_token(s: &str) -> bool {
        s.starts_with(TOKEN_PREFIX)
    }

    pub fn decode(s: &str) -> Result<Self, PageTokenError> {
        let rest = s.strip_prefix(TOKEN_PREFIX).ok_or(PageTokenError)?;
        let mut parts = rest.split('.');
        let (Some(position), Some(safe), Some(reader), Some(began), None) =
            (parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(PageTokenError);
        };
        if began.is_empty() || began.len() > 16 {
            return Err(PageTokenError);
        }
        let reader = match reader.split_at_checked(1) {
            Some(("c", h)) if h.len() == 8 => Reader::Connection(u32::from_str_radix(h, 16).map_err(|_| PageTokenError)?),
            Some(("t", ms)) if !ms.is_empty() && ms.len() <= 16 => Reader::Poller(ms.parse().map_err(|_| PageTokenError)?),
            _ => return Err(PageTokenError),
        };
        Ok(Self {
            position: position.parse()?,
            safe: safe.parse()?,
            reader,
            began: began.parse().map_err(|_| PageTokenError)?,
        })
    }
}

impl Start {
    /// `since` and `page` as a client sent them (`page` wins; a page token passed as `since`, as
    /// clients that treat `next` as a cursor do, counts as `page`).
    pub fn parse(since: Option<&str>, page: Option<&str>) -> Result<Self, StartError> {
        // `since` is checked even beside a `page`: a malformed one is refused, never ignored.
        let since = match since.filter(|s| !s.is_empty()) {
            None => Start::Beginning,
            Some(s) if PageToken::is_token(s) => PageToken::decode(s).map(Start::Page).map_err(|_| StartError::Since)?,
            Some(s) => s.parse().map(Start::Since).map_err(|_| StartError::Since)?,
        };
        match page.filter(|p| !p.is_empty()) {
            Some(p) => PageToken::decode(p).map(Start::Page).map_err(|_| StartError::Page),
            None => Ok(since),
        }
    }
}

/// A `since` or `page` that is neither a cursor nor a page token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StartError {
    #[error("since is not a valid cursor")]
    Since,
    #[error("page is not a valid page token")]
    Page,
}

/// How one page of a read is read and answered: the horizon rule for `resume` and `missed`.
///
/// A cursor is read from `LAG` before it ([`Horizon::reread_from`]), so any cursor the client
/// holds is a safe `since`. The resume point handed back never passes the horizon of a read
/// that covered it: a page token carries the point reached so far, and a read that continued
/// past an unsafe position (entries read past the horizon) does not move it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadPlan {
    /// Read entries strictly after this.
    pub from: Cursor,
    /// The cursor the client holds, when the read starts a lag before it: entries up to it may
    /// be with the client already ([`held`]).
    pub since: Option<Cursor>,
    /// The resume point so far: never taken back.
    safe: Cursor,
    /// Whether everything up to `from` was read while visible, so the point may move on.
    advance: bool,
    /// `since` is older than the retention window: entries may have expired unseen.
    pub gap: bool,
    reader: Reader,
    horizon: Horizon,
    /// The clock when the read's first page began (epoch ms).
    began: u64,
}

/// What a page answers besides its entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageAnswer {
    /// The resume point.
    pub cursor: Cursor,
    /// The page token for the rest, while there is more.
    pub next: Option<String>,
    pub gap: bool,
}

impl ReadPlan {
    /// `floor`: the oldest cursor the retention window keeps; `now_ms`: the clock (a poller's
    /// page token older than the lag counts as a cursor, since what it skipped may have landed).
    pub fn new(start: Start, reader: Reader, floor: Cursor, now_ms: u64) -> Self {
        let horizon = Horizon::default();
        let since = |c: Cursor| Self {
            from: horizon.reread_from(c).max(floor),
            since: Some(c),
            safe: c,
            advance: true,
            gap: c < floor,
            reader,
            horizon,
            began: now_ms,
        };
        match start {
            Start::Beginning => Self {
                from: floor,
                since: None,
                safe: Cursor::MIN,
                advance: true,
                gap: false,
                reader,
                horizon,
                began: now_ms,
            },
            Start::Since(c) => since(c),
            Start::Page(t) if continues(t.reader, reader, now_ms) => Self {
                from: t.position.max(floor),
                since: None,
                safe: t.safe,
                advance: t.position <= t.safe,
                gap: t.position < floor,
                reader,
                horizon,
                // A token is the client's to forge: one from the future buys nothing.
                began: t.began.min(now_ms),
            },
            // Another connection's token, or a stale one: what its position skipped may have
            // landed since, so only its resume point counts.
            Start::Page(t) => since(t.safe),
        }
    }

    /// Whether an entry this read returns may go out with its cursor.
    ///
    /// A read queries its topics one after another, so it can find an entry `c` (its topic
    /// queried late) and miss an older entry `e` of another topic (queried before `e` was
    /// visible). Handed `c`, the client would hold a resume point past `e`, and `spare`'s rule 2
    /// spares `e` on the next read when `e`'s fan-out completed before `c` was claimed, though the
    /// client's socket may have missed that fan-out (gone, or taking the frame as it dropped).
    /// So a read shows only cursors claimed more than [`SKEW_MS`] before it began: rule 2 then
    /// puts `e`'s fan-out, and so its log write, before the read began, and the read found `e`.
    /// A paged read began with its first page: a later page continues from where an earlier
    /// one stopped, and that position may already be past an `e` that was not visible then.
    /// Newer entries go out without a cursor (as live frames before the catch-up do); the
    /// client's next read, from a cursor it does hold, returns them again with theirs.
    pub fn shows_cursor(&self, cursor: Cursor) -> bool {
        cursor.millis() + SKEW_MS <= self.began
    }

    /// The answer of a page that read up to `reached` (everything up to it emitted, or held by
    /// the client), in a read that began at `read_at_ms`.
    pub fn answer(&self, reached: Cursor, more: bool, read_at_ms: u64) -> PageAnswer {
        let reached = reached.max(self.from);
        let cursor = if self.advance {
            self.horizon.cap(self.safe, reached, read_at_ms)
        } else {
            self.safe
        };
        let next = more.then(|| {
            PageToken {
                position: reached,
                safe: cursor,
                reader: match self.reader {
                    Reader::Poller(_) => Reader::Poller(read_at_ms),
                    r => r,
                },
                began: self.began,
            }
            .encode()
        });
        PageAnswer {
            cursor,
            next,
            gap: self.gap,
        }
    }
}

fn continues(issued_by: Reader, reader: Reader, now_ms: u64) -> bool {
    match (issued_by, reader) {
        (Reader::Connection(a), Reader::Connection(b)) => a == b,
        (Reader::Poller(issued), Reader::Poller(_)) => now_ms.saturating_sub(issued) < LAG_MS,
        _ => false,
    }
}

#[derive(Debug, Default, PartialEq)]
pub struct ReplayPage {
    pub entries: Vec<LogEntry>,
    /// Where to continue from: everything up to it was emitted (or had expired).
    pub cursor: Cursor,
    pub more: bool,
}

/// Merges one page per topic, emitting at most `limit` entries; of several entries of one
/// `collapse` key of one topic, only the latest (see [`latest_only`]).
pub fn merge_pages(since: Cursor, pages: Vec<LogPage>, limit: usize) -> ReplayPage {
    let mut page = merge_all(since, pages, limit);
    page.entries = latest_only(std::mem::take(&mut page.entries));
    page
}

/// Drops every entry that a later entry of the same topic and `collapse` key supersedes. The
/// log keeps one entry per key, but a reader can catch the moment between the newer write and
/// the older entry's removal. The last entry is always kept, so a page's cursor never changes.
pub fn latest_only(entries: Vec<LogEntry>) -> Vec<LogEntry> {
    let mut seen = std::collections::HashSet::new();
    let mut kept: Vec<LogEntry> = entries
        .into_iter()
        .rev()
        .filter(|e| match &e.content.collapse {
            Some(key) => seen.insert((e.topic.clone(), key.clone())),
            None => true,
        })
        .collect();
    kept.reverse();
    kept
}

fn merge_all(since: Cursor, pages: Vec<LogPage>, limit: usize) -> ReplayPage {
    let bound = pages.iter().filter(|p| p.more).map(|p| p.last_read.unwrap_or(since)).min();
    let mut all: Vec<LogEntry> = pages.into_iter().flat_map(|p| p.entries).collect();
    all.sort_by_key(|e| e.cursor);
    let mut entries: Vec<LogEntry> = all.into_iter().filter(|e| bound.is_none_or(|b| e.cursor <= b)).collect();
    if entries.len() > limit {
        entries.truncate(limit);
        let cursor = entries.last().map(|e| e.cursor).unwrap_or(since);
        return ReplayPage {
            entries,
            cursor,
            more: true,
        };
    }
    match bound {
        // Everything up to the bound is in this page: continue from the bound.
        Some(b) => ReplayPage {
            cursor: b.max(since),
            entries,
            more: true,
        },
        None => ReplayPage {
            cursor: entries.last().map(|e| e.cursor).unwrap_or(since),
            entries,
            more: false,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::notification::Content;

    const T: u64 = 1_800_000_000_000;

    #[test]
    fn page_tokens_round_trip_and_refuse_garbage() {
        for reader in [Reader::connection("abc="), Reader::Poller(T)] {
            let t = PageToken {
                position: Cursor::from_parts(T, 9),
                safe: Cursor::from_parts(T - 20_000, 0),
                reader,
                began: T - 1_000,
            };
            assert_eq!(PageToken::decode(&t.encode()), Ok(t));
        }
        for bad in [
            "",
            "p2.",
            "p2.x.y.c00000000.1",
            "p2.01M94V732ZCQKGB1B3F50QXQW8.01M94V732ZCQKGB1B3F50QXQW8.z1.1",
            "p2.01M94V732ZCQKGB1B3F50QXQW8.01M94V732ZCQKGB1B3F50QXQW8.c00000000",
            "p2.01M94V732ZCQKGB1B3F50QXQW8.01M94V732ZCQKGB1B3F50QXQW8.c00000000.",
            "p2.01M94V732ZCQKGB1B3F50QXQW8.01M94V732ZCQKGB1B3F50QXQW8.c00000000.x",
            "01M94V732ZCQKGB1B3F50QXQW8",
        ] {
            assert_eq!(PageToken::decode(bad), Err(PageTokenError), "{bad}");
        }
        assert_eq!(Start::parse(Some("nope"), None), Err(StartError::Since));
        assert_eq!(Start::parse(None, Some("nope")), Err(StartError::Page));
        assert_eq!(Start::parse(Some(""), None), Ok(Start::Beginning));
        // A malformed `since` is refused even beside a valid `page`.
        let page = PageToken {
            position: Cursor::from_parts(T, 1),
            safe: Cursor::from_parts(T, 1),
            reader: Reader::Poller(T),
            began: T,
        }
        .encode();
        assert_eq!(Start::parse(Some("nope"), Some(&page)), Err(StartError::Since));
        assert!(matches!(
            Start::parse(Some("01M94V732ZCQKGB1B3F50QXQW8"), Some(&page)),
            Ok(Start::Page(_))
        ));
    }

    #[test]
    fn a_cursor_is_read_from_the_lag_before_it_and_never_handed_back_older() {
        let c = Cursor::from_parts(T - 1_000, 5);
        let plan = ReadPlan::new(Start::Since(c), Reader::connection("k"), Cursor::MIN, T);
        assert_eq!(plan.from, Cursor::at_millis(T - 1_000 - LAG_MS));
        // Nothing new: the client keeps the cursor it had, not the earlier read position.
        let a = plan.answer(plan.from, false, T);
        assert_eq!((a.cursor, a.next, a.gap), (c, None, false));
    }

    /// Defect 2 of "any cursor is a safe resume point": paging on with `next` handed out a
    /// resume point past the horizon of the read that produced it.
    #[test]
    fn no_page_hands_out_a_resume_point_past_its_horizon() {
        let reader = Reader::connection("k");
        let since = Cursor::from_parts(T - 60_000, 1);
        let plan = ReadPlan::new(Start::Since(since), reader, Cursor::MIN, T);
        // Page 1 reads entries up to a second ago: past the horizon.
        let fresh = Cursor::from_parts(T - 1_000, 1);
        let first = plan.answer(fresh, true, T);
        let horizon = Cursor::at_millis(T - LAG_MS);
        assert!(first.cursor <= horizon);
        let token = PageToken::decode(first.next.as_deref().unwrap()).unwrap();
        assert_eq!(token.position, fresh);
        // Page 2 (as `page`, or as `since` by a client that treats `next` as a cursor), a moment
        // later: reads on from the exact position, and still hands out no point past page 1's
        // horizon, since entries behind `fresh` may land late.
        for start in [Start::parse(None, first.next.as_deref()), Start::parse(first.next.as_deref(), None)] {
            let plan = ReadPlan::new(start.unwrap(), reader, Cursor::MIN, T + 50);
            assert_eq!(plan.from, fresh);
            let second = plan.answer(Cursor::from_parts(T, 1), false, T + 50);
            assert_eq!(second.cursor, first.cursor, "page 2 must not move the point past page 1's horizon");
        }
        // The same token on another connection (the client dropped) reads from its resume point.
        let other = ReadPlan::new(Start::Page(token), Reader::connection("k2"), Cursor::MIN, T + 50);
        assert_eq!(other.from, Cursor::at_millis(first.cursor.millis() - LAG_MS));
    }

    /// Issue #35 (seeds 41 and 50): a read handed out the cursor of an entry claimed after the
    /// read began, while an older entry of a topic it had already queried was not yet visible.
    #[test]
    fn a_read_shows_only_cursors_claimed_before_it_began() {
        for start in [Start::Beginning, Start::Since(Cursor::from_parts(T - 60_000, 0))] {
            let plan = ReadPlan::new(start, Reader::Poller(T), Cursor::MIN, T);
            assert!(plan.shows_cursor(Cursor::from_parts(T - 30_000, 7)));
            assert!(plan.shows_cursor(Cursor::from_parts(T - SKEW_MS, 7)));
            assert!(!plan.shows_cursor(Cursor::from_parts(T - SKEW_MS + 1, 0)));
            assert!(!plan.shows_cursor(Cursor::from_parts(T + 5_000, 0)), "a writer's clock ahead");
        }
    }

    /// Chaos seed 51: page 1 of a read passed the position of an entry not yet visible, and
    /// page 2 handed out the cursor of an entry claimed after page 1 began but before page 2.
    #[test]
    fn a_later_page_shows_only_cursors_claimed_before_the_first_page_began() {
        for reader in [Reader::connection("k"), Reader::Poller(T)] {
            let first = ReadPlan::new(Start::Beginning, reader, Cursor::MIN, T);
            let a = first.answer(Cursor::from_parts(T - 100, 0), true, T);
            let later = T + 2_000;
            let second = ReadPlan::new(Start::parse(None, a.next.as_deref()).unwrap(), reader, Cursor::MIN, later);
            assert!(second.shows_cursor(Cursor::from_parts(T - SKEW_MS, 0)));
            assert!(!second.shows_cursor(Cursor::from_parts(T + 500, 0)), "claimed after page 1 began");
            // Another reader's token starts a read of its own, now.
            let other = ReadPlan::new(
                Start::parse(None, a.next.as_deref()).unwrap(),
                Reader::connection("x"),
                Cursor::MIN,
                later,
            );
            assert!(other.shows_cursor(Cursor::from_parts(T + 500, 0)));
        }
    }

    #[test]
    fn a_poller_token_older_than_the_lag_counts_as_its_resume_point() {
        let plan = ReadPlan::new(Start::Since(Cursor::from_parts(T - 60_000, 0)), Reader::Poller(T), Cursor::MIN, T);
        let a = plan.answer(Cursor::from_parts(T - 30_000, 0), true, T);
        let token = PageToken::decode(a.next.as_deref().unwrap()).unwrap();
        let prompt = ReadPlan::new(Start::Page(token), Reader::Poller(T + 100), Cursor::MIN, T + 100);
        assert_eq!(prompt.from, token.position);
        let stale = ReadPlan::new(Start::Page(token), Reader::Poller(T + LAG_MS), Cursor::MIN, T + LAG_MS);
        assert_eq!(stale.from, Cursor::at_millis(token.safe.millis() - LAG_MS));
    }

    #[test]
    fn a_since_older_than_retention_is_a_gap() {
        let floor = Cursor::at_millis(T - 3_600_000);
        let old = ReadPlan::new(Start::Since(Cursor::from_parts(T - 7_200_000, 0)), Reader::Poller(T), floor, T);
        assert!(old.gap);
        assert_eq!(old.from, floor);
        assert!(old.answer(floor, false, T).gap);
        let recent = ReadPlan::new(Start::Since(Cursor::from_parts(T - 60_000, 0)), Reader::Poller(T), floor, T);
        assert!(!recent.gap);
        assert!(!ReadPlan::new(Start::Beginning, Reader::Poller(T), floor, T).gap);
    }

    fn entry(topic: &str, millis: u64) -> LogEntry {
        LogEntry {
            id: format!("{topic}-{millis}"),
            cursor: Cursor::from_parts(millis, 0),
            topic: topic.into(),
            content: Content {
                event: "e".into(),
                ..Default::default()
            },
            created_at: String::new(),
        }
    }

    #[test]
    fn only_the_latest_of_a_collapse_key_is_replayed() {
        let keyed = |topic: &str, millis: u64, key: &str| {
            let mut e = entry(topic, millis);
            e.content.collapse = Some(key.into());
            e
        };
        let page = LogPage {
            entries: vec![
                keyed("job:1", 1, "progress"),
                entry("job:1", 2),
                keyed("job:1", 3, "progress"),
                keyed("job:2", 4, "progress"),
            ],
            more: false,
            last_read: Some(Cursor::from_parts(4, 0)),
        };
        let merged = merge_pages(Cursor::MIN, vec![page], 10);
        let ids: Vec<&str> = merged.entries.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids, vec!["job:1-2", "job:1-3", "job:2-4"]);
        assert_eq!(merged.cursor, Cursor::from_parts(4, 0));
    }

    fn page(topic: &str, at: &[u64], more: bool) -> LogPage {
        let entries: Vec<LogEntry> = at.iter().map(|m| entry(topic, *m)).collect();
        LogPage {
            last_read: entries.last().map(|e| e.cursor),
            entries,
            more,
        }
    }

    fn ids(p: &ReplayPage) -> Vec<String> {
        p.entries.iter().map(|e| e.id.clone()).collect()
    }

    #[test]
    fn merges_in_cursor_order() {
        let p = merge_pages(Cursor::MIN, vec![page("a", &[1, 4], false), page("b", &[2, 3], false)], 10);
        assert_eq!(ids(&p), ["a-1", "b-2", "b-3", "a-4"]);
        assert!(!p.more);
        assert_eq!(p.cursor, Cursor::from_parts(4, 0));
    }

    #[test]
    fn holds_back_entries_past_an_unfinished_topic() {
        // Topic a has more after 2, so b's 5 may not be emitted yet: a's next entry could be 3.
        let p = merge_pages(Cursor::MIN, vec![page("a", &[1, 2], true), page("b", &[5], false)], 10);
        assert_eq!(ids(&p), ["a-1", "a-2"]);
        assert!(p.more);
        assert_eq!(p.cursor, Cursor::from_parts(2, 0));
    }

    #[test]
    fn expired_entries_move_the_cursor_without_skipping_what_follows() {
        // Topic a read up to 7, but everything it read had expired; b has 5 and 9.
        let a = LogPage {
            entries: vec![],
            more: true,
            last_read: Some(Cursor::from_parts(7, 0)),
        };
        let p = merge_pages(Cursor::MIN, vec![a, page("b", &[5, 9], false)], 10);
        assert_eq!(ids(&p), ["b-5"], "9 waits: a may hold unread entries before it");
        assert_eq!(
            (p.cursor, p.more),
            (Cursor::from_parts(7, 0), true),
            "progress past the expired run"
        );
        // The next page continues from 7: a's remaining entries and b's 9 merge in order.
        let p = merge_pages(p.cursor, vec![page("a", &[8], false), page("b", &[9], false)], 10);
        assert_eq!(ids(&p), ["a-8", "b-9"]);
        assert!(!p.more);
    }

    #[test]
    fn limit_cuts_and_reports_more() {
        let p = merge_pages(Cursor::MIN, vec![page("a", &[1, 2, 3], false)], 2);
        assert_eq!(ids(&p), ["a-1", "a-2"]);
        assert!(p.more);
    }

    #[test]
    fn nothing_new_keeps_the_cursor() {
        let since = Cursor::from_parts(9, 9);
        let p = merge_pages(since, vec![page("a", &[], false)], 10);
        assert_eq!(
            p,
            ReplayPage {
                entries: vec![],
                cursor: since,
                more: false
            }
        );
    }
}
