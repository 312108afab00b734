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

/// What kind of failure an error is, in words that carry nothing about the data: the only
/// part of a failure that may leave the two workers (to the coordinator, the results topic and
/// logs above debug level). The detail of an [`MpcError`] can depend on secret values (e.g. the
/// count of inputs outside a declared range, opened to both workers by the range check) and
/// stays inside the workers, at debug level.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FailureKind {
    /// an input was outside an op's declared range (the result would have been wrong)
    OutOfRange,
    /// the peer party went away, timed out or sent something malformed
    PeerLost,
    /// the request itself is invalid (shapes, parameters)
    BadInput,
    /// correlated randomness was missing, mismatched or already used
    Correlation,
}

impl FailureKind {
    /// The category as a fixed public reason.
    pub fn reason(self) -> &'static str {
        match self {
            FailureKind::OutOfRange => "an input is outside a declared range",
            FailureKind::PeerLost => "the peer party was lost or timed out",
            FailureKind::BadInput => "invalid input",
            FailureKind::Correlation => "correlated randomness unavailable",
        }
    }
}

impl std::fmt::Display for FailureKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.reason())
    }
}

impl MpcError {
    /// The error's public category (see [`FailureKind`]).
    pub fn kind(&self) -> FailureKind {
        match self {
            MpcError::Channel(_) | MpcError::MalformedMessage { .. } => FailureKind::PeerLost,
            MpcError::OutOfRange { .. } => FailureKind::OutOfRange,
            MpcError::Fixed(crate::fixed::FixedError::BadFracBits(_)) => FailureKind::BadInput,
            MpcError::Fixed(_) => FailureKind::OutOfRange,
            MpcError::Correlation(_) => FailureKind::Correlation,
            MpcError::Shape { .. } | MpcError::InvalidParameter { .. } => FailureKind::BadInput,
        }
    }
}

/// Shorthand result type.
pub type Result<T> = std::result::Result<T, MpcError>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixed::FixedError;

    /// The public reasons name the category only: no count, value, index or bound of the
    /// data-dependent detail reaches them.
    #[test]
    fn public_reasons_carry_no_data_dependent_detail() {
        let errors = [
            MpcError::OutOfRange {
                op: "silu",
                count: 31337,
                min: -12.5,
                max: 12.5,
            },
            MpcError::Fixed(FixedError::NotFinite { index: 424242 }),
            MpcError::Fixed(FixedError::OutOfRange {
                index: 424243,
                min: -99991.0,
                max: 99991.0,
                what: "rmsnorm",
            }),
        ];
        for e in &errors {
            let detail = e.to_string();
            let public = e.kind().reason();
            assert_eq!(e.kind(), FailureKind::OutOfRange);
            for secret in ["31337", "12.5", "424242", "424243", "99991"] {
                assert!(!public.contains(secret), "{public}");
            }
            assert!(detail.len() > public.len() / 2, "{detail}");
        }
        assert!(errors[0].to_string().contains("31337"));
    }
}
