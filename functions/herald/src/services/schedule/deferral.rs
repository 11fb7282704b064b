//! Deferred delivery (`deliverAt` in the future), used by `dispatch` and `POST /reminders`.
//!
//! A reminder record is written first (it is what `GET /reminders/{id}` shows and what cancel
//! flips); then the notification waits either on the dispatch queue (SQS `DelaySeconds`, up to
//! 15 minutes) or in a one-time Scheduler schedule named from the id, so sending the same id
//! again moves the schedule instead of adding one.

use chrono::Utc;

use super::{ScheduleError, Scheduler, schedule_name};
use crate::domain::notification::{NotificationRequest, format_time};
use crate::io::queue::{MAX_DELAY_SECONDS, Queue, QueueError};
use crate::io::store::{Reminder, ReminderState, Store, StoreError, epoch_seconds};

#[derive(Debug, thiserror::Error)]
pub enum DeferError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error(transparent)]
    Schedule(#[from] ScheduleError),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deferred {
    /// On the dispatch queue with a delay.
    Queued,
    /// In an EventBridge Scheduler schedule.
    Scheduled,
    /// The id was cancelled earlier; nothing was scheduled.
    Cancelled,
}

#[derive(Clone, Debug)]
pub struct Deferral {
    store: Store,
    queue: Queue,
    scheduler: Scheduler,
    retention_seconds: u64,
}

impl Deferral {
    pub fn new(store: Store, queue: Queue, scheduler: Scheduler, retention_seconds: u64) -> Self {
        Self {
            store,
            queue,
            scheduler,
            retention_seconds,
        }
    }

    /// `req.id` and `req.deliver_at` must be set.
    pub async fn defer(&self, req: &NotificationRequest, owner: Option<String>) -> Result<Deferred, DeferError> {
        let id = req.id.clone().unwrap_or_default();
        let at = req.deliver_at.unwrap_or_else(Utc::now);
        let body = req.to_json().to_string();
        let reminder = Reminder {
            tenant: req.tenant.clone(),
            id: id.clone(),
            state: ReminderState::Scheduled,
            deliver_at: format_time(&at),
            request: body.clone(),
            owner,
        };
        let expires = at.timestamp() + self.retention_seconds as i64;
        if !self.store.reminders.schedule(&reminder, expires).await? {
            return Ok(Deferred::Cancelled);
        }
        let wait_s = ((at - Utc::now()).num_milliseconds().max(0) + 999) / 1000;
        if wait_s <= MAX_DELAY_SECONDS {
            self.queue.dispatch_deferred(body, wait_s, &reminder.deliver_at).await?;
            Ok(Deferred::Queued)
        } else {
            self.scheduler.upsert(&schedule_name(&req.tenant, &id), &at, body).await?;
            Ok(Deferred::Scheduled)
        }
    }

    /// Cancels a pending reminder: the record wins over a message still on its way (dispatch and
    /// the reminder target both check it), and the schedule, if any, is deleted.
    pub async fn cancel(&self, tenant: &str, id: &str) -> Result<Option<ReminderState>, DeferError> {
        let expires = epoch_seconds() + self.retention_seconds as i64;
        let previous = self.store.reminders.cancel(tenant, id, expires).await?;
        self.scheduler.delete(&schedule_name(tenant, id)).await?;
        tracing::info!(tenant, id, ?previous, "reminder cancelled");
        Ok(previous)
    }
}
