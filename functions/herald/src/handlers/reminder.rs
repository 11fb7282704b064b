//! `reminder`: the EventBridge Scheduler target. Scheduler delivers at least once, so a fired or
//! cancelled reminder is skipped; the notification then goes to dispatch, whose idempotency on
//! the id makes two racing fires push once.
//!
//! A schedule can also carry an escalation check (`{"escalationCheck":{...}}`, for an
//! `escalate` wait beyond SQS's 15 minutes; see `escalation`): it is put on the internal queue
//! as it is, and dispatch checks it there. Only Scheduler invokes this function, with inputs
//! Herald wrote, so this is no way for a producer onto the internal queue.

use aws_config::SdkConfig;
use serde_json::Value;

use crate::BoxError;
use crate::domain::config::{Env, Limits, Queues};
use crate::domain::metrics::Metrics;
use crate::domain::notification::{ParseLimits, ProducerMessage, parse_producer_message};
use crate::io::queue::{EscalationCheck, Queue, QueueError};
use crate::io::store::{ReminderState, Store, StoreError};
use crate::services::escalation::SCHEDULE_INPUT_KEY;
use crate::services::runtime::{Handler, InitError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fired {
    Sent,
    Skipped(&'static str),
}

#[derive(Debug, thiserror::Error)]
pub enum ReminderError {
    #[error("schedule input is not a notification with an id: {0}")]
    BadInput(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Queue(#[from] QueueError),
}

pub struct ReminderTarget {
    store: Store,
    queue: Queue,
    limits: Limits,
}

impl ReminderTarget {
    pub fn new(store: Store, queue: Queue, limits: Limits) -> Self {
        Self { store, queue, limits }
    }

    pub async fn fire(&self, input: &Value) -> Result<Fired, ReminderError> {
        if let Some(check) = input.get(SCHEDULE_INPUT_KEY) {
            let check: EscalationCheck =
                serde_json::from_value(check.clone()).map_err(|e| ReminderError::BadInput(format!("escalation check: {e}")))?;
            self.queue.escalation_check(&check, 0).await?;
            tracing::info!(tenant = %check.tenant, id = %check.id, user = %check.user, "escalation check due");
            return Ok(Fired::Sent);
        }
        let body = input.to_string();
        let limits = ParseLimits::from(&self.limits);
        let req = match parse_producer_message(&body, limits) {
            Ok(ProducerMessage::Notify(r)) if r.id.is_some() => r,
            Ok(_) => return Err(ReminderError::BadInput("not a notification with an id".into())),
            Err(e) => return Err(ReminderError::BadInput(e.to_string())),
        };
        let id = req.id.as_deref().unwrap_or_default();
        if let Some(r) = self.store.reminders.get(&req.tenant, id).await? {
            match r.state {
                ReminderState::Cancelled => return Ok(self.skipped("cancelled")),
                ReminderState::Fired => return Ok(self.skipped("already fired")),
                ReminderState::Scheduled => {}
            }
        }
        // Send first, then mark: a crash in between means a second fire, which dispatch
        // deduplicates; the other order could lose the reminder.
        self.queue.dispatch(body, 0).await?;
        let expires = crate::io::store::epoch_seconds() + self.limits.retention_seconds as i64;
        self.store.reminders.mark_fired(&req.tenant, id, expires).await?;
        Metrics::new("reminder").count("Fired", 1).flush();
        tracing::info!(tenant = %req.tenant, id, "reminder fired");
        Ok(Fired::Sent)
    }

    fn skipped(&self, why: &'static str) -> Fired {
        Metrics::new("reminder").count("Skipped", 1).flush();
        tracing::info!(why, "reminder skipped");
        Fired::Skipped(why)
    }
}

impl Handler for ReminderTarget {
    type Event = Value;
    type Output = Value;
    const NAME: &'static str = "reminder";

    async fn init(sdk: SdkConfig) -> Result<Self, InitError> {
        let store = Store::from_env(&sdk)?;
        let queue = Queue::new(&sdk, Queues::from_source(&Env)?);
        Ok(Self::new(store, queue, Limits::from_source(&Env)?))
    }

    async fn handle(&self, event: Value) -> Result<Value, BoxError> {
        match self.fire(&event).await {
            Ok(Fired::Sent) => Ok(serde_json::json!({"fired": true})),
            Ok(Fired::Skipped(why)) => Ok(serde_json::json!({"fired": false, "reason": why})),
            // Bad input can never succeed: report without an error so Scheduler does not retry.
            Err(ReminderError::BadInput(e)) => {
                tracing::error!(error = %e, "unusable schedule input");
                Ok(serde_json::json!({"fired": false, "reason": e}))
            }
            Err(e) => Err(e.into()),
        }
    }
}
