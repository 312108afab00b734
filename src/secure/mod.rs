//! Private inference with a real model in one process: the client runs the public prefix with
//! candle, the provider and helper parties run the private suffix under 2PC on two threads over
//! the in-memory channel with an on-demand dealer, and only the client reconstructs.

pub mod seeds;
pub mod session;
