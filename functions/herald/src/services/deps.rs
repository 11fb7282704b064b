//! What a function is built from at init: the SDK configuration and the environment. Each piece
//! is read or made once, on first use, and shared (clones of one client) by every service that
//! needs it, so a handler's init names what it uses and nothing reads the environment twice.

use std::cell::OnceCell;

use aws_config::SdkConfig;

use crate::domain::budget::Budget;
use crate::domain::config::{ChatSettings, Env, Limits, PushSettings, Queues, Scheduling, ws_endpoint};
use crate::domain::policy::{PresencePolicy, RolePolicy};
use crate::io::delivery::Poster;
use crate::io::queue::Queue;
use crate::io::store::Store;
use crate::services::chat::{History, ReceiptSettings, Receipts, Sharing};
use crate::services::inbox::{Inbox, ReadSync};
use crate::services::limiter::Limiter;
use crate::services::presence::Presence;
use crate::services::replay::Replay;
use crate::services::runtime::InitError;
use crate::services::schedule::Scheduler;

pub struct Deps {
    sdk: SdkConfig,
    store: OnceCell<Store>,
    queue: OnceCell<Queue>,
    poster: OnceCell<Poster>,
    limits: OnceCell<Limits>,
    roles: OnceCell<RolePolicy>,
    presence_policy: OnceCell<PresencePolicy>,
    push: OnceCell<PushSettings>,
    chat: OnceCell<ChatSettings>,
}

/// The cell's value, made by `make` the first time.
fn once<T: Clone>(cell: &OnceCell<T>, make: impl FnOnce() -> Result<T, InitError>) -> Result<T, InitError> {
    if let Some(v) = cell.get() {
        return Ok(v.clone());
    }
    let v = make()?;
    Ok(cell.get_or_init(|| v).clone())
}

impl Deps {
    pub fn new(sdk: SdkConfig) -> Self {
        Self {
            sdk,
            store: OnceCell::new(),
            queue: OnceCell::new(),
            poster: OnceCell::new(),
            limits: OnceCell::new(),
            roles: OnceCell::new(),
            presence_policy: OnceCell::new(),
            push: OnceCell::new(),
            chat: OnceCell::new(),
        }
    }

    pub fn store(&self) -> Result<Store, InitError> {
        once(&self.store, || Ok(Store::from_env(&self.sdk)?))
    }

    pub fn queue(&self) -> Result<Queue, InitError> {
        once(&self.queue, || Ok(Queue::new(&self.sdk, Queues::from_source(&Env)?)))
    }

    /// The `@connections` client of the function's WebSocket API.
    pub fn poster(&self) -> Result<Poster, InitError> {
        once(&self.poster, || Ok(Poster::new(&self.sdk, &ws_endpoint(&Env)?)?))
    }

    pub fn scheduler(&self) -> Result<Scheduler, InitError> {
        Ok(Scheduler::new(&self.sdk, Scheduling::from_source(&Env)?))
    }

    pub fn limits(&self) -> Result<Limits, InitError> {
        once(&self.limits, || Ok(Limits::from_source(&Env)?))
    }

    pub fn roles(&self) -> Result<RolePolicy, InitError> {
        once(&self.roles, || Ok(RolePolicy::from_source(&Env)?))
    }

    pub fn presence_policy(&self) -> Result<PresencePolicy, InitError> {
        once(&self.presence_policy, || Ok(PresencePolicy::from_source(&Env)?))
    }

    pub fn push_settings(&self) -> Result<PushSettings, InitError> {
        once(&self.push, || Ok(PushSettings::from_source(&Env)?))
    }

    /// The presence service, reporting metrics as `function`.
    pub fn presence(&self, function: &'static str) -> Result<Presence, InitError> {
        Ok(Presence::new(
            function,
            self.store()?,
            self.queue()?,
            self.poster()?,
            self.presence_policy()?,
            &self.limits()?,
        ))
    }

    pub fn chat_settings(&self) -> Result<ChatSettings, InitError> {
        once(&self.chat, || Ok(ChatSettings::from_source(&Env)?))
    }

    /// Chat receipts, posting as `function`, charging posts to the users' work budget.
    pub fn receipts(&self, function: &'static str) -> Result<Receipts, InitError> {
        let store = self.store()?;
        let limiter = Limiter::new(store.clone(), None).with_work(Budget::work(&Env)?);
        Ok(Receipts::new(
            store,
            self.queue()?,
            self.poster()?,
            self.presence(function)?,
            self.roles()?,
            limiter,
            ReceiptSettings::new(&self.limits()?, &self.chat_settings()?),
        ))
    }

    /// Room history.
    pub fn history(&self) -> Result<History, InitError> {
        Ok(History::new(self.store()?, self.roles()?, &self.limits()?))
    }

    /// Shared files (presigned S3 URLs).
    pub fn sharing(&self) -> Result<Sharing, InitError> {
        Ok(Sharing::new(self.store()?, self.roles()?, &self.sdk, &self.chat_settings()?))
    }

    /// The replay service (`resume`, `missed`, unread counts).
    pub fn replay(&self) -> Result<Replay, InitError> {
        Ok(Replay::new(self.store()?, self.limits()?.retention_seconds))
    }

    /// `missed` and the unread count over the topics a user may read.
    pub fn inbox(&self) -> Result<Inbox, InitError> {
        Ok(Inbox::new(self.store()?, self.replay()?))
    }

    /// Read state pushed to a user's other connections.
    pub fn read_sync(&self) -> Result<ReadSync, InitError> {
        Ok(ReadSync::new(self.store()?, self.replay()?, self.poster()?, &self.limits()?))
    }
}
