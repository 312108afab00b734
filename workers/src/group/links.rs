//! The owner of the worker's peer and dealer links: it holds their lane pumps
//! (`marill_transport::Mux`) for the group's lifetime, while each lane is owned by the session
//! that runs on it, and watches the peer link: a frame the peer sends outside the lanes (a
//! restarted peer's hello, before the pair has started afresh) or a failure of the link stops
//! the group at once — the peer's lane states are gone, so this worker restarts too (a
//! provider then prepares fresh shares) instead of failing each session later.

use super::supervisor::SupervisorMsg;
use marill_transport::Mux;
use ractor::{Actor, ActorProcessingErr, ActorRef};

/// The links' owner.
pub struct Links;

/// What it starts with: the pumps (the peer link's first) and whom to tell.
pub struct LinksArgs {
    /// the peer link's pump, then the dealer link's
    pub muxes: Vec<Mux>,
    /// the supervisor
    pub sup: ActorRef<SupervisorMsg>,
}

impl Actor for Links {
    type Msg = ();
    type State = Vec<Mux>;
    type Arguments = LinksArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<()>,
        mut a: LinksArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        if let Some(events) = a.muxes.first_mut().and_then(Mux::take_events) {
            let sup = a.sup;
            // ends when the pump does (its sender dropped)
            std::thread::Builder::new()
                .name("peer-watch".into())
                .spawn(move || {
                    if let Ok(ev) = events.recv() {
                        let _ = sup.cast(SupervisorMsg::Fatal(format!("peer link: {ev}")));
                    }
                })?;
        }
        Ok(a.muxes)
    }
}
