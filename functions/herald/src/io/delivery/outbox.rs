//! Aggregation: the frames one process posts to the same connection within a short window go out
//! as one batch message (DESIGN.md, "Batch frames"), for connections that opted in. API Gateway
//! bills per message and counts each `@connections` call against the account's quota, so a
//! burst of notifications to one user (20 grades released at once) costs one or two messages
//! instead of twenty.
//!
//! The first frame for a connection opens its window; frames that arrive before it closes join
//! it; then the batch is posted (split at 32 KB) and every frame's poster learns the outcome of
//! the message that carried it, so the callers' consequences (410, retry, close) stay per frame.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;

use super::{PostOutcome, Poster};
use crate::domain::frames::{MESSAGE_UNIT, batch};

type Waiting = Vec<(String, oneshot::Sender<PostOutcome>)>;

#[derive(Debug)]
pub struct Outbox {
    window: Duration,
    open: Mutex<HashMap<String, Waiting>>,
}

impl Outbox {
    pub fn new(window: Duration) -> Arc<Self> {
        Arc::new(Self {
            window,
            open: Mutex::new(HashMap::new()),
        })
    }

    fn waiting(&self) -> std::sync::MutexGuard<'_, HashMap<String, Waiting>> {
        // A panic while holding the lock leaves the map as it was between two operations.
        self.open.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Posts `frame` to `connection` with whatever else is posted to it within the window.
    pub async fn post(self: &Arc<Self>, poster: &Poster, connection: &str, frame: &str) -> PostOutcome {
        let (tx, rx) = oneshot::channel();
        let opens = match self.waiting().entry(connection.to_owned()) {
            Entry::Vacant(v) => {
                v.insert(vec![(frame.to_owned(), tx)]);
                true
            }
            Entry::Occupied(mut o) => {
                o.get_mut().push((frame.to_owned(), tx));
                false
            }
        };
        if opens {
            let (outbox, poster, connection) = (self.clone(), poster.clone(), connection.to_owned());
            tokio::spawn(async move {
                tokio::time::sleep(outbox.window).await;
                let waiting = outbox.waiting().remove(&connection).unwrap_or_default();
                flush(&poster, &connection, waiting).await;
            });
        }
        rx.await
            .unwrap_or_else(|_| PostOutcome::Retryable("the aggregated post was dropped".into()))
    }
}

/// Posts the window's frames in as few messages as fit, in the order they were posted.
async fn flush(poster: &Poster, connection: &str, waiting: Waiting) {
    let (frames, mut senders): (Vec<String>, Vec<oneshot::Sender<PostOutcome>>) = waiting.into_iter().unzip();
    let mut senders = senders.drain(..);
    for (message, carries) in batch(&frames, MESSAGE_UNIT) {
        let outcome = poster.post(connection, &message).await;
        for tx in senders.by_ref().take(carries) {
            // The poster stopped waiting (its invocation failed): nothing to tell.
            let _ = tx.send(outcome.clone());
        }
    }
}
