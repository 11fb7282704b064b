//! Applying a user's preferences (`domain::preferences`): which of a notification's channels a
//! user turned off, and whether their quiet hours hold push and escalation back.
//!
//! **Cost rule.** Preferences are read only for personal topics (`user:`, i.e. `to.user` and
//! `to.users` notifications), where each recipient is named anyway: push reads each user's
//! subscriptions and escalation each user's read state already. Group, `tenant` and `all`
//! notifications are never filtered per member in fan-out: one item per member per
//! notification would multiply a big group's cost, and joining a group is the user's opt-in.
//! One BatchGetItem reads the documents of a notification's users with the tenant's defaults
//! (a [`Book`]), not one read per user; a user without a document of their own has the
//! tenant's.

use std::collections::HashMap;

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

/// The preferences of several users of one tenant, read at once ([`Book::read`]).
#[derive(Debug, Clone, Default)]
pub struct Book {
    mine: HashMap<String, Preferences>,
    defaults: Option<Preferences>,
    none: Preferences,
}

impl Book {
    /// `users`' documents and the tenant's defaults, in one batch read. A stored document that
    /// no longer parses (a zone dropped from the database) counts as none.
    pub async fn read(store: &Store, tenant: &str, users: &[&str]) -> Result<Self, StoreError> {
        let (docs, defaults) = store.inbox.preferences_of(tenant, users).await?;
        Ok(Self {
            mine: docs.into_iter().filter_map(|(user, doc)| Some((user, stored(&doc)?))).collect(),
            defaults: defaults.as_deref().and_then(stored),
            none: Preferences::default(),
        })
    }

    /// The preferences that apply to `user`: their own, else the tenant's defaults.
    pub fn of(&self, user: &str) -> (&Preferences, Source) {
        match (self.mine.get(user), &self.defaults) {
            (Some(p), _) => (p, Source::User),
            (None, Some(p)) => (p, Source::Tenant),
            (None, None) => (&self.none, Source::None),
        }
    }

    /// [`gate_of`] for `user`.
    pub fn gate(&self, user: &str, channel: Channel, content: &Content, now: DateTime<Utc>) -> Gate {
        gate_of(self.of(user).0, channel, content, now)
    }
}

/// The preferences that apply to `user`: their own, else the tenant's defaults.
pub async fn effective(store: &Store, tenant: &str, user: &str) -> Result<(Preferences, Source), StoreError> {
    let book = Book::read(store, tenant, &[user]).await?;
    let (prefs, source) = book.of(user);
    Ok((prefs.clone(), source))
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
    let names: Vec<&str> = users.iter().map(String::as_str).collect();
    let book = Book::read(store, tenant, &names).await?;
    let now = Utc::now();
    Ok(users
        .iter()
        .filter(|u| book.gate(u, Channel::InApp, content, now) != Gate::Off)
        .cloned()
        .collect())
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
