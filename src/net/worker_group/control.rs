//! The coordinator's control link on its own thread (a zeromq socket serves one thread): every
//! message received is handed to the supervisor; every reply the actors put in the outbox is
//! sent. A message that does not decode is answered with an error naming why and the link
//! keeps serving. The thread ends when the supervisor has stopped, after sending what is left
//! in the outbox.

use super::supervisor::SupervisorMsg;
use marill_proto::Message;
use marill_transport::Link;
use ractor::{ActorRef, ActorStatus};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::time::Duration;

/// Where actors put their replies to the coordinator.
pub type Outbox = Sender<Message>;

/// A new outbox and the receiving end the control thread drains.
pub fn outbox() -> (Outbox, Receiver<Message>) {
    channel()
}

/// How long the control thread waits for the coordinator before it looks at its outbox.
const TICK: Duration = Duration::from_millis(2);

/// Starts the control thread; it returns an error when the link failed.
pub fn spawn(
    link: Link,
    outgoing: Receiver<Message>,
    sup: ActorRef<SupervisorMsg>,
) -> std::io::Result<std::thread::JoinHandle<anyhow::Result<()>>> {
    std::thread::Builder::new()
        .name("control".into())
        .spawn(move || serve(link, outgoing, sup))
}

fn serve(
    link: Link,
    outgoing: Receiver<Message>,
    sup: ActorRef<SupervisorMsg>,
) -> anyhow::Result<()> {
    loop {
        let stopped = matches!(
            sup.get_status(),
            ActorStatus::Stopping | ActorStatus::Stopped
        );
        while let Ok(m) = outgoing.try_recv() {
            link.send(&marill_proto::encode(&m))?;
        }
        if stopped {
            // the replies of steps still ending, then the thread ends
            while let Ok(m) = outgoing.recv_timeout(Duration::from_millis(200)) {
                link.send(&marill_proto::encode(&m))?;
            }
            return Ok(());
        }
        let Some(bytes) = link.try_recv(TICK)? else {
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
                link.send(&marill_proto::encode(&Message::Error(why)))?;
            }
        }
    }
}
