//! Error type of the secure-computation core.

use thiserror::Error;

/// Everything that can go wrong in a protocol run.
#[derive(Debug, Error)]
pub enum MpcError {
    /// The peer channel failed or closed.
    #[error("channel error: {0}")]
    Channel(#[from] crate::channel::ChannelError),
    /// A received message does not have the expected length/shape.
    #[error("malformed message from peer: expected {expected} bytes, got {got}")]
    MalformedMessage {
        /// bytes expected
        expected: usize,
        /// bytes received
        got: usize,
    },
    /// Tensor shapes do not fit the operation.
    #[error("shape mismatch in {op}: {detail}")]
    Shape {
        /// the operation
        op: &'static str,
        /// what did not fit
        detail: String,
    },
    /// A fixed-point value is out of the declared range or cannot be encoded.
    #[error(transparent)]
    Fixed(#[from] crate::fixed::FixedError),
    /// Correlated randomness is missing, of the wrong kind, or was already used.
    #[error(transparent)]
    Correlation(#[from] crate::correlation::CorrelationError),
    /// Secret inputs of an op fell outside its declared range (only the count is revealed,
    /// and only to say that the result would be wrong).
    #[error("{count} input(s) of {op} are outside its declared range [{min}, {max}]")]
    OutOfRange {
        /// the op
        op: &'static str,
        /// how many inputs were outside
        count: u64,
        /// declared minimum
        min: f64,
        /// declared maximum
        max: f64,
    },
    /// An operation parameter is invalid.
    #[error("invalid parameter for {op}: {detail}")]
    InvalidParameter {
        /// the operation
        op: &'static str,
        /// what is wrong
        detail: String,
    },
}

/// Shorthand result type.
pub type Result<T> = std::result::Result<T, MpcError>;
