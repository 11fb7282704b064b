//! The floor of a Rust Lambda cold start: `lambda_runtime` answering every event with its input,
//! on the same tokio runtime flavour, profile and dependency versions as `herald`. It builds no
//! SDK configuration, no clients and no logging, so `bench/init_all.py` can put each Herald
//! function's init next to what any Rust function pays just to reach the first `next` request.

use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde_json::Value;

fn main() -> Result<(), Error> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(lambda_runtime::run(service_fn(|event: LambdaEvent<Value>| async move {
            Ok::<Value, Error>(event.payload)
        })))
}
