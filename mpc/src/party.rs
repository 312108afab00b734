//! A party's protocol context: its role, its channel to the peer, its correlation store and
//! the fixed-point setting. Ops take `&mut Party<T>` and their shares.

use crate::channel::{Channel, CommStats, Transport};
use crate::correlation::{
    CorrRequest, CorrelationStore, LutMaterial, MaskMaterial, MatTriple, Material, MulTriples,
    NormTriple, SignedLutMaterial, SquarePairs, TruncWeightMaterial, WeightTriple,
};
use crate::error::Result;
use crate::fixed::FixedPoint;
use crate::ring::RingTensor;

/// Which computing party this is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum PartyId {
    /// party 0 (the provider worker in Marill)
    P0,
    /// party 1 (the helper worker in Marill)
    P1,
}

impl PartyId {
    /// 0 or 1.
    pub fn index(self) -> usize {
        match self {
            PartyId::P0 => 0,
            PartyId::P1 => 1,
        }
    }

    /// The peer.
    pub fn other(self) -> PartyId {
        match self {
            PartyId::P0 => PartyId::P1,
            PartyId::P1 => PartyId::P0,
        }
    }
}

/// One party's state for running protocols.
pub struct Party<T: Transport> {
    /// role
    pub id: PartyId,
    /// channel to the peer
    pub chan: Channel<T>,
    /// correlations from the dealer
    pub store: CorrelationStore,
    /// fixed-point parameters
    pub fx: FixedPoint,
}

macro_rules! take_kind {
    ($name:ident, $variant:ident, $ty:ty) => {
        #[doc = concat!("Consumes the next correlation as [`", stringify!($ty), "`].")]
        pub fn $name(&mut self, req: CorrRequest) -> Result<$ty> {
            match self.store.take(&req)? {
                Material::$variant(m) => Ok(m),
                other => Err(crate::correlation::CorrelationError::Mismatch {
                    id: self.store.watermark().saturating_sub(1),
                    wanted: req.describe(),
                    found: other.kind_name().into(),
                }
                .into()),
            }
        }
    };
}

impl<T: Transport> Party<T> {
    /// A party context.
    pub fn new(id: PartyId, transport: T, store: CorrelationStore, fx: FixedPoint) -> Self {
        Self {
            id,
            chan: Channel::new(transport),
            store,
            fx,
        }
    }

    /// True for party 0 (the one that adds public constants to its share).
    pub fn is_p0(&self) -> bool {
        self.id == PartyId::P0
    }

    /// Communication counters so far.
    pub fn comm(&self) -> CommStats {
        self.chan.stats()
    }

    /// This party's share of a public constant: the constant for P0, zero for P1.
    pub fn public_share(&self, c: u64) -> u64 {
        if self.is_p0() {
            c
        } else {
            0
        }
    }

    /// Adds a public value to a share in place (only P0 adds).
    pub fn add_public(&self, share: &mut u64, c: u64) {
        if self.is_p0() {
            *share = share.wrapping_add(c);
        }
    }

    take_kind!(take_mul, Mul, MulTriples);
    take_kind!(take_square, Square, SquarePairs);
    take_kind!(take_mat, Mat, MatTriple);
    take_kind!(take_weight_mask, WeightMask, RingTensor);
    take_kind!(take_weight_triple, Weight, WeightTriple);
    take_kind!(take_mask, Mask, MaskMaterial);
    take_kind!(take_lut, Lut, LutMaterial);
    take_kind!(take_signed_lut, SignedLut, SignedLutMaterial);
    take_kind!(take_trunc_weight, TruncWeight, TruncWeightMaterial);
    take_kind!(take_norm_triple, Norm, NormTriple);
}
