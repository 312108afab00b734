//! The owner of the worker's peer and dealer links: it holds their lane pumps
//! (`marill_transport::Mux`) for the group's lifetime, while each lane is owned by the session
//! that runs on it. Stopping it (with the group) stops the pumps and closes the links, after
//! every session's lane has been dropped.

use marill_transport::Mux;
use ractor::{Actor, ActorProcessingErr, ActorRef};

/// The links' owner.
pub struct Links;

impl Actor for Links {
    type Msg = ();
    type State = Vec<Mux>;
    type Arguments = Vec<Mux>;

    async fn pre_start(
        &self,
        _myself: ActorRef<()>,
        muxes: Vec<Mux>,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(muxes)
    }
}
