//! How a big audience is split into fan-out jobs so that the SQS → Lambda → SQS chain stays short.
//!
//! Lambda's recursive loop detection follows the trace header through SQS and stops a chain of
//! invocations after about 16 hops. A chain of page jobs — each job reads one page of a
//! membership shard and queues the next — is as long as a shard divided by the page size: a
//! 40,000-connection group with 500 a page over 4 shards is 20 hops, and the pages after the
//! 16th are never pushed. So a big audience is split by two kinds of job instead:
//! - a **walk** reads up to [`walk_budget`] connections of one shard (Query pages of
//!   [`WALK_QUERY_LIMIT`] rows), queues the next walk if the shard has more, queues a **post**
//!   job for every page of what it read but the first, and posts that first page itself;
//! - a post job posts to the connections it names, and queues nothing.
//!
//! Depth, for an audience of A connections over S shards: the notification's own invocation
//! (which posts each shard's first page and queues its first walk), then at most
//! ⌈(A/S) / budget⌉ walks one after the other, then a post job. The budget is a sixth of a
//! shard's share of [`MAX_AUDIENCE`] plus a quarter (shards are balanced by a hash, not exactly),
//! so for any audience up to [`MAX_AUDIENCE`] that is at most 1 + [`MAX_WALKS`] + 1 =
//! [`MAX_CHAIN`] hops, whatever the page size and shard count — half of Lambda's limit. Walks
//! only read: a shard's 208,000 rows (one shard) are about 105 Queries, a second or two.

/// The largest audience (live connections of one topic) the depth bound is argued for.
pub const MAX_AUDIENCE: usize = 1_000_000;
/// Walks one after the other, at most, in a shard of a [`MAX_AUDIENCE`] audience.
pub const MAX_WALKS: usize = 6;
/// The longest SQS → Lambda → SQS chain a fan-out makes (Lambda stops chains at 16).
pub const MAX_CHAIN: usize = 1 + MAX_WALKS + 1;
const _: () = assert!(MAX_CHAIN <= 8, "the issue's bound, half of Lambda's 16");
/// Rows per Query of a walk: membership rows are small (about 100 bytes), so this stays well
/// under DynamoDB's 1 MB page.
pub const WALK_QUERY_LIMIT: usize = 2_000;

/// Connections one walk reads from one shard.
pub fn walk_budget(shards: u16) -> usize {
    let share = MAX_AUDIENCE.div_ceil(usize::from(shards.max(1)));
    (share + share / 4).div_ceil(MAX_WALKS)
}

/// The longest chain the fan-out of an audience makes, for a shard holding `in_shard` of its
/// connections when the notification's invocation posts the first `first_page` of them (for the
/// tests and the docs; dispatch follows the same rule step by step): the invocation itself, the
/// walks one after the other, and a post job queued by the last one.
pub fn chain_depth(in_shard: usize, shards: u16, first_page: usize) -> usize {
    let rest = in_shard.saturating_sub(first_page);
    if rest == 0 {
        return 1;
    }
    1 + rest.div_ceil(walk_budget(shards)) + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_million_connections_take_at_most_eight_hops_whatever_the_settings() {
        for shards in [1u16, 2, 4, 8, 16, 64] {
            for page in [10usize, 500, 100_000] {
                let first_page = (page / usize::from(shards)).max(1);
                // An even share, and a shard 25 % over it.
                let even = MAX_AUDIENCE.div_ceil(usize::from(shards));
                for in_shard in [even, even + even / 4] {
                    let depth = chain_depth(in_shard, shards, first_page);
                    assert!(
                        depth <= MAX_CHAIN,
                        "{shards} shards, {page} a page, {in_shard} in a shard: {depth} hops"
                    );
                }
            }
        }
    }

    #[test]
    fn small_audiences_need_no_jobs_and_the_budget_shrinks_with_more_shards() {
        assert_eq!(chain_depth(400, 4, 500), 1);
        assert_eq!(chain_depth(0, 1, 10), 1);
        assert!(walk_budget(1) > walk_budget(4) && walk_budget(4) > walk_budget(64));
        assert!(walk_budget(64) >= WALK_QUERY_LIMIT, "a walk reads at least one full Query page");
    }
}
