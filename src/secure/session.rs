//! A secure suffix session in one process: two party threads that keep their shares and KV
//! caches between calls, fed by the client with fresh shares per step.

use anyhow::{anyhow, bail, Result};
use marill_client::shares::{decode_output, share_hidden};
use marill_mpc::channel::{memory_pair, CommStats};
use marill_mpc::correlation::{CorrelationStore, Dealer, SharedDealer};
use marill_mpc::fixed::FixedPoint;
use marill_mpc::prg::Prg;
use marill_mpc::prg::{Purpose, Seeding};
use marill_mpc::sharing::reconstruct;
use marill_mpc::Party;
use marill_suffix::secure::{gamma_at_client, prepare, SecureSuffix};
use marill_suffix::{SuffixConfig, SuffixWeights};
use std::sync::mpsc;
use std::thread::JoinHandle;

/// A party's step: its output share, its online cost and the dealer bytes it received.
type Reply = Result<(Vec<u64>, CommStats, u64), String>;

/// The client's handle on the two parties.
pub struct Session {
    fx: FixedPoint,
    d: usize,
    to: Vec<mpsc::Sender<Vec<u64>>>,
    from: Vec<mpsc::Receiver<Reply>>,
    handles: Vec<JoinHandle<()>>,
    prg: Prg,
    comm: CommStats,
    /// correlation bytes both parties received for the steps so far
    dealer_bytes: u64,
    /// γ of the final norm when the client applies it
    gamma: Option<Vec<f32>>,
}

impl Session {
    /// Prepares the weights (provider side), starts both parties and loads the suffix (the
    /// one-time weight masking).
    pub fn start(cfg: &SuffixConfig, w: &SuffixWeights, seeding: Seeding) -> Result<Self> {
        let fx = FixedPoint::default();
        let prepared =
            prepare(cfg, w, fx, seeding.seed(Purpose::WeightSplit)).map_err(|e| anyhow!("{e}"))?;
        let dealer = SharedDealer::new(Dealer::new(seeding.seed(Purpose::Dealer)));
        let (t0, t1) = memory_pair();
        let mut to = Vec::new();
        let mut from = Vec::new();
        let mut handles = Vec::new();
        for (prep, t) in prepared.into_iter().zip([t0, t1]) {
            let id = prep.party;
            let store = CorrelationStore::with_supplier(
                id,
                dealer.party_seed(id),
                Box::new(dealer.clone()),
            );
            let (in_tx, in_rx) = mpsc::channel::<Vec<u64>>();
            let (out_tx, out_rx) = mpsc::channel::<Reply>();
            let cfg = cfg.clone();
            handles.push(std::thread::spawn(move || {
                futures::executor::block_on(async move {
                    let mut p = Party::new(id, t, store, fx);
                    let mut sfx = match SecureSuffix::load(&mut p, &cfg, prep).await {
                        Ok(s) => s,
                        Err(e) => {
                            let _ = out_tx.send(Err(format!("party {id:?}: load: {e}")));
                            return;
                        }
                    };
                    while let Ok(x) = in_rx.recv() {
                        let before = p.comm();
                        let dealer_before = p.store.stats().explicit_bytes;
                        let r = sfx
                            .forward(&mut p, &x)
                            .await
                            .map(|y| {
                                let dealer = p.store.stats().explicit_bytes - dealer_before;
                                (y, p.comm().since(&before), dealer)
                            })
                            .map_err(|e| format!("party {id:?}: {e}"));
                        let failed = r.is_err();
                        if out_tx.send(r).is_err() || failed {
                            return;
                        }
                    }
                })
            }));
            to.push(in_tx);
            from.push(out_rx);
        }
        Ok(Self {
            fx,
            d: cfg.d_model,
            to,
            from,
            handles,
            prg: Prg::new(seeding.seed(Purpose::InputMasks(0)), 0),
            comm: CommStats::default(),
            dealer_bytes: 0,
            gamma: gamma_at_client(cfg, w).then(|| w.final_norm.clone()),
        })
    }

    /// Sends shares of the prefix output `x` (T × d) and returns the reconstructed final
    /// normalised hidden state of its last `out_rows` rows (out_rows × d).
    pub fn step(&mut self, x: &[f32], out_rows: usize) -> Result<Vec<f32>> {
        let keep = out_rows * self.d;
        if out_rows == 0 || keep > x.len() {
            bail!(
                "out_rows {out_rows} is not within 1..={}",
                x.len() / self.d.max(1)
            );
        }
        let (s0, s1) = share_hidden(self.fx, self.d, x, &mut self.prg)?;
        for (tx, s) in self.to.iter().zip([s0, s1]) {
            tx.send(s).map_err(|_| anyhow!("a party has stopped"))?;
        }
        let mut outs = Vec::new();
        for rx in &self.from {
            let (y, c, dealer) = rx
                .recv()
                .map_err(|_| anyhow!("a party has stopped"))?
                .map_err(|e| anyhow!(e))?;
            self.dealer_bytes += dealer;
            outs.push((y, c));
        }
        let c = outs[0].1;
        self.comm.bytes_sent += c.bytes_sent;
        self.comm.rounds += c.rounds;
        let last = |y: &[u64]| y[y.len() - keep.min(y.len())..].to_vec();
        let y = reconstruct(&last(&outs[0].0), &last(&outs[1].0));
        Ok(decode_output(self.fx, &y, self.gamma.as_deref()))
    }

    /// Online communication of party 0 over all steps so far.
    pub fn comm(&self) -> CommStats {
        self.comm
    }

    /// Correlation bytes both parties received from the dealer for the steps so far.
    pub fn dealer_bytes(&self) -> u64 {
        self.dealer_bytes
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.to.clear();
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}
