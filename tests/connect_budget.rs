//! Issue "a hostile user cannot hurt anyone else": `$connect` floods had no per-client limit; a
//! reconnect loop costs two invocations and a dozen writes a cycle. A user's connects are
//! budgeted (`HERALD_CONNECT_RATE`/`BURST`, 2 a second, bursts of 20).
//! Its own test binary: its stack lifts the connection cap (20 by default, as the burst), so
//! what holds the flood back here can only be the budget.

use std::time::Instant;

use herald_e2e::*;

const ENV: &[(&str, &str)] = &[("HERALD_MAX_CONNECTIONS_PER_USER", "1000")];

/// 40 connects of one user at once: about 20 get through, the rest are refused with 429, and
/// another user connects meanwhile.
#[tokio::test]
async fn a_users_connect_flood_is_held_to_the_connect_budget() {
    stack_with(ENV);
    let tenant = unique("acme");
    let user = unique("flood");
    let url = format!("{}?token={}", stack().ready.websocket_url, token(&user, &tenant, &[], &[]));
    let started = Instant::now();
    let attempts = futures_util::future::join_all((0..40).map(|_| connect_raw(&url, None))).await;
    let elapsed = started.elapsed().as_secs_f64();
    let (mut open, mut refused) = (Vec::new(), 0);
    for a in attempts {
        match a {
            Ok(ws) => open.push(ws),
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
                assert_eq!(resp.status().as_u16(), 429);
                refused += 1;
            }
            Err(e) => panic!("{e}"),
        }
    }
    // The burst, what the rate refilled while the connects were answered, and one at the edge.
    let bound = 20.0 + 2.0 * elapsed + 1.0;
    assert!(open.len() as f64 <= bound, "{} of 40 connected in {elapsed:.1} s", open.len());
    assert!(refused > 0);
    Client::connect(&unique("other"), &tenant, &[], &[]).await;
}
