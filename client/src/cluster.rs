//! The cluster's client: a private generation through Kafka. Per step it splits the public
//! prefix's output into two shares, seals each to its trust domain's key (HPKE, bound to the
//! job, session, step, party and the session's reply key) together with the session's secret
//! for that worker (which authenticates the session's later steps), submits one job on
//! `marill.jobs` keyed by the session, and waits for the job's result on `marill.results`; the
//! output shares (of the last row only) come back sealed to a per-session key that only this
//! client holds. The broker and the coordinator never see a share in clear.

use crate::runner::SuffixRunner;
use crate::shares::{decode_output, share_hidden};
use anyhow::{anyhow, bail, Context, Result};
use marill_kafka::rdkafka::consumer::{BaseConsumer, Consumer};
use marill_kafka::rdkafka::producer::FutureProducer;
use marill_kafka::rdkafka::{Message as _, Offset, TopicPartitionList};
use marill_kafka::KafkaSettings;
use marill_mpc::channel::CommStats;
use marill_mpc::fixed::FixedPoint;
use marill_mpc::prg::{Prg, Seed};
use marill_mpc::sharing::reconstruct;
use marill_proto::job::{
    shares_from_bytes, Job, JobResult, Outcome, StepShare, JOBS_TOPIC, RESULTS_TOPIC,
    SESSION_SECRET_LEN,
};
use marill_transport::{seal, Binding, SealKeyPair, SealPublic, Sealed};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Where a session's jobs go and whose keys seal its shares.
#[derive(Clone, Debug)]
pub struct ClusterTarget {
    /// Kafka connection
    pub kafka: KafkaSettings,
    /// the model name the coordinator serves
    pub model: String,
    /// the provider and helper trust domains' sealing keys
    pub domains: [SealPublic; 2],
    /// a step without a result for this long fails
    pub timeout: Duration,
    /// a job without a result for this long is submitted again ([`RESEND_AFTER`] by default)
    pub resend_after: Duration,
    /// how often a failed session is re-placed: opened again as a new session fed every row
    /// so far (its shares and KV cache died with its pair; the client holds the prefix output)
    pub replace: u32,
}

/// By default, a job without a result for this long is submitted again (the same bytes, so the
/// same job id): a job the coordinator never took is taken then, and a copy of one it has is answered
/// from the same result. Steps run for seconds; a busy cluster queues them for longer, and
/// each copy only adds a duplicate the coordinator skips.
pub const RESEND_AFTER: Duration = Duration::from_secs(30);

/// One session through the cluster.
pub struct KafkaRunner {
    target: ClusterTarget,
    producer: FutureProducer,
    reader: BaseConsumer,
    session: String,
    step: u32,
    n_public: usize,
    reply: SealKeyPair,
    /// the session's secret for the provider and for the helper (fresh per session)
    secrets: [[u8; SESSION_SECRET_LEN]; 2],
    fx: FixedPoint,
    d: usize,
    prg: Prg,
    comm: CommStats,
    dealer_bytes: u64,
    gamma: Vec<f32>,
    open: bool,
    /// the prefix output of every row the session has taken
    rows_sent: Vec<f32>,
    /// re-placements so far
    replaced: u32,
}

const PARTIES: [&str; 2] = ["provider", "helper"];

/// The end of every partition of the results topic (None while the topic does not exist).
fn results_end(reader: &BaseConsumer) -> Result<Option<TopicPartitionList>> {
    let md = reader
        .fetch_metadata(Some(RESULTS_TOPIC), Duration::from_secs(10))
        .context("results topic metadata")?;
    let parts = md
        .topics()
        .first()
        .map(|t| t.partitions().len())
        .unwrap_or(0);
    if parts == 0 {
        return Ok(None);
    }
    let mut tpl = TopicPartitionList::new();
    for p in 0..parts as i32 {
        let (_, high) = reader.fetch_watermarks(RESULTS_TOPIC, p, Duration::from_secs(10))?;
        tpl.add_partition_offset(RESULTS_TOPIC, p, Offset::Offset(high))?;
    }
    Ok(Some(tpl))
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl KafkaRunner {
    /// A new session (its id random) for a client running `n_public` layers of width
    /// `gamma.len()`; starts reading results from the topic's current end.
    pub fn new(target: ClusterTarget, n_public: usize, gamma: Vec<f32>) -> Result<Self> {
        let producer = target.kafka.producer()?;
        let reader = target.kafka.reader()?;
        // the coordinator creates the topics, and the broker may be away for a moment: wait
        // for them a while (30 s), then fail naming the last error
        let start = Instant::now();
        let tpl = loop {
            let why = match results_end(&reader) {
                Ok(Some(tpl)) => break tpl,
                Ok(None) => "does not exist (is a coordinator running?)".to_string(),
                Err(e) => format!("is out of reach: {e:#}"),
            };
            if start.elapsed() > Duration::from_secs(30) {
                bail!("topic {RESULTS_TOPIC} {why}");
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        reader.assign(&tpl)?;
        let mut prg = Prg::new(Seed::random(), 0);
        let session = session_id(&mut prg);
        Ok(Self {
            target,
            producer,
            reader,
            session,
            step: 0,
            n_public,
            reply: SealKeyPair::generate(),
            secrets: [session_secret(), session_secret()],
            fx: FixedPoint::default(),
            d: gamma.len(),
            prg,
            comm: CommStats::default(),
            dealer_bytes: 0,
            gamma,
            open: false,
            rows_sent: Vec::new(),
            replaced: 0,
        })
    }

    /// The session id.
    pub fn session(&self) -> &str {
        &self.session
    }

    fn binding<'a>(&'a self, job_id: &'a str, party: usize, direction: &'a str) -> Binding<'a> {
        Binding {
            job_id,
            session: &self.session,
            step: self.step,
            party: PARTIES[party],
            direction,
            reply_key: &self.reply.public.0,
        }
    }

    /// Submits this step's job (shares already split) and waits for its result.
    fn submit(
        &mut self,
        shares: [Vec<u64>; 2],
        rows: usize,
        out_rows: usize,
        last: bool,
    ) -> Result<JobResult> {
        let job_id = format!("{}-{}", self.session, self.step);
        let mut sealed: Vec<Sealed> = Vec::with_capacity(2);
        for (i, values) in shares.into_iter().enumerate() {
            let b = self.binding(&job_id, i, "in");
            let share = StepShare {
                secret: self.secrets[i],
                values,
            };
            sealed.push(seal(&self.target.domains[i], &b, &share.to_bytes())?);
        }
        let job = Job {
            job_id: job_id.clone(),
            session: self.session.clone(),
            step: self.step,
            last,
            model: self.target.model.clone(),
            n_public: self.n_public,
            rows,
            out_rows: out_rows as u32,
            deadline_ms: now_ms() + self.target.timeout.as_millis() as u64,
            reply_key: self.reply.public.0,
            shares: [sealed.remove(0), sealed.remove(0)],
        };
        let bytes = job.encode();
        let submit = || marill_kafka::produce(&self.producer, JOBS_TOPIC, &self.session, &bytes);
        submit()?;
        let start = Instant::now();
        let mut sent = start;
        let mut broker_error = String::new();
        while start.elapsed() < self.target.timeout {
            if sent.elapsed() >= self.target.resend_after {
                // idempotent by job id: the coordinator answers a copy of a job it has (or
                // had) with the same result, and takes one it never saw
                tracing::info!(
                    "no result for job {job_id} after {} s: submitted again",
                    start.elapsed().as_secs()
                );
                submit()?;
                sent = Instant::now();
            }
            let Some(m) = self.reader.poll(Duration::from_millis(100)) else {
                continue;
            };
            let m = match m {
                Ok(m) => m,
                Err(e) => {
                    // the broker gone for a while (restarting, a connection reset): the
                    // reader reconnects by itself, the job's timeout still bounds the wait
                    broker_error = format!(" (last broker error: {e})");
                    continue;
                }
            };
            if m.key() != Some(job_id.as_bytes()) {
                continue;
            }
            let r = JobResult::decode(m.payload().unwrap_or(&[]))
                .map_err(|e| anyhow!("result of {job_id}: {e}"))?;
            if r.job_id == job_id {
                return Ok(r);
            }
        }
        bail!(
            "no result for job {job_id} within {} s{broker_error}",
            self.target.timeout.as_secs()
        )
    }
}

/// A fresh random session id.
fn session_id(prg: &mut Prg) -> String {
    format!("s{:016x}{:016x}", prg.next_u64(), prg.next_u64())
}

/// A fresh session secret from the OS CSPRNG.
pub fn session_secret() -> [u8; SESSION_SECRET_LEN] {
    let mut s = [0u8; SESSION_SECRET_LEN];
    s[..16].copy_from_slice(&Seed::random().0);
    s[16..].copy_from_slice(&Seed::random().0);
    s
}

impl KafkaRunner {
    /// Runs `x` as this session's next step: the output of its last `out_rows` rows, or why
    /// the cluster failed the step (`Ok(Err(reason))`: the session is lost, a new one can take
    /// its rows).
    fn exchange(&mut self, x: &[f32], out_rows: usize) -> Result<Result<Vec<f32>, String>> {
        let (s0, s1) = share_hidden(self.fx, self.d, x, &mut self.prg)?;
        let rows = x.len() / self.d;
        self.open = true;
        let r = self.submit([s0, s1], rows, out_rows, false)?;
        let job_id = r.job_id.clone();
        let y = match r.outcome {
            Outcome::Done {
                outputs,
                gamma_at_client,
                bytes_sent,
                rounds,
                dealer_bytes,
            } => {
                let mut ys = Vec::with_capacity(2);
                for (i, o) in outputs.iter().enumerate() {
                    let b = self.binding(&job_id, i, "out");
                    let bytes = self
                        .reply
                        .open(o, &b)
                        .map_err(|e| anyhow!("{}'s output share: {e}", PARTIES[i]))?;
                    let y = shares_from_bytes(&bytes)?;
                    if y.len() != out_rows * self.d {
                        bail!(
                            "the {} returned {} values for {out_rows} rows of {}",
                            PARTIES[i],
                            y.len(),
                            self.d
                        );
                    }
                    ys.push(y);
                }
                self.comm.bytes_sent += bytes_sent[0];
                self.comm.rounds += rounds;
                self.dealer_bytes += dealer_bytes[0] + dealer_bytes[1];
                let y = reconstruct(&ys[0], &ys[1]);
                decode_output(
                    self.fx,
                    &y,
                    gamma_at_client.then_some(self.gamma.as_slice()),
                )
            }
            Outcome::Closed => {
                self.open = false;
                return Ok(Err(format!("job {job_id}: the session was closed")));
            }
            Outcome::Failed { reason } => {
                self.open = false;
                return Ok(Err(format!("job {job_id} failed: {reason}")));
            }
        };
        self.step += 1;
        Ok(Ok(y))
    }
}

impl SuffixRunner for KafkaRunner {
    /// One step; when the cluster fails it (a pair lost, a session closed), the session is
    /// re-placed up to `replace` times: a new session on whichever pair the coordinator picks,
    /// fed every row so far as its prefill (the secure suffix is position-exact, so its last
    /// rows are this step's output).
    fn step(&mut self, x: &[f32], out_rows: usize) -> Result<Vec<f32>> {
        let mut attempt = self.exchange(x, out_rows)?;
        loop {
            match attempt {
                Ok(y) => {
                    self.rows_sent.extend_from_slice(x);
                    return Ok(y);
                }
                Err(reason) if self.replaced < self.target.replace => {
                    self.replaced += 1;
                    let lost = std::mem::replace(&mut self.session, session_id(&mut self.prg));
                    self.secrets = [session_secret(), session_secret()];
                    self.step = 0;
                    let mut all = self.rows_sent.clone();
                    all.extend_from_slice(x);
                    tracing::info!(
                        "session {lost} lost ({reason}); re-placed as {} with its {} rows",
                        self.session,
                        all.len() / self.d.max(1)
                    );
                    // the new session's last rows are this step's
                    attempt = self.exchange(&all, out_rows)?;
                }
                Err(reason) => bail!(reason),
            }
        }
    }

    fn comm(&self) -> CommStats {
        self.comm
    }

    fn dealer_bytes(&self) -> Option<u64> {
        Some(self.dealer_bytes)
    }

    fn end(&mut self) -> Result<()> {
        if !self.open {
            return Ok(());
        }
        self.open = false;
        let r = self.submit([Vec::new(), Vec::new()], 0, 0, true)?;
        match r.outcome {
            Outcome::Closed => Ok(()),
            Outcome::Failed { reason } => bail!("closing session {}: {reason}", self.session),
            Outcome::Done { .. } => bail!("closing session {}: unexpected output", self.session),
        }
    }
}
