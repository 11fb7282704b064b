//! Merging several topics' logs into one cursor-ordered page (`resume` and `missed`).
//!
//! Each topic is read in cursor order, one page at a time. Entries from all topics can only be
//! emitted up to the smallest "last position read" among topics that have more to read: anything
//! beyond it might be preceded by an unread entry of that topic. That bound keeps the merged
//! stream in cursor order without reading every topic to the end. The position read counts
//! expired entries too (they are skipped, not unread), so a page of nothing but expired entries
//! still moves the cursor forward instead of stalling or skipping what follows.

use crate::cursor::Cursor;
use crate::notification::LogEntry;
use crate::store::LogPage;

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

/// Reads one page of every topic after `since` and merges them.
pub async fn read_merged(
    store: &crate::store::Store,
    tenant: &str,
    reader: &str,
    topics: &[crate::groups::Group],
    since: Cursor,
    limit: usize,
) -> Result<ReplayPage, crate::store::StoreError> {
    use futures_util::StreamExt;
    // Entries older than the retention window may linger until TTL removes them; never replay
    // them, so behaviour does not depend on when DynamoDB's TTL sweeper ran.
    let pages: Vec<Result<LogPage, _>> = futures_util::stream::iter(topics.iter().cloned())
        .map(|t| async move { store.log.after(tenant, &t, reader, since, limit + 1).await })
        .buffered(16)
        .collect()
        .await;
    let pages = pages.into_iter().collect::<Result<Vec<_>, _>>()?;
    Ok(merge_pages(since, pages, limit))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notification::Content;

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
