//! The broker and the coordinator are not trusted with data: this test plays them as an
//! attacker over the real cluster (tansu, a coordinator, a provider/helper pair and their dealer,
//! separate processes), producing modified copies of real jobs on `marill.jobs`.
//!
//! - A job whose reply key was replaced yields no output sealed to the replacement key: the
//!   input shares' sealing binds the reply key, so they no longer open, and both workers refuse
//!   the step saying so. A rewritten copy of a job already served gets its first result again,
//!   which the replacement key cannot open.
//! - A step injected into another client's session (shares of the attacker's own, sealed to
//!   the public domain keys) is refused: the session's reply key and secret were fixed by its
//!   step 0, and the injected step carries neither. The session goes on for its client.
//! - Only the last row of a prefill's final hidden state comes back (the job's `out_rows`).
//! - A step that fails inside the 2PC on a data-dependent check (inputs past the norms'
//!   declared bound) fails with its public category only: the count the range check opened
//!   reaches neither the result, nor the coordinator's, the workers' or the dealer's logs.

mod common;

use common::{results, TestCluster};
use marill_client::cluster::session_secret;
use marill_coordinator::KafkaSettings;
use marill_mpc::prg::{Prg, Seed};
use marill_mpc::FixedPoint;
use marill_proto::job::{
    shares_from_bytes, Job, JobResult, Outcome, StepShare, JOBS_TOPIC, SESSION_SECRET_LEN,
};
use marill_transport::seal::seal;
use marill_transport::{Binding, SealKeyPair, SealPublic};
use std::time::{Duration, Instant};

const PARTIES: [&str; 2] = ["provider", "helper"];

/// A client of the cluster built from the job schema, as `marill client` does it.
struct Client {
    reply: SealKeyPair,
    secrets: [[u8; SESSION_SECRET_LEN]; 2],
    session: String,
    domains: [SealPublic; 2],
    model: String,
    n_public: usize,
    d: usize,
}

impl Client {
    fn new(c: &TestCluster, real: &Job, d: usize, session: &str) -> Self {
        let domains = PARTIES.map(|p| SealKeyPair::load_public(&c.keys, p).unwrap());
        Self {
            reply: SealKeyPair::generate(),
            secrets: [session_secret(), session_secret()],
            session: session.into(),
            domains,
            model: real.model.clone(),
            n_public: real.n_public,
            d,
        }
    }

    /// Step `step` of this client's session: `rows` rows of a small hidden state, shared and
    /// sealed with `secrets` and bound to `reply_key` (an attacker passes its own).
    fn job(
        &self,
        job_id: &str,
        step: u32,
        rows: usize,
        reply_key: [u8; 32],
        secrets: [[u8; SESSION_SECRET_LEN]; 2],
    ) -> Job {
        let x: Vec<f64> = (0..rows * self.d)
            .map(|i| 0.25 * ((i % 7) as f64 - 3.0))
            .collect();
        self.job_of(job_id, step, &x, reply_key, secrets)
    }

    /// [`Client::job`] of the hidden state `x` (rows × d).
    fn job_of(
        &self,
        job_id: &str,
        step: u32,
        x: &[f64],
        reply_key: [u8; 32],
        secrets: [[u8; SESSION_SECRET_LEN]; 2],
    ) -> Job {
        let rows = x.len() / self.d;
        let fx = FixedPoint::default();
        let v = fx.encode_slice(x).unwrap();
        let r = Prg::new(Seed::random(), 0).ring_vec(v.len());
        let s0: Vec<u64> = v.iter().zip(&r).map(|(a, b)| a.wrapping_sub(*b)).collect();
        let shares = [s0, r].into_iter().enumerate().map(|(i, values)| {
            let b = Binding {
                job_id,
                session: &self.session,
                step,
                party: PARTIES[i],
                direction: "in",
                reply_key: &reply_key,
            };
            let plain = StepShare {
                secret: secrets[i],
                values,
            };
            seal(&self.domains[i], &b, &plain.to_bytes()).unwrap()
        });
        let [a, b]: [_; 2] = shares.collect::<Vec<_>>().try_into().unwrap();
        Job {
            job_id: job_id.into(),
            session: self.session.clone(),
            step,
            last: false,
            model: self.model.clone(),
            n_public: self.n_public,
            rows,
            out_rows: 1,
            deadline_ms: u64::MAX,
            reply_key,
            shares: [a, b],
        }
    }

    /// The output shares of `r` opened with this client's key: each party's values.
    fn open(&self, r: &JobResult) -> Result<[Vec<u64>; 2], String> {
        open_outputs(&self.reply, r)
    }
}

/// Each output share of `r` opened with `key` on its own (none when `r` is not an output).
fn open_each(key: &SealKeyPair, r: &JobResult) -> Vec<Result<Vec<u64>, String>> {
    let Outcome::Done { outputs, .. } = &r.outcome else {
        return Vec::new();
    };
    let open = |(i, o): (usize, &marill_transport::Sealed)| {
        let b = Binding {
            job_id: &r.job_id,
            session: &r.session,
            step: r.step,
            party: PARTIES[i],
            direction: "out",
            reply_key: &key.public.0,
        };
        let bytes = key.open(o, &b).map_err(|e| e.to_string())?;
        Ok(shares_from_bytes(&bytes).unwrap())
    };
    outputs.iter().enumerate().map(open).collect()
}

/// Both output shares of `r` opened with `key` (a result that is not an output is an error).
fn open_outputs(key: &SealKeyPair, r: &JobResult) -> Result<[Vec<u64>; 2], String> {
    let each: Vec<Vec<u64>> = open_each(key, r).into_iter().collect::<Result<_, _>>()?;
    each.try_into()
        .map_err(|_| format!("{:?} is not an output", r.outcome))
}

impl Client {
    /// Submits `job` and opens its output shares (each exactly the last row: d values).
    fn serve(&self, c: &TestCluster, job: &Job) -> [Vec<u64>; 2] {
        produce(c, job);
        let r = &results_of(c, &job.job_id)[0];
        let out = self
            .open(r)
            .unwrap_or_else(|e| panic!("{e} ({})", c.logs()));
        for y in &out {
            assert_eq!(
                y.len(),
                self.d,
                "only the last row's {} values come back",
                self.d
            );
        }
        out
    }
}

fn produce(c: &TestCluster, job: &Job) {
    let p = KafkaSettings::new(&c.brokers).producer().unwrap();
    marill_coordinator::kafka::produce(&p, JOBS_TOPIC, &job.session, &job.encode()).unwrap();
}

/// Every result published for `job_id`, waiting up to 90 s for the first.
fn results_of(c: &TestCluster, job_id: &str) -> Vec<JobResult> {
    let start = Instant::now();
    loop {
        if let Some(rs) = results(&c.brokers).get(job_id) {
            return rs.iter().map(|b| JobResult::decode(b).unwrap()).collect();
        }
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "no result for {job_id} ({})",
            c.logs()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn failure(r: &JobResult) -> String {
    match &r.outcome {
        Outcome::Failed { reason } => reason.clone(),
        o => panic!("job {} was not refused: {o:?}", r.job_id),
    }
}

/// Starts a cluster, serves one real session, and returns the cluster, that session's prefill
/// job and the model width.
fn cluster_with_a_real_job(name: &str) -> (TestCluster, Job, usize) {
    let mut c = TestCluster::start(name, 1);
    c.coordinator();
    c.serve_batch(1, 2, "a real session");
    let jobs: Vec<Job> = marill_coordinator::kafka::read_tail(
        &KafkaSettings::new(&c.brokers),
        JOBS_TOPIC,
        1000,
        Duration::from_secs(20),
    )
    .unwrap()
    .into_iter()
    .map(|(_, b)| Job::decode(&b).unwrap())
    .collect();
    let real = jobs
        .into_iter()
        .find(|j| j.step == 0)
        .expect("a real prefill job");
    assert_eq!(real.out_rows, 1, "a generation asks for its last row only");
    // the sealed share: 16 bytes of tag, the session secret, rows × d values
    let d = (real.shares[0].ct.len() - 16 - SESSION_SECRET_LEN) / 8 / real.rows;
    (c, real, d)
}

#[test]
fn rewritten_and_injected_jobs_are_refused() {
    let (c, real, d) = cluster_with_a_real_job("tampered");
    let real = &real;
    let attacker = SealKeyPair::generate();

    // 1. a real job copied with the attacker's reply key: the coordinator answers the job id
    //    with its first result, which the attacker's key does not open
    let mut copy = real.clone();
    copy.reply_key = attacker.public.0;
    produce(&c, &copy);
    std::thread::sleep(Duration::from_secs(3));
    for r in results_of(&c, &real.job_id) {
        assert!(
            open_each(&attacker, &r).iter().all(|o| o.is_err()),
            "the attacker opened an output"
        );
    }

    // 2. a client's new job whose reply key is replaced in flight: refused by both workers,
    //    no output at all
    let victim = Client::new(&c, real, d, "victim-a");
    let mut job = victim.job("victim-a-0", 0, 3, victim.reply.public.0, victim.secrets);
    job.reply_key = attacker.public.0;
    produce(&c, &job);
    let rs = results_of(&c, "victim-a-0");
    for r in &rs {
        let why = failure(r);
        assert!(why.contains("does not open under its binding"), "{why}");
    }

    // 3. a session served to its client, then steps injected into it
    let victim = Client::new(&c, real, d, "victim-b");
    // 3 rows in, the last row's d values out
    victim.serve(
        &c,
        &victim.job("victim-b-0", 0, 3, victim.reply.public.0, victim.secrets),
    );
    // with the victim's reply key (to pass the sealing) and a secret of the attacker's own
    let forged = victim.job(
        "evil-1",
        1,
        1,
        victim.reply.public.0,
        [session_secret(), session_secret()],
    );
    produce(&c, &forged);
    let why = failure(&results_of(&c, "evil-1")[0]);
    assert!(why.contains("does not carry its session's secret"), "{why}");
    // with the attacker's own reply key, sealed to it
    let mut own = Client::new(&c, real, d, "victim-b");
    own.reply = SealKeyPair::generate();
    let forged = own.job(
        "evil-2",
        1,
        1,
        own.reply.public.0,
        [session_secret(), session_secret()],
    );
    produce(&c, &forged);
    let why = failure(&results_of(&c, "evil-2")[0]);
    assert!(why.contains("another reply key"), "{why}");
    // the session is still the victim's
    victim.serve(
        &c,
        &victim.job("victim-b-1", 1, 1, victim.reply.public.0, victim.secrets),
    );
    let _ = std::fs::remove_dir_all(&c.dir);
}

#[test]
fn a_failure_inside_the_2pc_leaves_the_workers_as_its_category_only() {
    let (c, real, d) = cluster_with_a_real_job("failure-category");
    let client = Client::new(&c, &real, d, "past-the-bound");
    // 3 rows; 37 values of the first row far past the norms' input bound (|x| < 2^15)
    let mut x: Vec<f64> = (0..3 * d).map(|i| 0.5 - (i % 5) as f64 * 0.2).collect();
    let past = 37.min(d);
    for v in x.iter_mut().take(past) {
        *v = 50_000.0;
    }
    let job = client.job_of("past-0", 0, &x, client.reply.public.0, client.secrets);
    produce(&c, &job);
    let why = failure(&results_of(&c, "past-0")[0]);
    assert!(
        why.ends_with("step failed inside the 2PC: an input is outside a declared range"),
        "{why}"
    );
    // the count the range check opened stays at the workers, at debug level
    std::thread::sleep(Duration::from_secs(1));
    let count = format!("{past} input(s)");
    for e in std::fs::read_dir(&c.dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "log") {
            let text = std::fs::read_to_string(&p).unwrap();
            assert!(
                !text.contains(&count),
                "{} holds the count: {text}",
                p.display()
            );
            assert!(
                !text.contains("outside its declared range ["),
                "{}",
                p.display()
            );
        }
    }
    let _ = std::fs::remove_dir_all(&c.dir);
}
