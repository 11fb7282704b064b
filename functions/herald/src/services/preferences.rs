//! Applying a user's preferences (`domain::preferences`): which of a notification's channels a
//! user turned off, and whether their quiet hours hold push and escalation back.
//!
//! **Cost rule.** Preferences are read only for personal topics (`user:`, i.e. `to.user` and
//! `to.users` notifications), where each recipient is named anyway: push reads each user's
//! subscriptions and escalation each user's read state already. Group, `tenant` and `all`
//! notifications are never filtered per member in fan-out: one item per member per
//! notification would multiply a big group's cost, and joining a group is the user's opt-in.
//! One BatchGetItem reads a user's document with the tenant's defaults; a user without a
//! document of their own has the tenant's.

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::domain::notification::Content;
use crate::domain::preferences::{Channel, Preferences};
use crate::io::store::{Store, StoreError};

/// Whose preferences apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    User,
    Tenant,
    None,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::User => "user",
            Source::Tenant => "tenant",
            Source::None => "none",
        }
    }
}

/// What a channel may do with a notification for one user now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    Send,
    /// The user turned this category off on this channel.
    Off,
    /// Quiet hours: wait until then.
    Later(DateTime<Utc>),
}

/// The preferences that apply to `user`: their own, else the tenant's defaults. A stored
/// document that no longer parses (a zone dropped from the database) counts as none.
pub async fn effective(store: &Store, tenant: &str, user: &str) -> Result<(Preferences, Source), StoreError> {
    let (mine, defaults) = store.inbox.preferences(tenant, user).await?;
    if let Some(p) = mine.as_deref().and_then(stored) {
        return Ok((p, Source::User));
    }
    if let Some(p) = defaults.as_deref().and_then(stored) {
        return Ok((p, Source::Tenant));
    }
    Ok((Preferences::default(), Source::None))
}

/// The tenant's defaults (`GET /preferences/tenant`): none stored, or one that no longer
/// parses, reads as the built-in defaults. `user` is the caller (the read is `effective`'s).
pub async fn defaults(store: &Store, tenant: &str, user: &str) -> Result<Preferences, StoreError> {
    let (_, defaults) = store.inbox.preferences(tenant, user).await?;
    Ok(defaults.as_deref().and_then(stored).unwrap_or_default())
}

/// Replaces `user`'s document, or (`None`) the tenant's defaults, with `prefs`. Answers the
/// document stored.
pub async fn replace(store: &Store, tenant: &str, user: Option<&str>, prefs: &Preferences) -> Result<Value, StoreError> {
    let doc = prefs.to_json();
    store.inbox.put_preferences(tenant, user, &doc.to_string()).await?;
    Ok(doc)
}

fn stored(doc: &str) -> Option<Preferences> {
    serde_json::from_str(doc).ok().and_then(|v| Preferences::parse(&v).ok())
}

/// The pure rule: critical passes; an off category is off; quiet hours hold push and
/// escalation (never the inbox).
pub fn gate_of(prefs: &Preferences, channel: Channel, content: &Content, now: DateTime<Utc>) -> Gate {
    if content.critical {
        return Gate::Send;
    }
    if !prefs.allows(channel, &content.event) {
        return Gate::Off;
    }
    match (channel, prefs.quiet_until(now)) {
        (Channel::Push | Channel::Escalation, Some(until)) => Gate::Later(until),
        _ => Gate::Send,
    }
}

/// [`gate_of`] with the user's stored preferences (not read at all for a critical one).
pub async fn gate(store: &Store, tenant: &str, user: &str, channel: Channel, content: &Content) -> Result<Gate, StoreError> {
    if content.critical {
        return Ok(Gate::Send);
    }
    let (prefs, _) = effective(store, tenant, user).await?;
    Ok(gate_of(&prefs, channel, content, Utc::now()))
}

/// Of `users`, those whose inbox takes `content` (in-app not turned off for its event).
pub async fn inbox_takes(store: &Store, tenant: &str, users: &[String], content: &Content) -> Result<Vec<String>, StoreError> {
    if content.critical {
        return Ok(users.to_vec());
    }
    use futures_util::StreamExt;
    let gates: Vec<Result<(String, Gate), StoreError>> = futures_util::stream::iter(users.to_vec())
        .map(|user| async move {
            let gate = gate(store, tenant, &user, Channel::InApp, content).await?;
            Ok((user, gate))
        })
        .buffered(16)
        .collect()
        .await;
    let mut kept = Vec::with_capacity(users.len());
    for g in gates {
        let (user, gate) = g?;
        if gate != Gate::Off {
            kept.push(user);
        }
    }
    Ok(kept)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn critical_passes_and_quiet_hours_hold_only_push_and_escalation() {
        let prefs = Preferences::parse(&json!({
            "off": {"push": ["forum.*"]},
            "quietHours": {"start": "00:00", "end": "23:59", "timeZone": "UTC"}
        }))
        .unwrap();
        let now = DateTime::parse_from_rfc3339("2026-12-06T12:00:00Z").unwrap().with_timezone(&Utc);
        let forum = Content {
            event: "forum.reply".into(),
            ..Content::default()
        };
        assert_eq!(gate_of(&prefs, Channel::Push, &forum, now), Gate::Off);
        assert_eq!(gate_of(&prefs, Channel::InApp, &forum, now), Gate::Send);
        assert!(matches!(gate_of(&prefs, Channel::Escalation, &forum, now), Gate::Later(_)));
        let critical = Content {
            critical: true,
            ..forum.clone()
        };
        for c in Channel::ALL {
            assert_eq!(gate_of(&prefs, c, &critical, now), Gate::Send);
        }
    }
}
