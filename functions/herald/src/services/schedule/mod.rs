//! Deferred delivery: one-time EventBridge Scheduler schedules for reminders beyond SQS's
//! 15-minute delay ([`Scheduler`]), and the rule that picks between the two ([`Deferral`]).

mod deferral;

pub use deferral::{DeferError, Deferral, Deferred};

use aws_config::SdkConfig;
use aws_sdk_scheduler::Client;
use aws_sdk_scheduler::error::{BuildError, DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_scheduler::operation::create_schedule::CreateScheduleError;
use aws_sdk_scheduler::operation::delete_schedule::DeleteScheduleError;
use aws_sdk_scheduler::operation::update_schedule::UpdateScheduleError;
use aws_sdk_scheduler::types::{ActionAfterCompletion, FlexibleTimeWindow, FlexibleTimeWindowMode, ScheduleState, Target};
use chrono::{DateTime, Utc};

use crate::domain::config::Scheduling;

/// Each variant keeps the SDK error as its source; the message repeats its context because
/// Lambda logs usually print only the top-level error. Boxed: SDK errors are a few hundred bytes.
#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    #[error("Scheduler CreateSchedule failed: {}", DisplayErrorContext(.0.as_ref()))]
    Create(#[source] Box<SdkError<CreateScheduleError>>),
    #[error("Scheduler UpdateSchedule failed: {}", DisplayErrorContext(.0.as_ref()))]
    Update(#[source] Box<SdkError<UpdateScheduleError>>),
    #[error("Scheduler DeleteSchedule failed: {}", DisplayErrorContext(.0.as_ref()))]
    Delete(#[source] Box<SdkError<DeleteScheduleError>>),
    #[error("a schedule could not be built: {0}")]
    Build(#[source] BuildError),
}

#[derive(Clone, Debug)]
pub struct Scheduler {
    client: Client,
    cfg: Scheduling,
}

/// Schedule names allow `[0-9a-zA-Z-_.]{1,64}`; ids allow more, so the name is a digest of the
/// tenant and id: the same notification always maps to the same schedule (resend = reschedule).
pub fn schedule_name(tenant: &str, id: &str) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, format!("{tenant}\n{id}").as_bytes());
    let hex: String = digest.as_ref().iter().take(20).map(|b| format!("{b:02x}")).collect();
    format!("herald-{hex}")
}

/// `at(yyyy-mm-ddThh:mm:ss)` in UTC, rounded up so it never fires early.
pub fn at_expression(at: &DateTime<Utc>) -> String {
    let secs = if at.timestamp_subsec_nanos() > 0 {
        at.timestamp() + 1
    } else {
        at.timestamp()
    };
    let t = DateTime::<Utc>::from_timestamp(secs, 0).unwrap_or(*at);
    format!("at({})", t.format("%Y-%m-%dT%H:%M:%S"))
}

impl Scheduler {
    pub fn new(sdk: &SdkConfig, cfg: Scheduling) -> Self {
        Self {
            client: Client::new(sdk),
            cfg,
        }
    }

    /// Creates the schedule, or moves it if it already exists.
    pub async fn upsert(&self, name: &str, at: &DateTime<Utc>, input: String) -> Result<(), ScheduleError> {
        let target = Target::builder()
            .arn(&self.cfg.target_arn)
            .role_arn(&self.cfg.role_arn)
            .input(input)
            .build()
            .map_err(ScheduleError::Build)?;
        let window = FlexibleTimeWindow::builder()
            .mode(FlexibleTimeWindowMode::Off)
            .build()
            .map_err(ScheduleError::Build)?;
        let expression = at_expression(at);
        let created = self
            .client
            .create_schedule()
            .name(name)
            .group_name(&self.cfg.group)
            .schedule_expression(&expression)
            .schedule_expression_timezone("UTC")
            .flexible_time_window(window.clone())
            .target(target.clone())
            .action_after_completion(ActionAfterCompletion::Delete)
            // UpdateSchedule replaces the whole definition; say ENABLED rather than rely on a default.
            .state(ScheduleState::Enabled)
            .send()
            .await;
        match created {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some("ConflictException") => {
                self.client
                    .update_schedule()
                    .name(name)
                    .group_name(&self.cfg.group)
                    .schedule_expression(&expression)
                    .schedule_expression_timezone("UTC")
                    .flexible_time_window(window)
                    .target(target)
                    .action_after_completion(ActionAfterCompletion::Delete)
                    .state(ScheduleState::Enabled)
                    .send()
                    .await
                    .map_err(|e| ScheduleError::Update(Box::new(e)))?;
                Ok(())
            }
            Err(e) => Err(ScheduleError::Create(Box::new(e))),
        }
    }

    /// Deletes the schedule; a missing one (already fired and deleted) is fine.
    pub async fn delete(&self, name: &str) -> Result<(), ScheduleError> {
        match self.client.delete_schedule().name(name).group_name(&self.cfg.group).send().await {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some("ResourceNotFoundException") => Ok(()),
            Err(e) => Err(ScheduleError::Delete(Box::new(e))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_stable_valid_and_tenant_scoped() {
        let a = schedule_name("acme", "reminder/42 ✓");
        assert_eq!(a, schedule_name("acme", "reminder/42 ✓"));
        assert_ne!(a, schedule_name("globex", "reminder/42 ✓"));
        assert!(a.len() <= 64 && a.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
    }

    #[test]
    fn at_expression_never_fires_early() {
        let t = DateTime::parse_from_rfc3339("2026-11-23T10:00:00.250Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(at_expression(&t), "at(2026-11-23T10:00:01)");
        let t = DateTime::parse_from_rfc3339("2026-11-23T10:00:00Z").unwrap().with_timezone(&Utc);
        assert_eq!(at_expression(&t), "at(2026-11-23T10:00:00)");
    }
}
