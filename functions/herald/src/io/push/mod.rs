//! Web Push (RFC 8030, RFC 8291, RFC 8292): reaching users who have no open socket.
//!
//! - [`subscription`]: a browser's `PushSubscription`, validated (pure);
//! - [`payload`]: the notification frame cut to one push message, and the `Topic` (pure);
//! - [`ece`]: the `aes128gcm` encryption of RFC 8291 (pure);
//! - [`vapid`]: the application server's ES256 token (pure);
//! - [`sender`]: one push to one push service (I/O).
//!
//! Who is pushed to, and what happens after each answer, is `services::web_push`'s (it has
//! the store and the queue); a push to try again travels as a `queue::PushRetry`.

pub mod ece;
pub mod payload;
pub mod sender;
pub mod subscription;
pub mod vapid;

pub use sender::{PushMessage, PushOutcome, PushSender, SenderError};
pub use subscription::{
    DEFAULT_PUSH_HOSTS, EndpointPolicy, SUBSCRIPTION_DAYS, Subscription, SubscriptionError, endpoint_key, parse_endpoint,
    parse_subscription,
};
pub use vapid::{Vapid, VapidError};
