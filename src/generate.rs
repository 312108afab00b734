//! `marill generate` (a private generation on a real model in one process) and
//! `marill eval fidelity` (secure vs plaintext on many real prompts).

use crate::secure::session::Session;
use anyhow::{anyhow, Context, Result};
use candle_core::{Device, Tensor};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
pub use marill_client::runner::{PublicPrefix, SuffixRunner};
use marill_model::llama::argmax_last;
use marill_model::suffix::{suffix_of, Bounds};
use marill_model::{
    Adapters, Llama, LoadedModel, LoraSpec, MarillSpec, ModelOptions, PublicLayers, Target,
};
use marill_mpc::channel::CommStats;
use marill_mpc::prg::Seeding;
use serde::Serialize;
use std::path::PathBuf;

/// The prompt of `marill dev` when none is given.
pub const DEFAULT_PROMPT: &str = "The capital of France is";

/// Where `scripts/fetch-smollm2.sh` puts the model.
pub const DEFAULT_MODEL: &str = "target/models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";

/// The Marill model options shared by generate and eval.
#[derive(Args, Clone)]
pub struct ModelArgs {
    /// Model: a .gguf file or a directory with config.json, *.safetensors, tokenizer.json.
    #[arg(long, default_value = DEFAULT_MODEL)]
    model: PathBuf,
    /// Fraction of layers frozen public (run by the client in plaintext).
    #[arg(long, default_value_t = 0.5)]
    lf: f64,
    /// Public layers (overrides --lf).
    #[arg(long)]
    n_public: Option<usize>,
    /// LoRA rank on the private layers (0 = private layers fully fine-tuned, no LoRA).
    #[arg(long, default_value_t = 8)]
    lora_rank: usize,
    /// LoRA targets.
    #[arg(long, value_delimiter = ',', default_value = "q,k,v,o,gate,up,down")]
    lora_targets: Vec<String>,
    /// Head-merging factor (must divide the head count; 1 = none).
    #[arg(long, default_value_t = 1)]
    hm: usize,
    /// Seed of the secret randomness (dealer, weight shares, input masks) for a reproducible
    /// test or benchmark run; without it every secret comes from the OS CSPRNG.
    #[arg(long)]
    seed: Option<u64>,
    /// Seed of the generated stand-in adapters (B = 0) when no --adapters export is given, and
    /// of `marill tune`'s initialisation and data order (public: the workers and the client
    /// generate the same adapters from it).
    #[arg(long, default_value_t = 7)]
    adapter_seed: u64,
    /// A `marill tune` export (marill.json + adapters/): serve its trained adapters on --model;
    /// its spec replaces --lf, --n-public, --lora-rank, --lora-targets and --hm.
    #[arg(long)]
    adapters: Option<PathBuf>,
}

impl ModelArgs {
    /// The same options as command-line arguments (to start a worker with them).
    pub fn to_args(&self) -> Vec<String> {
        let mut v = vec![
            "--model".to_string(),
            self.model.display().to_string(),
            "--lf".into(),
            self.lf.to_string(),
            "--lora-rank".into(),
            self.lora_rank.to_string(),
            "--lora-targets".into(),
            self.lora_targets.join(","),
            "--hm".into(),
            self.hm.to_string(),
            "--adapter-seed".into(),
            self.adapter_seed.to_string(),
        ];
        if let Some(s) = self.seed {
            v.extend(["--seed".to_string(), s.to_string()]);
        }
        if let Some(n) = self.n_public {
            v.extend(["--n-public".to_string(), n.to_string()]);
        }
        if let Some(dir) = &self.adapters {
            v.extend(["--adapters".to_string(), dir.display().to_string()]);
        }
        v
    }

    /// The model path.
    pub fn model_path(&self) -> &std::path::Path {
        &self.model
    }

    /// Where the secret randomness comes from (--seed, or the OS CSPRNG); a given seed is
    /// announced.
    pub fn seeding(&self) -> Seeding {
        crate::secure::seeds::seeding(self.seed)
    }

    /// The seed of generated adapters, and of `marill tune`'s initialisation and data order.
    pub fn adapter_seed(&self) -> u64 {
        self.adapter_seed
    }

    /// The export given with --adapters, if any.
    pub fn adapters(&self) -> Option<&std::path::Path> {
        self.adapters.as_deref()
    }

    /// The Marill spec of the flags (--lf/--n-public, --lora-rank/--lora-targets with alpha =
    /// rank, --hm).
    pub fn spec(&self) -> Result<MarillSpec> {
        Ok(MarillSpec {
            public_layers: match self.n_public {
                Some(n) => PublicLayers::Count(n),
                None => PublicLayers::Fraction(self.lf),
            },
            lora: if self.lora_rank > 0 {
                Some(LoraSpec {
                    rank: self.lora_rank,
                    alpha: self.lora_rank as f64,
                    targets: self
                        .lora_targets
                        .iter()
                        .map(|s| s.trim().parse::<Target>().map_err(|e| anyhow!("{e}")))
                        .collect::<Result<_>>()?,
                })
            } else {
                None
            },
            head_merge: self.hm,
        })
    }
}

impl ModelArgs {
    /// The flags as the plain options the model crate loads from.
    pub fn options(&self) -> Result<ModelOptions> {
        let adapters = match &self.adapters {
            Some(dir) => Adapters::Export(dir.clone()),
            None => Adapters::Generated {
                spec: self.spec()?,
                seed: self.adapter_seed,
            },
        };
        Ok(ModelOptions {
            model: self.model.clone(),
            adapters,
        })
    }
}

/// Loads the base model (no spec) and its tokenizer.
pub fn load_base(a: &ModelArgs) -> Result<LoadedModel> {
    a.options()?
        .load_base(&Device::Cpu)
        .with_context(|| format!("loading {}", a.model.display()))
}

/// Loads the model and applies the Marill spec: with --adapters, the export's spec and trained
/// adapters; otherwise the flags' spec with generated adapters that start at B = 0 (the adapted
/// model equals the base model until fine-tuned).
pub fn load(a: &ModelArgs) -> Result<(Llama, marill_model::TextTokenizer)> {
    a.options()?
        .load(&Device::Cpu)
        .with_context(|| match &a.adapters {
            Some(dir) => format!(
                "loading {} with the export {}",
                a.model.display(),
                dir.display()
            ),
            None => format!("loading {}", a.model.display()),
        })
}

impl SuffixRunner for Session {
    fn step(&mut self, x: &[f32], out_rows: usize) -> Result<Vec<f32>> {
        Session::step(self, x, out_rows)
    }
    fn comm(&self) -> CommStats {
        Session::comm(self)
    }
    fn dealer_bytes(&self) -> Option<u64> {
        Some(Session::dealer_bytes(self))
    }
}

/// Secure generation state: the client's public prefix and the parties' session.
struct Private<'a> {
    prefix: PublicPrefix<'a>,
    session: Box<dyn SuffixRunner + 'a>,
}

impl<'a> Private<'a> {
    /// Both parties in this process (threads and in-memory channels).
    fn new(model: &'a Llama, max_seq: usize, seeding: Seeding) -> Result<Self> {
        let (cfg, w) = suffix_of(model, Bounds::default(), max_seq)?;
        Ok(Self::with_runner(
            model,
            cfg.first_layer,
            Box::new(Session::start(&cfg, &w, seeding)?),
        ))
    }

    /// Any runner (e.g. two worker processes over encrypted links).
    fn with_runner(model: &'a Llama, n_public: usize, session: Box<dyn SuffixRunner + 'a>) -> Self {
        Self {
            prefix: PublicPrefix::new(model, n_public),
            session,
        }
    }

    /// Logits `(1, 1, vocab)` of the last of `tokens` (at the next positions), the suffix run
    /// privately: the client receives the final hidden state of that row only.
    fn logits(&mut self, tokens: &[u32]) -> Result<Tensor> {
        self.logits_of_last(tokens, 1)
    }

    /// Logits `(1, rows, vocab)` of the last `rows` of `tokens`, the suffix run privately.
    fn logits_of_last(&mut self, tokens: &[u32], rows: usize) -> Result<Tensor> {
        let (x, _, d) = self.prefix.hidden(tokens)?;
        let y = self.session.step(&x, rows)?;
        let normed = Tensor::from_vec(y, (1, rows, d), &Device::Cpu)?;
        Ok(self.prefix.model.head(&normed)?)
    }
}

/// Logits `(1, t, vocab)` of every position of `tokens` from position 0 with the private suffix
/// run under 2PC in this process (both parties as threads; an evaluation tool: a deployed
/// client gets the last row only).
pub fn secure_logits(model: &Llama, tokens: &[u32], seeding: Seeding) -> Result<Tensor> {
    let mut private = Private::new(model, tokens.len() + 1, seeding)?;
    let logits = private.logits_of_last(tokens, tokens.len())?;
    private.session.end()?;
    Ok(logits)
}

/// Arguments of `marill generate`.
#[derive(Args)]
pub struct GenerateArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// The prompt (required, except by `marill dev`, which has a default).
    #[arg(long)]
    prompt: Option<String>,
    /// Tokens to generate.
    #[arg(long, default_value_t = 32)]
    max_new_tokens: usize,
    /// Also run the plaintext model and report agreement and logit error.
    #[arg(long)]
    check: bool,
}

impl GenerateArgs {
    /// The model options.
    pub fn model_args(&self) -> &ModelArgs {
        &self.model
    }

    /// The prompt; none given is an error.
    pub fn prompt(&self) -> Result<&str> {
        self.prompt
            .as_deref()
            .ok_or_else(|| anyhow!("--prompt is required"))
    }

    /// These arguments with [`DEFAULT_PROMPT`] when no prompt is given.
    pub fn with_default_prompt(mut self) -> Self {
        self.prompt
            .get_or_insert_with(|| DEFAULT_PROMPT.to_string());
        self
    }

    /// Refuses at once a prompt plus --max-new-tokens longer than `limit` tokens (`whose`
    /// limit: the model's positions, or the workers' --max-seq).
    pub fn check_length(
        &self,
        tok: &marill_model::TextTokenizer,
        limit: usize,
        whose: &str,
    ) -> Result<()> {
        let n = tok.encode(self.prompt()?)?.len();
        check_length(n, self.max_new_tokens, limit, whose)
    }
}

/// Refuses `prompt` tokens plus `max_new` past `limit` (`whose` maximum sequence length).
pub fn check_length(prompt: usize, max_new: usize, limit: usize, whose: &str) -> Result<()> {
    if prompt.saturating_add(max_new) > limit {
        return Err(anyhow!(
            "the prompt ({prompt} tokens) plus --max-new-tokens {max_new} exceeds {whose} \
             maximum sequence length of {limit} tokens"
        ));
    }
    Ok(())
}

fn max_diff(a: &Tensor, b: &Tensor) -> Result<f32> {
    Ok(marill_model::llama::max_abs_diff(a, b)?)
}

/// Arguments of `marill generate`: a private generation with both parties in this process.
#[derive(Args)]
pub struct LocalArgs {
    /// Longest sequence (prompt + generated tokens) the suffix is built for: the workers'
    /// default (`marill worker --max-seq`), so that this command runs their protocol. A prompt
    /// plus `--max-new-tokens` past it is refused before anything runs.
    #[arg(long, default_value_t = marill_model::suffix::DEFAULT_MAX_SEQ)]
    max_seq: usize,
    #[command(flatten)]
    generate: GenerateArgs,
}

/// Runs `marill generate`.
pub fn generate(a: LocalArgs) -> Result<()> {
    let (model, tok) = load(&a.generate.model)?;
    // the suffix is built for --max-seq (the workers' default: every command runs one
    // protocol), within the model's positions
    let limit = a.max_seq.min(model.config().max_position_embeddings);
    a.generate.check_length(&tok, limit, "the suffix's")?;
    let private = Private::new(&model, a.max_seq, a.generate.model.seeding())?;
    generate_with(&a.generate, &model, &tok, private)
}

/// Runs a generation with the suffix run by `runner` (which serves the model's private layers,
/// sequences of at most `max_seq` tokens).
pub fn generate_remote(
    a: &GenerateArgs,
    model: &Llama,
    tok: &marill_model::TextTokenizer,
    max_seq: usize,
    runner: Box<dyn SuffixRunner + '_>,
) -> Result<()> {
    a.check_length(tok, max_seq, "the workers'")?;
    let n_public = model.marill_spec().context("spec")?.n_public();
    generate_with(a, model, tok, Private::with_runner(model, n_public, runner))
}

fn generate_with(
    a: &GenerateArgs,
    model: &Llama,
    tok: &marill_model::TextTokenizer,
    mut private: Private<'_>,
) -> Result<()> {
    let prompt = a.prompt()?;
    let ids = tok.encode(prompt)?;
    if ids.is_empty() {
        return Err(anyhow!("the prompt encodes to no token"));
    }
    let spec = model.marill_spec().context("spec")?.clone();
    eprintln!(
        "model: {} layers ({} public, {} private), LoRA {:?}, head merging {}",
        model.config().n_layers,
        spec.n_public(),
        model.config().n_layers - spec.n_public(),
        spec.lora().map(|l| l.rank),
        spec.head_merge()
    );
    let mut plain_cache = model.new_cache();
    let bar = ProgressBar::new(a.max_new_tokens as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} tokens {msg} [{elapsed}<{eta}]")
            .map_err(|e| anyhow!("{e}"))?,
    );
    let start = std::time::Instant::now();
    let mut out = Vec::new();
    let mut logits = private.logits(&ids)?;
    let mut plain = if a.check {
        Some(model.forward(&ids, 0, &mut plain_cache)?)
    } else {
        None
    };
    let (mut agree, mut worst) = (0usize, 0f32);
    let stop = model.config().eos_token_ids.clone();
    for step in 0..a.max_new_tokens {
        let next = argmax_last(&logits)?;
        if let Some(pl) = &plain {
            let l_last = logits.narrow(1, logits.dim(1)? - 1, 1)?;
            let p_last = pl.narrow(1, pl.dim(1)? - 1, 1)?;
            worst = worst.max(max_diff(&l_last, &p_last)?);
            agree += usize::from(argmax_last(pl)? == next);
        }
        out.push(next);
        bar.set_message(format!("{:?}", tok.decode(&[next]).unwrap_or_default()));
        bar.inc(1);
        if stop.contains(&next) || step + 1 == a.max_new_tokens {
            break;
        }
        logits = private.logits(&[next])?;
        if plain.is_some() {
            plain = Some(model.forward(&[next], ids.len() + step, &mut plain_cache)?);
        }
    }
    bar.finish_and_clear();
    private.session.end()?;
    let text = tok.decode(&out)?;
    println!("{prompt}{text}");
    let c = private.session.comm();
    let dealer = private.session.dealer_bytes().map_or(String::new(), |b| {
        format!("; dealer: {:.1} MB", b as f64 / 1e6)
    });
    eprintln!(
        "{} tokens in {:.1} s; online per party: {:.1} MB, {} rounds{dealer}",
        out.len(),
        start.elapsed().as_secs_f64(),
        c.bytes_sent as f64 / 1e6,
        c.rounds
    );
    if a.check {
        eprintln!(
            "plaintext check: next-token agreement {agree}/{}, max abs logit error {worst:.4}",
            out.len()
        );
    }
    Ok(())
}

/// Arguments of `marill eval fidelity`.
#[derive(Args)]
pub struct FidelityArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// How many of the built-in prompts.
    #[arg(long, default_value_t = 50)]
    prompts: usize,
    /// Greedy tokens compared per prompt.
    #[arg(long, default_value_t = 32)]
    tokens: usize,
    /// Write the per-prompt rows as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_prompt_past_the_limit_is_refused() {
        assert!(super::check_length(10, 246, 256, "the workers'").is_ok());
        let e = super::check_length(10, 100_000, 256, "the workers'").unwrap_err();
        let e = e.to_string();
        assert!(e.contains("100000") && e.contains("256"), "{e}");
        assert!(super::check_length(1, usize::MAX, 256, "the model's").is_err());
    }
}

#[derive(Serialize)]
struct FidelityRow {
    prompt: String,
    next_token_agree: bool,
    greedy_identical: bool,
    first_divergence: Option<usize>,
    max_abs_logit_err: f32,
}

/// A private greedy continuation compared with plaintext, step by step.
pub struct Comparison {
    /// the first private token equals the plaintext one
    pub next_token_agree: bool,
    /// the first step where the greedy tokens differ (None: identical throughout)
    pub first_divergence: Option<usize>,
    /// largest |private − plaintext| over the compared logits
    pub max_abs_logit_err: f32,
    /// the private greedy tokens
    pub tokens: Vec<u32>,
}

/// Generates up to `tokens` greedy tokens after `ids` with the suffix run by `runner` and with
/// the plaintext model side by side; stops at the first divergence. Ends the runner's session.
pub fn compare_greedy(
    model: &Llama,
    ids: &[u32],
    tokens: usize,
    runner: Box<dyn SuffixRunner + '_>,
) -> Result<Comparison> {
    let n_public = model.marill_spec().context("spec")?.n_public();
    compare_with(
        model,
        ids,
        tokens,
        Private::with_runner(model, n_public, runner),
    )
}

fn compare_with(
    model: &Llama,
    ids: &[u32],
    tokens: usize,
    mut private: Private<'_>,
) -> Result<Comparison> {
    let mut cache = model.new_cache();
    let mut sl = private.logits(ids)?;
    let mut pl = model.forward(ids, 0, &mut cache)?;
    let mut c = Comparison {
        next_token_agree: false,
        first_divergence: None,
        max_abs_logit_err: 0.0,
        tokens: Vec::new(),
    };
    for step in 0..tokens {
        let (s, p) = (argmax_last(&sl)?, argmax_last(&pl)?);
        let sl_last = sl.narrow(1, sl.dim(1)? - 1, 1)?;
        let pl_last = pl.narrow(1, pl.dim(1)? - 1, 1)?;
        c.max_abs_logit_err = c.max_abs_logit_err.max(max_diff(&sl_last, &pl_last)?);
        c.tokens.push(s);
        if step == 0 {
            c.next_token_agree = s == p;
        }
        if s != p {
            c.first_divergence = Some(step);
            break;
        }
        if step + 1 == tokens {
            break;
        }
        sl = private.logits(&[s])?;
        pl = model.forward(&[p], ids.len() + step, &mut cache)?;
    }
    private.session.end()?;
    Ok(c)
}

/// Real text prompts (public-domain style sentences and questions).
pub const PROMPTS: &[&str] = include!("prompts.in");

/// Runs `marill eval fidelity`.
pub fn fidelity(a: FidelityArgs) -> Result<()> {
    let (model, tok) = load(&a.model)?;
    let n = a.prompts.min(PROMPTS.len());
    let bar = ProgressBar::new(n as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} prompts {msg} [{elapsed}<{eta}]")
            .map_err(|e| anyhow!("{e}"))?,
    );
    let mut rows = Vec::new();
    let seeding = a.model.seeding();
    for prompt in &PROMPTS[..n] {
        let ids = tok.encode(prompt)?;
        let private = Private::new(&model, ids.len() + a.tokens + 1, seeding)?;
        let c = compare_with(&model, &ids, a.tokens, private)?;
        let (first_div, worst, next_agree) =
            (c.first_divergence, c.max_abs_logit_err, c.next_token_agree);
        bar.inc(1);
        if bar.is_hidden() {
            // no terminal (CI, redirected): progress as plain lines
            eprintln!(
                "[{}/{n}] first divergence {:?}, max abs logit error {worst:.4}",
                rows.len() + 1,
                first_div
            );
        }
        rows.push(FidelityRow {
            prompt: prompt.to_string(),
            next_token_agree: next_agree,
            greedy_identical: first_div.is_none(),
            first_divergence: first_div,
            max_abs_logit_err: worst,
        });
    }
    bar.finish_and_clear();
    let agree = rows.iter().filter(|r| r.next_token_agree).count();
    let same = rows.iter().filter(|r| r.greedy_identical).count();
    let worst = rows
        .iter()
        .map(|r| r.max_abs_logit_err)
        .fold(0f32, f32::max);
    println!("| prompts | next-token top-1 agreement | greedy {} tokens identical | max abs logit error |", a.tokens);
    println!("|---:|---:|---:|---:|");
    println!(
        "| {n} | {agree}/{n} ({:.1}%) | {same}/{n} ({:.1}%) | {worst:.4} |",
        100.0 * agree as f64 / n as f64,
        100.0 * same as f64 / n as f64
    );
    crate::bench::write_json(&a.json, &rows)
}
