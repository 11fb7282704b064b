//! `bootstrap` of every Herald Lambda function. Each function in `template.yaml` names its
//! handler in `Handler:`; Lambda passes it to the process as `_HANDLER` (a custom runtime is free
//! to read it however it likes). Outside Lambda the handler can be given as the first argument:
//! `herald dispatch`. The logic lives in [`herald::handlers`].

use herald::handlers::{self, HandlerName};

fn main() -> Result<(), herald::BoxError> {
    let name = std::env::var("_HANDLER")
        .ok()
        .or_else(|| std::env::args().nth(1))
        .unwrap_or_default();
    // Parsed before the runtime starts, so a typo in the template fails init with the list of
    // names instead of a panic deep in a handler.
    let handler: HandlerName = name.parse()?;
    // One thread: a Lambda instance handles one invocation at a time, and at the template's
    // 256-1,024 MB it has under one vCPU, so worker threads would only hand tasks and wakeups
    // to each other (context switches are most of a multi-threaded instance's kernel time).
    // Concurrent I/O (a fan-out's posts, parallel writes) still overlaps on the one thread.
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(handlers::run_named(handler))
}
