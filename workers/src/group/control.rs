//! The coordinator's control link on its own thread (a zeromq socket serves one thread): every
//! message received is handed to the supervisor; every reply the actors put in the outbox is
//! sent. A message that does not decode is answered with an error naming why and the link
//! keeps serving. The thread sleeps until the coordinator sends or an actor replies (a doorbell
//! beside the link) or, at most, [`TICK`] has passed, when it looks whether the supervisor still
//! runs: an idle worker wakes 20 times a second (it polled every 2 ms before). It ends when the
//! supervisor has stopped, after sending what is left in the outbox.

use super::supervisor::SupervisorMsg;
use marill_proto::ControlMessage;
use marill_transport::{doorbell, Doorbell, Link, Ringer};
use ractor::{ActorRef, ActorStatus};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::time::Duration;

/// Where actors put their replies to the coordinator: each reply rings the control thread's
/// doorbell, which waits for the link and the bell together.
#[derive(Clone)]
pub struct Outbox {
    tx: Sender<ControlMessage>,
    bell: Ringer,
}

impl Outbox {
    /// Hands `m` to the control thread to send (an error: the thread has ended).
    pub fn send(&self, m: ControlMessage) -> Result<(), OutboxClosed> {
        self.tx.send(m).map_err(|_| OutboxClosed)?;
        self.bell.ring();
        Ok(())
    }
}

/// The control thread has ended: nothing handed to the outbox is sent any more.
#[derive(Debug)]
pub struct OutboxClosed;

/// What the control thread drains: the replies and the bell they ring.
pub struct Outgoing {
    rx: Receiver<ControlMessage>,
    bell: Doorbell,
}

/// A new outbox and the receiving end the control thread drains.
pub fn outbox() -> std::io::Result<(Outbox, Outgoing)> {
    let (tx, rx) = channel();
    let (ringer, bell) = doorbell()?;
    Ok((Outbox { tx, bell: ringer }, Outgoing { rx, bell }))
}

/// How long the control thread waits for the coordinator or a reply before it looks whether
/// the supervisor still runs.
const TICK: Duration = Duration::from_millis(50);

/// Starts the control thread; it returns an error when the link failed.
pub fn spawn(
    link: Link,
    outgoing: Outgoing,
    sup: ActorRef<SupervisorMsg>,
) -> std::io::Result<std::thread::JoinHandle<anyhow::Result<()>>> {
    std::thread::Builder::new()
        .name("control".into())
        .spawn(move || serve(link, outgoing, sup))
}

fn serve(link: Link, outgoing: Outgoing, sup: ActorRef<SupervisorMsg>) -> anyhow::Result<()> {
    loop {
        let stopped = matches!(
            sup.get_status(),
            ActorStatus::Stopping | ActorStatus::Stopped
        );
        while let Ok(m) = outgoing.rx.try_recv() {
            link.send(&marill_proto::encode(&m))?;
        }
        if stopped {
            // the replies of steps still ending, then the thread ends
            while let Ok(m) = outgoing.rx.recv_timeout(Duration::from_millis(200)) {
                link.send(&marill_proto::encode(&m))?;
            }
            return Ok(());
        }
        // a reply rings the bell: it is sent at the loop's next turn
        if !link.wait_or_bell(&outgoing.bell, TICK)?.link {
            continue;
        }
        let Some(bytes) = link.try_recv(Duration::ZERO)? else {
            continue;
        };
        match marill_proto::decode(&bytes) {
            Ok(m) => {
                if sup.cast(SupervisorMsg::Control(m)).is_err() {
                    continue; // stopping: the loop's next turn ends the thread
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "undecodable message from the coordinator");
                let why = format!("undecodable message: {e}");
                link.send(&marill_proto::encode(&ControlMessage::Error(why)))?;
            }
        }
    }
}
