//! Marill's client library: what an application links to run a private inference. It runs the
//! public prefix in plaintext ([`runner::PublicPrefix`]), encodes and splits the hidden state
//! into the two parties' shares ([`shares`]), and talks to the private suffix through a
//! [`runner::SuffixRunner`]: [`cluster::KafkaRunner`] submits each step as a job on Kafka,
//! its shares sealed to the two trust domains with the session's secret, and reads and opens
//! the result; [`direct::DirectRunner`] talks to one provider and one helper over encrypted
//! links (the direct mode). It imports the job schema (`marill-proto`) and the Kafka clients
//! (`marill-kafka`), never the coordinator.

pub mod cluster;
pub mod direct;
pub mod runner;
pub mod shares;
