//! The two-party protocols. Each module's header states rounds, online bytes per element (per
//! party) and dealer bytes per element. All take `&mut Party<T>` and this party's shares.

pub mod cmp;
pub mod lut;
pub mod matmul;
pub mod max;
pub mod mul;
pub mod nonlinear;
pub mod norm;
pub mod open;
pub mod rotary;
pub mod softmax;
pub mod swiglu;
pub mod trunc;
