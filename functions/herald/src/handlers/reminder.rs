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
use crate::domain::config::Limits;
use crate::io::queue::Queue;
use crate::io::store::Store;
use crate::services::deps::Deps;
use crate::services::reminders::{FireError, Fired, Firing};
use crate::services::runtime::{Handler, InitError};

pub struct ReminderTarget {
    firing: Firing,
}

impl ReminderTarget {
    pub fn new(store: Store, queue: Queue, limits: Limits) -> Self {
        Self {
            firing: Firing::new(store, queue, limits),
        }
    }
}

impl Handler for ReminderTarget {
    type Event = Value;
    type Output = Value;
    const NAME: &'static str = "reminder";

    async fn init(sdk: SdkConfig) -> Result<Self, InitError> {
        let d = Deps::new(sdk);
        Ok(Self::new(d.store()?, d.queue()?, d.limits()?))
    }

    async fn handle(&self, event: Value) -> Result<Value, BoxError> {
        match self.firing.fire(&event).await {
            Ok(Fired::Sent) => Ok(serde_json::json!({"fired": true})),
            Ok(Fired::Skipped(why)) => Ok(serde_json::json!({"fired": false, "reason": why})),
            // Bad input can never succeed: report without an error so Scheduler does not retry.
            Err(FireError::BadInput(e)) => {
                tracing::error!(error = %e, "unusable schedule input");
                Ok(serde_json::json!({"fired": false, "reason": e}))
            }
            Err(e) => Err(e.into()),
        }
    }
}
