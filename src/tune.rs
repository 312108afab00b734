//! `marill tune train` and `marill tune eval`: Marill fine-tuning of a public-private model
//! (Rathee et al. 2024, "MPC-Minimized Secure LLM Inference": layer freezing, LoRA on the
//! private layers — Hu et al. 2021 — and head merging), its export, and its held-out evaluation
//! in plaintext and, for a sample, under secure inference.
//!
//! The maths lives in [`marill_model::train`]; this module reads the corpus, drives the steps
//! with a progress bar, writes checkpoints and the export, and prints the figures.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use candle_core::Device;
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use marill_model::train::adamw::AdamWParams;
use marill_model::train::data::TokenWindows;
use marill_model::train::export::{write_export, ExportManifest};
use marill_model::train::{evaluate, EvalStats, TrainConfig, Trainer};
use marill_model::{LoraAdapters, LoraInit, TextTokenizer};
use serde::Serialize;

use crate::generate::{load, load_base, ModelArgs};

/// `marill tune ...`.
#[derive(Subcommand)]
pub enum TuneCommand {
    /// Fine-tune the private layers (LoRA, head merging or pruning) on a text corpus, with
    /// checkpoints, and export the result.
    Train(TrainArgs),
    /// Held-out perplexity and next-token accuracy of a base model or an export, in plaintext
    /// and for a sample of windows under secure inference.
    Eval(EvalArgs),
}

/// Runs a `marill tune` command.
pub fn run(which: TuneCommand) -> Result<()> {
    match which {
        TuneCommand::Train(a) => train(a),
        TuneCommand::Eval(a) => eval(a),
    }
}

/// Arguments of `marill tune train`.
#[derive(Args)]
pub struct TrainArgs {
    /// The base model and the Marill layout (--lf/--n-public, --lora-rank/--lora-targets with
    /// alpha = rank, --hm); --adapter-seed seeds the adapters' initialisation and the data order.
    #[command(flatten)]
    model: ModelArgs,
    /// Head-pruning baseline: keep the first of every m heads in the private layers (needs
    /// --hm 1; the result is plaintext only).
    #[arg(long, default_value_t = 1)]
    prune: usize,
    /// Training text: plain text (.txt) or JSON lines with a "text" field (.jsonl).
    #[arg(long)]
    data: PathBuf,
    /// Held-out text (same formats) for perplexity before and after training.
    #[arg(long)]
    heldout: Option<PathBuf>,
    /// Held-out windows evaluated (spread evenly over the held-out text).
    #[arg(long, default_value_t = 32)]
    eval_windows: usize,
    /// Export directory (marill.json + adapters/); the checkpoint goes to OUT/checkpoint.
    #[arg(long)]
    out: PathBuf,
    /// Optimizer steps in all.
    #[arg(long, default_value_t = 40)]
    steps: usize,
    /// Tokens per training window.
    #[arg(long, default_value_t = 64)]
    seq_len: usize,
    /// Windows per micro-batch.
    #[arg(long, default_value_t = 1)]
    micro_batch: usize,
    /// Micro-batches per optimizer step (gradient accumulation).
    #[arg(long, default_value_t = 4)]
    accum: usize,
    /// AdamW learning rate.
    #[arg(long, default_value_t = 1e-3)]
    lr: f64,
    /// AdamW decoupled weight decay.
    #[arg(long, default_value_t = 0.0)]
    weight_decay: f64,
    /// Weight of KL(base ‖ tuned) distillation from the unmodified base model (0 = none).
    #[arg(long, default_value_t = 0.0)]
    distill_weight: f64,
    /// Write a checkpoint every this many steps (and at the end).
    #[arg(long, default_value_t = 10)]
    checkpoint_every: usize,
    /// Continue from OUT/checkpoint (same settings required).
    #[arg(long)]
    resume: bool,
    /// Stop after this many steps in this invocation (checkpointed), e.g. to split a long run.
    #[arg(long)]
    stop_after: Option<usize>,
    /// Read at most this many characters of the training text.
    #[arg(long)]
    max_chars: Option<usize>,
}

/// Tokens of a corpus file: plain text, or JSON lines whose "text" fields are documents joined
/// by the end-of-sequence token. Plain text is encoded paragraph by paragraph (blank-line
/// separated, the separator encoded too) to keep each encode call small.
pub fn read_corpus(
    path: &Path,
    tok: &TextTokenizer,
    eos: Option<u32>,
    max_chars: Option<usize>,
) -> Result<Vec<u32>> {
    let mut text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    if let Some(max) = max_chars {
        if text.len() > max {
            let mut end = max;
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            text.truncate(end);
        }
    }
    let mut out = Vec::new();
    if path.extension().is_some_and(|e| e == "jsonl") {
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let v: serde_json::Value = serde_json::from_str(line)
                .with_context(|| format!("{}:{}: not JSON", path.display(), i + 1))?;
            let doc = v
                .get("text")
                .and_then(|t| t.as_str())
                .ok_or_else(|| anyhow!("{}:{}: no \"text\" string", path.display(), i + 1))?;
            out.extend(tok.encode(doc)?);
            out.extend(eos);
        }
    } else {
        let sep = tok.encode("\n\n")?;
        for (i, para) in text.split("\n\n").enumerate() {
            if i > 0 {
                out.extend(&sep);
            }
            if !para.is_empty() {
                out.extend(tok.encode(para)?);
            }
        }
    }
    Ok(out)
}

/// One row of the tuning table (also `OUT/result.json`).
#[derive(Serialize, Clone)]
struct TrainResult {
    n_layers: usize,
    n_public: usize,
    lf: f64,
    head_merge: usize,
    head_prune: usize,
    heads_per_private_layer: usize,
    lora_rank: usize,
    steps: usize,
    tokens_per_step: usize,
    first_loss: Option<f32>,
    last_loss: Option<f32>,
    before: Option<EvalStats>,
    ppl_before: Option<f64>,
    acc_before: Option<f64>,
    after: Option<EvalStats>,
    ppl_after: Option<f64>,
    acc_after: Option<f64>,
    train_s: f64,
    eval_s: f64,
}

fn progress(len: u64, unit: &str) -> Result<ProgressBar> {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "{{bar:30}} {{pos}}/{{len}} {unit} {{msg}} [{{elapsed}}<{{eta}}]"
        ))
        .map_err(|e| anyhow!("{e}"))?,
    );
    Ok(bar)
}

/// Runs `marill tune train`.
pub fn train(a: TrainArgs) -> Result<()> {
    if a.model.adapters().is_some() {
        bail!("marill tune train starts from the base model; --adapters is for serving an export");
    }
    let loaded = load_base(&a.model)?;
    let base = loaded.model;
    let cfg = base.config().clone();
    let spec = a.model.spec()?;
    let resolved = spec.resolve(&cfg).map_err(|e| anyhow!("{e}"))?;
    if resolved.lora().is_none() {
        bail!("marill tune trains LoRA adapters: --lora-rank must be > 0");
    }
    let eos = cfg.eos_token_ids.first().copied();
    let t0 = Instant::now();
    let train_tokens = read_corpus(&a.data, &loaded.tokenizer, eos, a.max_chars)?;
    let data = TokenWindows::new(train_tokens, a.seq_len)?;
    let heldout = match &a.heldout {
        Some(p) => Some(TokenWindows::new(
            read_corpus(p, &loaded.tokenizer, eos, None)?,
            a.seq_len,
        )?),
        None => None,
    };
    eprintln!(
        "corpus: {} training tokens ({} windows of {}){}, read in {:.1} s",
        data.n_tokens(),
        data.len(),
        a.seq_len,
        heldout
            .as_ref()
            .map(|h| format!(", {} held-out tokens", h.n_tokens()))
            .unwrap_or_default(),
        t0.elapsed().as_secs_f64()
    );
    let init = LoraAdapters::init(
        &cfg,
        &resolved,
        LoraInit::ZeroB {
            seed: a.model.adapter_seed(),
        },
        &Device::Cpu,
    )?;
    let config = TrainConfig {
        seq_len: a.seq_len,
        micro_batch: a.micro_batch,
        accum: a.accum,
        seed: a.model.adapter_seed(),
        adamw: AdamWParams {
            lr: a.lr,
            weight_decay: a.weight_decay,
            ..AdamWParams::default()
        },
        distill_weight: a.distill_weight,
    };
    let mut trainer = Trainer::new(&base, &spec, a.prune, &init, config.clone())?;
    let ckpt = a.out.join("checkpoint");
    if a.resume {
        if !Trainer::has_checkpoint(&ckpt) {
            bail!("--resume: no checkpoint in {}", ckpt.display());
        }
        trainer.resume(&ckpt)?;
        eprintln!("resumed at step {}", trainer.step_count());
    }
    eprintln!(
        "model: {} layers ({} public, {} private), LoRA rank {} on {:?}, head merging {}, pruning {}; {} steps of {} x {} x {} tokens",
        cfg.n_layers,
        resolved.n_public(),
        cfg.n_layers - resolved.n_public(),
        init.rank(),
        resolved.lora().map(|l| l.targets.clone()).unwrap_or_default(),
        resolved.head_merge(),
        a.prune,
        a.steps,
        a.accum,
        a.micro_batch,
        a.seq_len
    );
    let sample = heldout
        .as_ref()
        .map(|h| h.evenly_spaced(a.eval_windows))
        .unwrap_or_default();
    let mut eval_s = 0.0;
    let mut run_eval = |model: &marill_model::Llama| -> Result<Option<EvalStats>> {
        let Some(h) = &heldout else { return Ok(None) };
        let t = Instant::now();
        let s = evaluate(model, h, &sample)?;
        eval_s += t.elapsed().as_secs_f64();
        Ok(Some(s))
    };
    // before training: the initial adapters (B = 0), i.e. the base model with the layout's
    // merging or pruning (also on resume, so the row is complete)
    let before = run_eval(
        &base
            .with_marill(&spec, Some(&init))?
            .with_head_pruning(a.prune)?,
    )?;
    if let Some(s) = &before {
        eprintln!(
            "held-out before: perplexity {:.3}, next-token accuracy {:.4} ({} tokens)",
            s.perplexity(),
            s.accuracy(),
            s.tokens
        );
    }
    let bar = progress(a.steps as u64, "steps")?;
    bar.set_position(trainer.step_count() as u64);
    let t_train = Instant::now();
    let mut this_run = 0usize;
    while trainer.step_count() < a.steps {
        if a.stop_after.is_some_and(|n| this_run >= n) {
            break;
        }
        let loss = trainer.step(&data)?;
        this_run += 1;
        bar.set_position(trainer.step_count() as u64);
        bar.set_message(format!("loss {loss:.4}"));
        if bar.is_hidden() {
            eprintln!(
                "step {}/{} loss {loss:.4} ({:.1} s)",
                trainer.step_count(),
                a.steps,
                t_train.elapsed().as_secs_f64()
            );
        }
        if a.checkpoint_every > 0 && trainer.step_count() % a.checkpoint_every == 0 {
            trainer.save_checkpoint(&ckpt)?;
        }
    }
    let train_s = t_train.elapsed().as_secs_f64();
    bar.finish_and_clear();
    trainer.save_checkpoint(&ckpt)?;
    if trainer.step_count() < a.steps {
        eprintln!(
            "stopped at step {}/{} (checkpoint in {}; continue with --resume)",
            trainer.step_count(),
            a.steps,
            ckpt.display()
        );
        return Ok(());
    }
    let tuned = trainer.inference_model()?;
    let after = run_eval(&tuned)?;
    let losses = trainer.losses();
    let n_public = resolved.n_public();
    let result = TrainResult {
        n_layers: cfg.n_layers,
        n_public,
        lf: n_public as f64 / cfg.n_layers as f64,
        head_merge: resolved.head_merge(),
        head_prune: a.prune,
        heads_per_private_layer: cfg.n_heads / resolved.head_merge() / a.prune,
        lora_rank: init.rank(),
        steps: trainer.step_count(),
        tokens_per_step: a.seq_len * a.micro_batch * a.accum,
        first_loss: losses.first().copied(),
        last_loss: losses.last().copied(),
        before,
        ppl_before: before.map(|s| s.perplexity()),
        acc_before: before.map(|s| s.accuracy()),
        after,
        ppl_after: after.map(|s| s.perplexity()),
        acc_after: after.map(|s| s.accuracy()),
        train_s,
        eval_s,
    };
    let manifest = ExportManifest {
        format: 1,
        spec: spec.clone(),
        head_prune: a.prune,
        base_model: a.model.model_path().display().to_string(),
        base_shape: (cfg.n_layers, cfg.hidden_size, cfg.vocab_size),
        training: serde_json::json!({
            "config": config,
            "data": a.data.display().to_string(),
            "losses": losses,
            "result": result.clone(),
        }),
    };
    write_export(&a.out, &manifest, &trainer.adapters()?)?;
    let json = serde_json::to_string(&result)?;
    std::fs::write(a.out.join("result.json"), &json)?;
    if let Some(s) = &after {
        eprintln!(
            "held-out after: perplexity {:.3}, next-token accuracy {:.4}",
            s.perplexity(),
            s.accuracy()
        );
    }
    eprintln!(
        "loss {:.4} -> {:.4} over {} steps in {train_s:.1} s (this invocation); export in {}",
        result.first_loss.unwrap_or(f32::NAN),
        result.last_loss.unwrap_or(f32::NAN),
        result.steps,
        a.out.display()
    );
    println!("{json}");
    Ok(())
}

/// Arguments of `marill tune eval`.
#[derive(Args)]
pub struct EvalArgs {
    /// The model: the base with the flags' layout, or an export with --adapters.
    #[command(flatten)]
    model: ModelArgs,
    /// Held-out text: plain text (.txt) or JSON lines with a "text" field (.jsonl).
    #[arg(long)]
    data: PathBuf,
    /// Tokens per window.
    #[arg(long, default_value_t = 64)]
    seq_len: usize,
    /// Windows evaluated in plaintext (spread evenly over the text).
    #[arg(long, default_value_t = 32)]
    windows: usize,
    /// Of those, how many also run under secure inference (in-process 2PC).
    #[arg(long, default_value_t = 1)]
    secure_windows: usize,
    /// Write the figures as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// The figures of `marill tune eval`.
#[derive(Serialize, Debug)]
pub struct EvalReport {
    /// Plaintext statistics over all windows.
    pub plain: EvalStats,
    /// Plaintext perplexity.
    pub plain_perplexity: f64,
    /// Plaintext next-token accuracy.
    pub plain_accuracy: f64,
    /// Plaintext statistics over the secure sample.
    pub plain_sample: EvalStats,
    /// Secure statistics over the sample (None: none run).
    pub secure_sample: Option<EvalStats>,
    /// Positions of the sample where secure and plaintext argmax agree.
    pub argmax_agree: usize,
    /// Largest |secure − plaintext| logit over the sample.
    pub max_abs_logit_err: f32,
    /// Seconds of the plaintext and the secure evaluation.
    pub plain_s: f64,
    /// Seconds of the secure sample.
    pub secure_s: f64,
}

/// Evaluates `model` on `windows` of `data` in plaintext, and the first `secure_windows` of
/// them under in-process 2PC as well.
pub fn eval_model(
    model: &marill_model::Llama,
    data: &TokenWindows,
    windows: &[usize],
    secure_windows: usize,
    seeding: marill_mpc::prg::Seeding,
) -> Result<EvalReport> {
    let t = Instant::now();
    let plain = evaluate(model, data, windows)?;
    let plain_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let n = data.seq_len();
    let mut plain_sample = EvalStats::default();
    let mut secure = EvalStats::default();
    let (mut agree, mut worst) = (0usize, 0f32);
    let sample = &windows[..secure_windows.min(windows.len())];
    for &i in sample {
        let w = data.window(i);
        let pl = model
            .forward(&w[..n], 0, &mut model.new_cache())?
            .squeeze(0)?;
        let sl = crate::generate::secure_logits(model, &w[..n], seeding)?.squeeze(0)?;
        plain_sample.add_logits(&pl, &w[1..])?;
        secure.add_logits(&sl, &w[1..])?;
        worst = worst.max(marill_model::llama::max_abs_diff(&pl, &sl)?);
        let pa: Vec<u32> = pl.argmax(candle_core::D::Minus1)?.to_vec1()?;
        let sa: Vec<u32> = sl.argmax(candle_core::D::Minus1)?.to_vec1()?;
        agree += pa.iter().zip(&sa).filter(|(x, y)| x == y).count();
    }
    Ok(EvalReport {
        plain,
        plain_perplexity: plain.perplexity(),
        plain_accuracy: plain.accuracy(),
        plain_sample,
        secure_sample: (!sample.is_empty()).then_some(secure),
        argmax_agree: agree,
        max_abs_logit_err: worst,
        plain_s,
        secure_s: t.elapsed().as_secs_f64(),
    })
}

/// Runs `marill tune eval`.
pub fn eval(a: EvalArgs) -> Result<()> {
    let (model, tok) = load(&a.model)?;
    let eos = model.config().eos_token_ids.first().copied();
    let data = TokenWindows::new(read_corpus(&a.data, &tok, eos, None)?, a.seq_len)?;
    let windows = data.evenly_spaced(a.windows);
    let secure_windows = if model.head_prune() > 1 && a.secure_windows > 0 {
        eprintln!("a head-pruned model has no secure suffix: plaintext only");
        0
    } else {
        a.secure_windows
    };
    let r = eval_model(&model, &data, &windows, secure_windows, a.model.seeding())?;
    println!("| | windows | tokens | perplexity | next-token accuracy | seconds |");
    println!("|---|---:|---:|---:|---:|---:|");
    println!(
        "| plaintext | {} | {} | {:.3} | {:.4} | {:.1} |",
        windows.len(),
        r.plain.tokens,
        r.plain_perplexity,
        r.plain_accuracy,
        r.plain_s
    );
    if let Some(s) = &r.secure_sample {
        println!(
            "| plaintext, secure sample | {secure_windows} | {} | {:.3} | {:.4} | |",
            r.plain_sample.tokens,
            r.plain_sample.perplexity(),
            r.plain_sample.accuracy()
        );
        println!(
            "| secure (2PC), sample | {secure_windows} | {} | {:.3} | {:.4} | {:.1} |",
            s.tokens,
            s.perplexity(),
            s.accuracy(),
            r.secure_s
        );
        println!(
            "secure vs plaintext on the sample: argmax agreement {}/{}, max abs logit error {:.4}",
            r.argmax_agree, s.tokens, r.max_abs_logit_err
        );
    }
    crate::bench::write_json(&a.json, std::slice::from_ref(&r))
}
