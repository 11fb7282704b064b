//! Posting frames to connections through the API Gateway management API, and fan-out.
//!
//! Every post has one of four outcomes, and each has exactly one consequence:
//! delivered; gone (410: remove the connection now); retryable (429, 5xx, timeouts: hand the
//! connection id to the retry queue); failed for good (403/413: logged and counted — the
//! notification is still in the log for `resume`).

use std::collections::HashSet;

use futures_util::StreamExt;

pub mod chain;
mod outbox;
mod poster;

pub use poster::{PostOutcome, Poster, PosterError};

/// What happened to one fan-out.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FanoutReport {
    pub delivered: usize,
    pub gone: Vec<String>,
    pub retry: Vec<String>,
    pub failed: usize,
}

impl FanoutReport {
    pub fn merge(&mut self, other: FanoutReport) {
        self.delivered += other.delivered;
        self.gone.extend(other.gone);
        self.retry.extend(other.retry);
        self.failed += other.failed;
    }
}

/// Posts `frame` to every connection with at most `concurrency` posts in flight.
///
/// Each post is its own task: the SDK's per-request work (endpoint resolution, SigV4 signing,
/// response parsing) then runs on every runtime thread instead of the one thread that would poll
/// a `buffer_unordered` of plain futures — on a multi-vCPU Lambda that is the difference between
/// one core's worth of posts per second and all of them.
pub async fn fan_out<I>(poster: &Poster, connections: I, frame: &str, concurrency: usize) -> FanoutReport
where
    I: IntoIterator<Item = String>,
{
    fan_out_live(poster, connections, frame, concurrency, &HashSet::new()).await
}

/// [`fan_out`], aggregating the posts to connections in `batching` (those that take batch frames)
/// when the poster aggregates (see `outbox`).
pub async fn fan_out_live<I>(poster: &Poster, connections: I, frame: &str, concurrency: usize, batching: &HashSet<String>) -> FanoutReport
where
    I: IntoIterator<Item = String>,
{
    let frame: std::sync::Arc<str> = std::sync::Arc::from(frame);
    let mut results = futures_util::stream::iter(connections)
        .map(|id| {
            let (poster, frame, task_id) = (poster.clone(), frame.clone(), id.clone());
            let takes_batches = batching.contains(&id);
            let task = tokio::spawn(async move { poster.post_live(&task_id, &frame, takes_batches).await });
            async move {
                // A panicked post is treated like a transient failure: the connection is retried.
                let outcome = task.await.unwrap_or_else(|e| PostOutcome::Retryable(e.to_string()));
                (id, outcome)
            }
        })
        .buffer_unordered(concurrency.max(1));
    let mut report = FanoutReport::default();
    while let Some((id, outcome)) = results.next().await {
        match outcome {
            PostOutcome::Delivered => report.delivered += 1,
            PostOutcome::Gone => report.gone.push(id),
            PostOutcome::Retryable(reason) => {
                tracing::debug!(connection = %id, %reason, "post will be retried");
                report.retry.push(id);
            }
            PostOutcome::Failed(reason) => {
                tracing::warn!(connection = %id, %reason, "post failed permanently");
                report.failed += 1;
            }
        }
    }
    report
}

/// What became of connections a post could not reach for now (429, 5xx, timeouts).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Unreachable {
    /// Took the frame when posted again.
    pub delivered: usize,
    /// Answered 410 when posted again (and closed, in case the socket is in fact open).
    pub gone: Vec<String>,
    /// Closed: their clients reconnect and resume.
    pub closed: usize,
    /// Could not even be closed: the retry queue tries again.
    pub unclosed: Vec<String>,
}

/// How long to wait before posting to a connection again, so a momentary throttle passes.
const REPOST_PAUSE_MS: u64 = 100;

/// Settles a logged frame's retryable failures while the frame is young: one more post after a
/// short pause, then a close for whoever still could not take it. A frame is never posted late:
/// a client holding a later cursor would resume past it (see `horizon`), so a connection that
/// misses a frame is closed, and its client's resume brings the frame.
pub async fn post_or_close(poster: &Poster, connections: Vec<String>, frame: &str, concurrency: usize) -> Unreachable {
    let mut out = Unreachable::default();
    if connections.is_empty() {
        return out;
    }
    tokio::time::sleep(std::time::Duration::from_millis(
        REPOST_PAUSE_MS + crate::io::store::jitter(REPOST_PAUSE_MS),
    ))
    .await;
    let again = fan_out(poster, connections, frame, concurrency).await;
    out.delivered = again.delivered;
    // A 410 now is closed like one in the first round (see `close_gone_sockets`): a socket that
    // is in fact open would go on receiving newer frames without this one.
    let to_close = again.gone.iter().cloned().chain(again.retry).collect();
    let gone: HashSet<String> = again.gone.into_iter().collect();
    for (id, outcome) in disconnect_all(poster, to_close, concurrency).await {
        match outcome {
            PostOutcome::Delivered | PostOutcome::Gone if gone.contains(&id) => out.gone.push(id),
            PostOutcome::Delivered | PostOutcome::Gone => out.closed += 1,
            PostOutcome::Retryable(reason) | PostOutcome::Failed(reason) => {
                tracing::warn!(connection = %id, %reason, "could not close a connection that missed a frame; the retry queue tries again");
                out.unclosed.push(id);
            }
        }
    }
    out
}

/// Closes connections that answered 410 to a logged frame. Normally they are gone and this
/// answers 410 again; one that is in fact still open (the management API's view lagging behind
/// the socket, or a fault) would otherwise go on receiving newer frames without this one, and a
/// client resuming from one of those would never read it (see `horizon`). Returns how many
/// could not be closed: the caller then records no completion time for the fan-out, since a
/// resume spares entries by it (`replay::spare`).
pub async fn close_gone_sockets(poster: &Poster, connections: &[String], concurrency: usize) -> usize {
    let mut unclosed = 0;
    for (id, outcome) in disconnect_all(poster, connections.to_vec(), concurrency).await {
        match outcome {
            PostOutcome::Gone => {}
            PostOutcome::Delivered => tracing::info!(connection = %id, "a connection that answered 410 was still open; closed it"),
            PostOutcome::Retryable(reason) | PostOutcome::Failed(reason) => {
                unclosed += 1;
                tracing::warn!(connection = %id, %reason, "could not close a connection that answered 410")
            }
        }
    }
    unclosed
}

/// `DELETE @connections/{id}` for each, at most `concurrency` at once.
async fn disconnect_all(poster: &Poster, connections: Vec<String>, concurrency: usize) -> Vec<(String, PostOutcome)> {
    futures_util::stream::iter(connections)
        .map(|id| {
            let poster = poster.clone();
            async move {
                let outcome = poster.disconnect(&id).await;
                (id, outcome)
            }
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await
}
