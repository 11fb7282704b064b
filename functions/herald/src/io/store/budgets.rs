//! Rate budgets' state (`ConnectionsTable`): one item per budget holding its theoretical arrival
//! time (see `budget`).
//!
//! | item | pk | sk |
//! |---|---|---|
//! | budget | `b#{key}` (`ws#{connectionId}`, `http#{tenant}#{user}`, `work#{tenant}#{user}`) | `#` |
//!
//! Every unit is one conditional UpdateItem, whose condition *is* the rule, so the Lambda
//! instances serving one connection never race: "idle" (`tat < now`: start from now) and "busy"
//! (`now <= tat <= now + tolerance`: add one interval) are exclusive, and when both fail the
//! stored TAT (returned by the failed condition) says how long to wait.

use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::ReturnValuesOnConditionCheckFailure;

use super::{Item, StoreError, Table, get_n, n, s};
use crate::domain::budget::{Budget, Decision};

/// Conditional writes one unit may take when other instances spend the same budget at once.
const ATTEMPTS: usize = 4;

#[derive(Clone, Debug)]
pub struct Budgets {
    table: Table,
}

impl Budgets {
    pub(crate) fn new(table: Table) -> Self {
        Self { table }
    }

    /// Spends one unit of `key`'s budget at `now` (epoch milliseconds).
    pub async fn spend(&self, key: &str, budget: &Budget, now: u64) -> Result<Decision, StoreError> {
        self.spend_units(key, budget, now, 1).await
    }

    /// Spends `units` at once ([`Budget::decide_units`]).
    pub async fn spend_units(&self, key: &str, budget: &Budget, now: u64, units: u64) -> Result<Decision, StoreError> {
        let step = units.max(1).saturating_mul(budget.interval_ms());
        let pk = format!("b#{key}");
        // Kept while it matters (a full bucket needs `tolerance` to drain), then left to TTL.
        let expires = (now + budget.tolerance_ms() + step) / 1000 + 3600;
        let mut stored: Option<u64> = None;
        for _ in 0..ATTEMPTS {
            let busy = stored.is_some_and(|t| t >= now);
            if let Some(Decision::Deny { retry_after_ms }) = stored.map(|t| budget.decide_units(Some(t), now, units)) {
                return Ok(Decision::Deny { retry_after_ms });
            }
            let update = self
                .table
                .client
                .update_item()
                .table_name(&self.table.name)
                .key("pk", s(pk.clone()))
                .key("sk", s("#"))
                .expression_attribute_values(":now", n(now))
                .expression_attribute_values(":exp", n(expires))
                .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
            let update = if busy {
                update
                    .update_expression("SET expiresAt = :exp ADD tat :i")
                    .condition_expression("tat BETWEEN :now AND :ceiling")
                    .expression_attribute_values(":i", n(step))
                    .expression_attribute_values(":ceiling", n(now + budget.tolerance_ms()))
            } else {
                update
                    .update_expression("SET tat = :next, expiresAt = :exp")
                    .condition_expression("attribute_not_exists(tat) OR tat < :now")
                    .expression_attribute_values(":next", n(now + step))
            };
            match update.send().await {
                Ok(_) => {
                    let tat = stored.map_or(now, |t| t.max(now)) + step;
                    return Ok(Decision::Allow { tat });
                }
                Err(e) => match e.into_service_error() {
                    UpdateItemError::ConditionalCheckFailedException(failed) => {
                        // Someone else moved it: decide again on what is stored now.
                        stored = Some(tat_of(failed.item.as_ref())?.unwrap_or(0));
                    }
                    other => {
                        return Err(StoreError::dynamo_service("UpdateItem", other));
                    }
                },
            }
        }
        // Several instances kept moving this budget under us: it is busy enough to slow down.
        Ok(Decision::Deny {
            retry_after_ms: budget.interval_ms(),
        })
    }
}

impl Budgets {
    /// Moves `key`'s TAT by `units` intervals (negative: back), once work reserved with
    /// [`Self::spend_units`] turned out to cost more or less. Not refused: the work is done.
    pub async fn adjust(&self, key: &str, budget: &Budget, units: i64) -> Result<(), StoreError> {
        if units == 0 {
            return Ok(());
        }
        let delta = units.saturating_mul(budget.interval_ms() as i64);
        let out = self
            .table
            .client
            .update_item()
            .table_name(&self.table.name)
            .key("pk", s(format!("b#{key}")))
            .key("sk", s("#"))
            .update_expression("ADD tat :d")
            .condition_expression("attribute_exists(tat)")
            .expression_attribute_values(":d", n(delta))
            .send()
            .await;
        match out {
            Ok(_) => Ok(()),
            // Expired and gone: nothing left to adjust.
            Err(e) if super::conditional_failed(&e) => Ok(()),
            Err(e) => Err(StoreError::dynamo("UpdateItem", e)),
        }
    }
}

fn tat_of(item: Option<&Item>) -> Result<Option<u64>, StoreError> {
    match item {
        Some(i) if i.contains_key("tat") => Ok(Some(get_n(i, "tat")?.max(0) as u64)),
        _ => Ok(None),
    }
}
