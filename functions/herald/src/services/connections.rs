//! A WebSocket connection's life on Herald's side: opened with its automatic memberships
//! (`user:{sub}`, `tenant`, `all` and the user's durable subscriptions; presence events for
//! them) within the user's connect budget and connection cap, and closed with all of them.

use crate::domain::config::Limits;
use crate::domain::groups::Group;
use crate::domain::metrics::Metrics;
use crate::io::store::{ConnectionRecord, Store, StoreError};
use crate::services::gateway::Caller;
use crate::services::limiter::Limiter;
use crate::services::presence::{Presence, PresenceError};

#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Presence(#[from] PresenceError),
}

/// Whether a connection was let in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opened {
    Accepted,
    /// Over the user's connect budget: try again in this many ms.
    OverBudget(u64),
    /// The user already holds `HERALD_MAX_CONNECTIONS_PER_USER` open connections.
    TooMany,
}

#[derive(Clone, Debug)]
pub struct Connections {
    store: Store,
    limits: Limits,
    presence: Presence,
    /// The connect budget per user.
    limiter: Limiter,
}

impl Connections {
    pub fn new(store: Store, limits: Limits, presence: Presence, limiter: Limiter) -> Self {
        Self {
            store,
            limits,
            presence,
            limiter,
        }
    }

    /// Opens `who`'s connection. `received_ms`: when API Gateway received the handshake;
    /// `connected_at`: the connection's own time, both from the event.
    pub async fn open(&self, who: &Caller, received_ms: i64, connected_at: i64) -> Result<Opened, ConnectionError> {
        let p = &who.principal;
        let key = Limiter::connect_key(&p.tenant, &p.user);
        if let Some(ms) = self.limiter.check(&key, received_ms).await? {
            Metrics::new("ws-connect").count("ConnectsLimited", 1).flush();
            return Ok(Opened::OverBudget(ms));
        }
        // Independent reads, so one round trip: the user's open connections (for the cap) and
        // the groups they subscribed to (joined on every connect).
        let user_group = Group::user(&p.user).key(&p.tenant);
        let (open, subscribed) = futures_util::try_join!(
            self.store.connections.all_members(&user_group, 1),
            self.store.subscriptions.list(&p.tenant, &p.user),
        )?;
        if open.len() >= self.limits.max_connections_per_user {
            tracing::info!(user = %p.user, tenant = %p.tenant, open = open.len(), "connect refused: too many connections");
            Metrics::new("ws-connect").count("ConnectionsRefused", 1).flush();
            return Ok(Opened::TooMany);
        }
        let mut groups = vec![Group::user(&p.user), Group::Tenant, Group::All];
        groups.extend(subscribed);
        let record = ConnectionRecord {
            id: who.connection_id.clone(),
            user: p.user.clone(),
            tenant: p.tenant.clone(),
            roles: p.roles.clone(),
            groups: p.groups.clone(),
            connected_at,
            batch: who.batch,
        };
        self.store
            .connections
            .open(&record, &groups, self.limits.membership_shards, self.limits.connection_ttl_seconds)
            .await?;
        self.presence.arrived(&p.tenant, &p.user, &record.id, &groups).await?;
        tracing::info!(connection = %record.id, user = %p.user, tenant = %p.tenant, groups = groups.len(), "connected");
        Metrics::new("ws-connect").count("ConnectionsOpened", 1).flush();
        Ok(Opened::Accepted)
    }
}

/// Closes a connection: its item and all its memberships are removed, and the user's last
/// connection leaving a presence group goes offline after the grace period. Idempotent, so a
/// `$disconnect` after a 410 or the TTL cleaned up finds nothing to do. Returns the memberships
/// removed.
pub async fn close(store: &Store, presence: &Presence, connection_id: &str) -> Result<usize, ConnectionError> {
    let closed = store.connections.close(connection_id).await?;
    let removed = closed.groups.len();
    presence.closed(&[closed]).await?;
    Ok(removed)
}
