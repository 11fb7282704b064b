//! The inbox's state beyond the log (issue #33), in `NotificationsTable`:
//!
//! | item | pk | sk | attributes |
//! |---|---|---|---|
//! | read sequence | `r#{tenant}#{user}` | `#seq` | `seq` (a counter, one step per read) |
//! | a notification's revision | `i#{tenant}#{id}` (the idempotency claim) | `#` | `logged` (the cursor of its current entries), `topics`, `version`, `recalled` |
//! | preferences | `pf#{tenant}#{user}` / `pf#{tenant}` (the tenant's defaults) | `#` | `prefsJson` (the document) |
//!
//! A revision rides on the claim item: dispatch finishes every claim anyway, so recording where
//! the entries are costs no extra write, and an update can only ever name an id its tenant's
//! producers logged (the claim's key carries the tenant).

use std::collections::HashMap;

use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{ReturnValue, ReturnValuesOnConditionCheckFailure};

use super::{Item, StoreError, Table, get_list, get_n, get_s, list, n, s};
use crate::domain::cursor::Cursor;
use crate::domain::groups::Group;

/// Where a logged notification's entries are, and what became of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revisable {
    /// The cursor of its current entries.
    pub logged: Cursor,
    pub topics: Vec<Group>,
    /// 1 until updated.
    pub version: u64,
    pub recalled: bool,
}

/// Why a revision changed nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotRevised {
    /// No notification of this tenant has this id (or it is still being delivered without a
    /// record of its entries: a notification logged before #33).
    NotFound,
    /// It is being delivered now; try again once its claim is finished.
    InProgress,
    /// Recalled before: nothing more changes it.
    Recalled,
    /// A version at or above this one is stored: a late older update.
    Stale { stored: u64 },
}

#[derive(Clone, Debug)]
pub struct Inbox {
    table: Table,
}

fn claim_key(tenant: &str, id: &str) -> String {
    format!("i#{tenant}#{id}")
}

impl Inbox {
    pub(crate) fn new(table: Table) -> Self {
        Self { table }
    }

    /// One more read by the user: the new sequence number. Reads that finish later get higher
    /// numbers, and a count computed after taking one sees every read with a lower one.
    pub async fn next_read_seq(&self, tenant: &str, user: &str) -> Result<u64, StoreError> {
        let out = self
            .table
            .client
            .update_item()
            .table_name(&self.table.name)
            .key("pk", s(format!("r#{tenant}#{user}")))
            .key("sk", s("#seq"))
            .update_expression("ADD #q :one")
            .expression_attribute_names("#q", "seq")
            .expression_attribute_values(":one", n(1))
            .return_values(ReturnValue::UpdatedNew)
            .send()
            .await
            .map_err(|e| StoreError::dynamo("UpdateItem", e))?;
        let attrs = out.attributes.unwrap_or_default();
        Ok(get_n(&attrs, "seq")?.max(0) as u64)
    }

    /// A notification's revision record, read consistently.
    pub async fn revisable(&self, tenant: &str, id: &str) -> Result<Option<Revisable>, StoreError> {
        Ok(self.revision_state(tenant, id).await?.ok())
    }

    /// The record, or why there is none: no such id of the tenant, or one still being delivered.
    pub async fn revision_state(&self, tenant: &str, id: &str) -> Result<Result<Revisable, NotRevised>, StoreError> {
        let Some(item) = self.table.get(claim_key(tenant, id), "#").await? else {
            return Ok(Err(NotRevised::NotFound));
        };
        Ok(match parse_revisable(&item) {
            Some(r) => Ok(r),
            None if get_s(&item, "state").is_ok_and(|st| st != "done") => Err(NotRevised::InProgress),
            None => Err(NotRevised::NotFound),
        })
    }

    /// Moves a finished notification to `version`, its entries now at `cursor`, if no version at
    /// or above it is stored and it was not recalled. Returns where its entries were.
    pub async fn revise(&self, tenant: &str, id: &str, version: u64, cursor: Cursor) -> Result<Result<Revisable, NotRevised>, StoreError> {
        let update = self
            .table
            .client
            .update_item()
            .update_expression("SET #v = :v, #l = :c")
            .condition_expression(
                "#s = :done AND attribute_exists(#l) AND attribute_not_exists(#r) AND (attribute_not_exists(#v) OR #v < :v)",
            )
            .expression_attribute_names("#v", "version")
            .expression_attribute_values(":v", n(version));
        self.conditional(update, tenant, id, cursor).await
    }

    /// Marks a finished notification recalled, its tombstone entries at `cursor`. Returns where
    /// its entries were.
    pub async fn recall(&self, tenant: &str, id: &str, cursor: Cursor) -> Result<Result<Revisable, NotRevised>, StoreError> {
        let update = self
            .table
            .client
            .update_item()
            .update_expression("SET #r = :t, #l = :c")
            .condition_expression("#s = :done AND attribute_exists(#l) AND attribute_not_exists(#r)")
            .expression_attribute_values(":t", AttributeValueBool::t());
        self.conditional(update, tenant, id, cursor).await
    }

    async fn conditional(
        &self,
        update: aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder,
        tenant: &str,
        id: &str,
        cursor: Cursor,
    ) -> Result<Result<Revisable, NotRevised>, StoreError> {
        let out = update
            .table_name(&self.table.name)
            .key("pk", s(claim_key(tenant, id)))
            .key("sk", s("#"))
            .expression_attribute_names("#s", "state")
            .expression_attribute_names("#l", "logged")
            .expression_attribute_names("#r", "recalled")
            .expression_attribute_values(":done", s("done"))
            .expression_attribute_values(":c", s(cursor.to_string()))
            .return_values(ReturnValue::AllOld)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match out {
            Ok(o) => {
                let old = o.attributes.unwrap_or_default();
                Ok(parse_revisable(&old).ok_or(NotRevised::NotFound))
            }
            Err(e) => match e.into_service_error() {
                UpdateItemError::ConditionalCheckFailedException(failed) => {
                    let Some(item) = failed.item else {
                        return Ok(Err(NotRevised::NotFound));
                    };
                    Ok(Err(match parse_revisable(&item) {
                        None if get_s(&item, "state").is_ok_and(|st| st != "done") => NotRevised::InProgress,
                        None => NotRevised::NotFound,
                        Some(r) if r.recalled => NotRevised::Recalled,
                        Some(r) => NotRevised::Stale { stored: r.version },
                    }))
                }
                other => Err(StoreError::dynamo_service("UpdateItem", other)),
            },
        }
    }

    /// The stored preferences documents of the user and of the tenant (its defaults), as JSON
    /// text, in that order. One BatchGetItem.
    pub async fn preferences(&self, tenant: &str, user: &str) -> Result<(Option<String>, Option<String>), StoreError> {
        let (mut mine, defaults) = self.preferences_of(tenant, &[user]).await?;
        Ok((mine.remove(user), defaults))
    }

    /// The documents of each of `users` that has one, and the tenant's defaults, in one batch
    /// read (of 100 keys a request). Every key is answered: a document left unprocessed by a
    /// throttled read would pass for none, and the tenant's defaults would apply instead.
    pub async fn preferences_of(&self, tenant: &str, users: &[&str]) -> Result<(HashMap<String, String>, Option<String>), StoreError> {
        let defaults = prefs_key(tenant, None);
        let mut keys = vec![(defaults.clone(), "#".to_owned())];
        keys.extend(users.iter().map(|u| (prefs_key(tenant, Some(u)), "#".to_owned())));
        let user_of: HashMap<String, &str> = users.iter().map(|u| (prefs_key(tenant, Some(u)), *u)).collect();
        let (mut docs, mut tenant_doc) = (HashMap::new(), None);
        for item in self.table.batch_get_all(&keys, "pk, prefsJson").await? {
            let (Ok(pk), Ok(doc)) = (get_s(&item, "pk"), get_s(&item, "prefsJson")) else {
                continue;
            };
            if pk == defaults {
                tenant_doc = Some(doc.to_owned());
            } else if let Some(user) = user_of.get(pk) {
                docs.insert((*user).to_owned(), doc.to_owned());
            }
        }
        Ok((docs, tenant_doc))
    }

    /// Stores a preferences document: the user's, or the tenant's defaults (`user: None`).
    pub async fn put_preferences(&self, tenant: &str, user: Option<&str>, doc: &str) -> Result<(), StoreError> {
        self.table
            .client
            .put_item()
            .table_name(&self.table.name)
            .item("pk", s(prefs_key(tenant, user)))
            .item("sk", s("#"))
            .item("prefsJson", s(doc))
            .send()
            .await
            .map_err(|e| StoreError::dynamo("PutItem", e))?;
        Ok(())
    }
}

fn prefs_key(tenant: &str, user: Option<&str>) -> String {
    match user {
        Some(u) => format!("pf#{tenant}#{u}"),
        None => format!("pf#{tenant}"),
    }
}

/// `true` as an attribute value.
struct AttributeValueBool;

impl AttributeValueBool {
    fn t() -> aws_sdk_dynamodb::types::AttributeValue {
        aws_sdk_dynamodb::types::AttributeValue::Bool(true)
    }
}

fn parse_revisable(item: &Item) -> Option<Revisable> {
    let logged = get_s(item, "logged").ok()?.parse::<Cursor>().ok()?;
    let topics = get_list(item, "topics").iter().filter_map(|t| Group::parse(t).ok()).collect();
    Some(Revisable {
        logged,
        topics,
        version: get_n(item, "version").map_or(1, |v| v.max(1) as u64),
        recalled: matches!(item.get("recalled"), Some(aws_sdk_dynamodb::types::AttributeValue::Bool(true))),
    })
}

/// The attributes [`super::Idempotency::finish_logged`] adds to a claim: where its entries are.
pub(crate) fn logged_attributes(cursor: Cursor, topics: &[Group]) -> [(String, aws_sdk_dynamodb::types::AttributeValue); 2] {
    let names: Vec<String> = topics.iter().map(Group::to_string).collect();
    [("logged".into(), s(cursor.to_string())), ("topics".into(), list(&names))]
}
