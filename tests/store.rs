//! The data layer's handling of `UnprocessedItems`, against moto. DynamoDB leaves items of a
//! BatchWriteItem unprocessed under throttling and reports them in a successful response; moto
//! never does, so an SDK interceptor (the SDK's own extension point, not a stand-in for DynamoDB)
//! withholds items from the request moto receives and reports them back as unprocessed. An item
//! that is not retried is then really missing from the table.

use std::sync::{Arc, Mutex};

use aws_sdk_dynamodb::config::interceptors::{BeforeDeserializationInterceptorContextMut, BeforeTransmitInterceptorContextMut};
use aws_sdk_dynamodb::config::{ConfigBag, Intercept, RuntimeComponents};
use herald::domain::config::Tables;
use herald::domain::cursor::Cursor;
use herald::domain::groups::Group;
use herald::domain::notification::{Content, LogEntry};
use herald::io::store::{Store, StoreError};
use herald_e2e::*;
use serde_json::{Value, json};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// For the first `failing_calls` BatchWriteItem calls: takes the last `withhold` items out of the
/// request (keeping at least one, as an empty batch is invalid) and reports them unprocessed.
/// Clones share their state, so the test keeps one to inspect after the client owns another.
#[derive(Debug, Clone)]
struct LeaveUnprocessed {
    withhold: usize,
    /// When true, every item of the request is also reported unprocessed (moto still writes
    /// what it got): a table that never catches up.
    forever: bool,
    failing_calls: Arc<Mutex<usize>>,
    held: Arc<Mutex<Option<Value>>>,
    /// Item count of every BatchWriteItem request, as sent.
    batches: Arc<Mutex<Vec<usize>>>,
}

impl LeaveUnprocessed {
    fn new(withhold: usize, failing_calls: usize, forever: bool) -> Self {
        Self {
            withhold,
            forever,
            failing_calls: Arc::new(Mutex::new(failing_calls)),
            held: Arc::new(Mutex::new(None)),
            batches: Arc::new(Mutex::new(Vec::new())),
        }
    }
}

impl Intercept for LeaveUnprocessed {
    fn name(&self) -> &'static str {
        "LeaveUnprocessed"
    }

    fn modify_before_signing(
        &self,
        context: &mut BeforeTransmitInterceptorContextMut<'_>,
        _: &RuntimeComponents,
        _: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let request = context.request_mut();
        if request.headers().get("x-amz-target") != Some("DynamoDB_20120810.BatchWriteItem") {
            return Ok(());
        }
        let mut doc: Value = serde_json::from_slice(request.body().bytes().ok_or("streaming body")?)?;
        let (table, items) = match doc["RequestItems"].as_object_mut().and_then(|m| m.iter_mut().next()) {
            Some((table, Value::Array(items))) => (table.clone(), items),
            _ => return Err("unexpected BatchWriteItem shape".into()),
        };
        self.batches.lock().unwrap().push(items.len());
        let mut failing = self.failing_calls.lock().unwrap();
        if *failing == 0 {
            return Ok(());
        }
        *failing -= 1;
        let unprocessed = if self.forever {
            items.clone()
        } else {
            let keep = items.len().saturating_sub(self.withhold).max(1);
            items.split_off(keep)
        };
        *self.held.lock().unwrap() = Some(json!({ table: unprocessed }));
        let body = serde_json::to_vec(&doc)?;
        request.headers_mut().insert("content-length", body.len().to_string());
        *request.body_mut() = body.into();
        Ok(())
    }

    fn modify_before_deserialization(
        &self,
        context: &mut BeforeDeserializationInterceptorContextMut<'_>,
        _: &RuntimeComponents,
        _: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if let Some(unprocessed) = self.held.lock().unwrap().take() {
            let body = serde_json::to_vec(&json!({ "UnprocessedItems": unprocessed }))?;
            let response = context.response_mut();
            response.headers_mut().remove("x-amz-crc32");
            response.headers_mut().insert("content-length", body.len().to_string());
            *response.body_mut() = body.into();
        }
        Ok(())
    }
}

async fn store_with(interceptor: &LeaveUnprocessed) -> Store {
    let conf = aws_sdk_dynamodb::config::Builder::from(&sdk().await)
        .interceptor(interceptor.clone())
        .build();
    let tables = Tables {
        connections: table("ConnectionsTable"),
        notifications: table("NotificationsTable"),
    };
    Store::new(aws_sdk_dynamodb::Client::from_conf(conf), &tables)
}

/// `n` log entries of one user's topic, cursors in order.
fn entries(user: &str, n: u64) -> Vec<(Group, LogEntry)> {
    (0..n)
        .map(|i| {
            let entry = LogEntry {
                id: format!("n{i}"),
                cursor: Cursor::from_parts(1_795_428_000_000 + i, 0),
                topic: format!("user:{user}"),
                content: Content {
                    event: "store.test".into(),
                    ..Content::default()
                },
                created_at: "2026-11-23T10:00:00Z".into(),
            };
            (Group::user(user), entry)
        })
        .collect()
}

fn far_future() -> i64 {
    chrono::Utc::now().timestamp() + 86_400
}

#[tokio::test]
async fn unprocessed_items_are_retried_until_written_in_batches_of_at_most_25() {
    let (tenant, user) = (unique("acme"), unique("u"));
    let leave = LeaveUnprocessed::new(10, 3, false);
    let store = store_with(&leave).await;
    store.log.append(&tenant, &entries(&user, 60), far_future()).await.expect("append");

    let page = store
        .log
        .after(&tenant, &Group::user(&user), &user, Cursor::MIN, 100)
        .await
        .expect("read");
    let ids: Vec<String> = page.entries.iter().map(|e| e.id.clone()).collect();
    assert_eq!(
        ids,
        (0..60).map(|i| format!("n{i}")).collect::<Vec<_>>(),
        "every entry written, once, in order"
    );
    let batches = leave.batches.lock().unwrap().clone();
    assert!(batches.iter().all(|&n| n <= 25), "{batches:?}");
    // The first chunk of 25 lost 10, then (keeping one item each time) 9, then 8: each remainder
    // was sent again, until the whole chunk was written; only then came the next chunks.
    assert_eq!(batches, [25, 10, 9, 8, 25, 10]);
}

#[tokio::test]
async fn a_batch_that_stays_unprocessed_fails_loudly_instead_of_losing_items() {
    let (tenant, user) = (unique("acme"), unique("u"));
    let leave = LeaveUnprocessed::new(0, usize::MAX, true);
    let store = store_with(&leave).await;
    let err = store
        .log
        .append(&tenant, &entries(&user, 3), far_future())
        .await
        .expect_err("must fail");
    assert!(matches!(err, StoreError::Unprocessed { count: 3, .. }), "{err}");
    assert_eq!(leave.batches.lock().unwrap().len(), 8, "a bounded number of attempts");
}

/// A connection's first complete resume marks it caught up (its live frames carry cursors from
/// then on): the item, then every membership row. A row a leave removed meanwhile is not written
/// back, and a second mark does nothing.
#[tokio::test]
async fn marking_a_connection_caught_up_marks_its_rows_and_never_revives_a_removed_one() {
    let (tenant, user) = (unique("acme"), unique("u"));
    let store = store_with(&LeaveUnprocessed::new(0, 0, false)).await;
    let conn = herald::io::store::ConnectionRecord {
        id: unique("conn"),
        user: user.clone(),
        tenant: tenant.clone(),
        roles: Vec::new(),
        groups: Vec::new(),
        connected_at: chrono::Utc::now().timestamp_millis(),
        batch: false,
    };
    let group = |name: &str| Group::parse(name).expect("a group");
    let kept = [Group::user(&user), group("tenant"), group("course:1")];
    let left = group("course:2");
    let all: Vec<Group> = kept.iter().cloned().chain([left.clone()]).collect();
    store.connections.open(&conn, &all, 1, 3600).await.expect("open");
    let member = |g: Group| {
        let (store, tenant, id) = (store.clone(), tenant.clone(), conn.id.clone());
        async move {
            let page = store.connections.members_page(&g.key(&tenant), 0, None, 10).await.expect("members");
            page.members.into_iter().find(|m| m.connection_id == id)
        }
    };
    assert!(!member(kept[0].clone()).await.expect("a member").caught_up);
    // A leave's row delete has landed, its item update not yet.
    store
        .connections
        .remove_rows(&[herald::io::store::MemberRow {
            connection: conn.id.clone(),
            group_key: left.key(&tenant),
            shard: 0,
        }])
        .await
        .expect("remove");

    assert!(store.connections.mark_caught_up(&conn.id).await.expect("mark"));
    for g in &kept {
        assert!(member(g.clone()).await.is_some_and(|m| m.caught_up), "{g} not marked");
    }
    assert!(member(left).await.is_none(), "the removed row was written back");
    assert!(
        store
            .connections
            .memberships_of(&conn.id)
            .await
            .expect("read")
            .is_some_and(|m| m.caught_up)
    );
    assert!(!store.connections.mark_caught_up(&conn.id).await.expect("mark"), "marked once");
    assert!(!store.connections.mark_caught_up(&unique("gone")).await.expect("mark"), "no item");
}

/// Issue #31 (lean writes): the log stores a notification's content deflated when that takes
/// fewer write units. A 2 KB grading notification (structured data, keys repeated) lands in an
/// item under 1 KB, a small one stays plain JSON, and both read back as they were sent.
#[tokio::test]
async fn a_two_kilobyte_notification_is_logged_in_one_write_unit_and_reads_back_whole() {
    let (tenant, user) = (unique("acme"), unique("u"));
    let store = store_with(&LeaveUnprocessed::new(0, 0, false)).await;
    let grades: Vec<Value> = (0..27)
        .map(|i| json!({"assignment": format!("Essay {i}"), "course": "History 101", "score": 60 + i, "max": 100}))
        .collect();
    let mut log = entries(&user, 2);
    log[0].1.content = Content {
        title: Some("Grades posted".into()),
        data: Some(json!({ "grades": grades })),
        ..Content::default()
    };
    let big = serde_json::to_string(&log[0].1.content).expect("json");
    assert!(big.len() > 1900, "a 2 KB notification: {}", big.len());
    store.log.append(&tenant, &log, far_future()).await.expect("append");

    let raw = dynamodb()
        .await
        .query()
        .table_name(table("NotificationsTable"))
        .key_condition_expression("pk = :pk")
        .expression_attribute_values(":pk", aws_sdk_dynamodb::types::AttributeValue::S(format!("n#{tenant}#user:{user}")))
        .send()
        .await
        .expect("query");
    let items = raw.items();
    assert_eq!(items.len(), 2);
    // DynamoDB's item size: attribute names plus values (strings and binaries by their bytes).
    let size = |item: &std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue>| -> usize {
        item.iter()
            .map(|(k, v)| {
                k.len()
                    + v.as_s()
                        .map(String::len)
                        .or_else(|_| v.as_b().map(|b| b.as_ref().len()))
                        .unwrap_or(21)
            })
            .sum()
    };
    assert!(
        items[0].contains_key("contentZ") && !items[0].contains_key("content"),
        "{:?}",
        items[0].keys()
    );
    assert!(size(&items[0]) <= 1024, "one write unit: {} bytes", size(&items[0]));
    assert!(items[1].contains_key("content"), "a small notification stays plain JSON");

    let page = store
        .log
        .after(&tenant, &Group::user(&user), &user, Cursor::MIN, 10)
        .await
        .expect("read");
    let read: Vec<&Content> = page.entries.iter().map(|e| &e.content).collect();
    assert_eq!(read, vec![&log[0].1.content, &log[1].1.content]);
}

/// Every DynamoDB operation a client sends, by name.
#[derive(Debug, Clone, Default)]
struct Operations(Arc<Mutex<Vec<String>>>);

impl Intercept for Operations {
    fn name(&self) -> &'static str {
        "Operations"
    }

    fn modify_before_signing(
        &self,
        context: &mut BeforeTransmitInterceptorContextMut<'_>,
        _: &RuntimeComponents,
        _: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let target = context.request().headers().get("x-amz-target").unwrap_or_default();
        let op = target.rsplit('.').next().unwrap_or_default().to_owned();
        self.0.lock().unwrap().push(op);
        Ok(())
    }
}

/// A read receipt that would move backwards is refused by its conditional write, and the answer
/// is the cursor that refused it, taken from that write: one request, no second read (which
/// cost a read unit and could answer a cursor newer than the one that refused).
#[tokio::test]
async fn a_refused_receipt_answers_the_stored_cursor_in_one_request() {
    let ops = Operations::default();
    let conf = aws_sdk_dynamodb::config::Builder::from(&sdk().await)
        .interceptor(ops.clone())
        .build();
    let tables = Tables {
        connections: table("ConnectionsTable"),
        notifications: table("NotificationsTable"),
    };
    let store = Store::new(aws_sdk_dynamodb::Client::from_conf(conf), &tables);
    let (group, user) = (format!("{}#group:room", unique("acme")), unique("u"));
    let newer = Cursor::from_parts(1_795_428_000_500, 0);
    let older = Cursor::from_parts(1_795_428_000_100, 0);

    assert_eq!(
        store.receipts.advance(&group, &user, newer, far_future()).await.expect("advance"),
        (newer, true)
    );
    ops.0.lock().unwrap().clear();
    assert_eq!(
        store.receipts.advance(&group, &user, older, far_future()).await.expect("advance"),
        (newer, false)
    );
    assert_eq!(*ops.0.lock().unwrap(), ["UpdateItem"]);
}
