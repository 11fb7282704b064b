//! Merging several topics' logs into one cursor-ordered page (`resume` and `missed`).
//!
//! Each topic is read in cursor order, one page at a time. Entries from all topics can only be
//! emitted up to the smallest "last cursor read" among topics that have more to read: anything
//! beyond it might be preceded by an unread entry of that topic. That bound keeps the merged
//! stream in cursor order without reading every topic to the end.

use crate::cursor::Cursor;
use crate::notification::LogEntry;
use crate::store::LogPage;

#[derive(Debug, Default, PartialEq)]
pub struct ReplayPage {
    pub entries: Vec<LogEntry>,
    /// The cursor to continue from (the last entry emitted, or the starting cursor).
    pub cursor: Cursor,
    pub more: bool,
}

/// Merges one page per topic, emitting at most `limit` entries.
pub fn merge_pages(since: Cursor, pages: Vec<LogPage>, limit: usize) -> ReplayPage {
    let bound = pages
        .iter()
        .filter(|p| p.more)
        .filter_map(|p| p.entries.last().map(|e| e.cursor))
        .min();
    let truncated_without_entries = pages.iter().any(|p| p.more && p.entries.is_empty());
    let mut all: Vec<LogEntry> = pages.into_iter().flat_map(|p| p.entries).collect();
    all.sort_by_key(|e| e.cursor);
    let total = all.len();
    let mut entries: Vec<LogEntry> = all.into_iter().filter(|e| bound.is_none_or(|b| e.cursor <= b)).collect();
    let held_back = total - entries.len();
    let cut = entries.len() > limit;
    entries.truncate(limit);
    let cursor = entries.last().map(|e| e.cursor).unwrap_or(since);
    ReplayPage {
        more: cut || held_back > 0 || bound.is_some() || truncated_without_entries,
        cursor,
        entries,
    }
}

/// Reads one page of every topic after `since` and merges them.
pub async fn read_merged(
    store: &crate::store::Store,
    tenant: &str,
    topics: &[crate::groups::Group],
    since: Cursor,
    limit: usize,
) -> Result<ReplayPage, crate::store::StoreError> {
    use futures_util::StreamExt;
    // Entries older than the retention window may linger until TTL removes them; never replay
    // them, so behaviour does not depend on when DynamoDB's TTL sweeper ran.
    let pages: Vec<Result<LogPage, _>> = futures_util::stream::iter(topics.iter().cloned())
        .map(|t| async move { store.log.after(tenant, &t, since, limit + 1).await })
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

    fn page(topic: &str, at: &[u64], more: bool) -> LogPage {
        LogPage {
            entries: at.iter().map(|m| entry(topic, *m)).collect(),
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
