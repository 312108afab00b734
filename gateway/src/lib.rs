//! Marill's OpenAI-compatible HTTP gateway, on the client's side of the trust boundary: it runs
//! the public prefix and sees the prompt, so it runs where the prompt may be seen (a sidecar of
//! the application, or the user's own machine), never at the provider. Each request is one
//! private session through a [`engine::RunnerFactory`] (a `KafkaRunner` over the cluster);
//! sampling happens here, on the logits only the client holds.
//!
//! [`server::router`] is the axum application: completions and chat completions (JSON or
//! server-sent events), models, health and metrics, errors in OpenAI's shape ([`error`]).

#![deny(missing_docs)]

pub mod api;
pub mod engine;
pub mod error;
pub mod keys;
pub mod metrics;
pub mod sampling;
pub mod server;
pub mod template;
pub mod text;

pub use engine::{Engine, RunnerFactory};
pub use error::ApiError;
pub use keys::ApiKeys;
pub use metrics::GatewayMetrics;
pub use server::{router, serve, shutdown_signal, GatewayConfig};
