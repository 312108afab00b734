//! `marill tune` end to end on a tiny random model: training lowers the loss and the held-out
//! perplexity, an interrupted and resumed run exports exactly the adapters of an uninterrupted
//! one, the export loads and serves (`marill generate --adapters` and `marill tune eval` under
//! in-process 2PC agree with plaintext within the tiny model's bound), and the plaintext
//! evaluation of the export reproduces the trainer's own figure.

mod common;

use common::{assert_agrees, marill, temp};
use std::path::Path;

/// The tiny model's secure-vs-plaintext logit bound (as in tests/idle.rs).
const BOUND: f64 = 0.05;

fn run_ok(args: &[&str]) -> (String, String) {
    let out = marill(args).output().expect("run marill");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "marill {args:?} failed: {stderr}");
    (stdout, stderr)
}

fn train_args<'a>(model: &'a str, dir: &'a Path, out: &'a str) -> Vec<String> {
    let train = dir.join("train.txt");
    let held = dir.join("heldout.jsonl");
    [
        "tune",
        "train",
        "--model",
        model,
        "--n-public",
        "2",
        "--hm",
        "2",
        "--lora-rank",
        "4",
        "--data",
        train.to_str().unwrap(),
        "--heldout",
        held.to_str().unwrap(),
        "--eval-windows",
        "4",
        "--steps",
        "6",
        "--seq-len",
        "16",
        "--accum",
        "2",
        "--micro-batch",
        "2",
        "--lr",
        "1e-2",
        "--checkpoint-every",
        "2",
        "--out",
        out,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text.trim().lines().last().expect("a json line")).expect("json")
}

/// A fresh directory holding the tiny model; returns the directory and the model path.
fn with_tiny(name: &str) -> (std::path::PathBuf, String) {
    let dir = temp(name);
    std::fs::create_dir_all(&dir).unwrap();
    let model = dir.join("tiny");
    marill_model::tiny::write_tiny_model(&model, &Default::default()).unwrap();
    let model = model.to_str().unwrap().to_string();
    (dir, model)
}

#[test]
fn tune_trains_resumes_exports_and_serves() {
    let (dir, model) = with_tiny("tune");
    let sentence = "the cat sat on the mat and the dog ate the hat. ";
    std::fs::write(dir.join("train.txt"), sentence.repeat(80)).unwrap();
    let held: String = (0..6)
        .map(|_| format!("{}\n", serde_json::json!({ "text": sentence.repeat(4) })))
        .collect();
    std::fs::write(dir.join("heldout.jsonl"), held).unwrap();

    // uninterrupted
    let a = dir.join("a");
    let args = train_args(&model, &dir, a.to_str().unwrap());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (stdout, _) = run_ok(&args);
    let r = json(&stdout);
    let (first, last) = (
        r["first_loss"].as_f64().unwrap(),
        r["last_loss"].as_f64().unwrap(),
    );
    assert!(last < 0.8 * first, "loss {first} -> {last}");
    let (before, after) = (
        r["ppl_before"].as_f64().unwrap(),
        r["ppl_after"].as_f64().unwrap(),
    );
    assert!(after < before, "held-out perplexity {before} -> {after}");

    // interrupted after 3 steps, then resumed
    let b = dir.join("b");
    let args = train_args(&model, &dir, b.to_str().unwrap());
    let mut first_half: Vec<&str> = args.iter().map(String::as_str).collect();
    first_half.extend(["--stop-after", "3"]);
    let (_, stderr) = run_ok(&first_half);
    assert!(stderr.contains("stopped at step 3/6"), "{stderr}");
    assert!(!b.join("marill.json").exists(), "no export before the end");
    let mut second_half: Vec<&str> = args.iter().map(String::as_str).collect();
    second_half.push("--resume");
    let (_, stderr) = run_ok(&second_half);
    assert!(stderr.contains("resumed at step 3"), "{stderr}");
    let weights = "adapters/adapter_model.safetensors";
    assert_eq!(
        std::fs::read(a.join(weights)).unwrap(),
        std::fs::read(b.join(weights)).unwrap(),
        "resumed adapters differ from the uninterrupted run's"
    );
    let losses = |d: &Path| {
        let m: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(d.join("marill.json")).unwrap()).unwrap();
        m["training"]["losses"].clone()
    };
    assert_eq!(losses(&a), losses(&b));
    let result = |d: &Path| json(&std::fs::read_to_string(d.join("result.json")).unwrap());
    let (ra, rb) = (result(&a), result(&b));
    for key in ["ppl_before", "ppl_after", "first_loss", "last_loss"] {
        assert_eq!(ra[key], rb[key], "{key} of the resumed run");
    }

    // the export's adapters load with the PEFT importer
    let (spec, adapters) =
        marill_model::LoraAdapters::from_peft_dir(&a.join("adapters"), &candle_core::Device::Cpu)
            .unwrap();
    assert_eq!(spec.rank, 4);
    assert_eq!(adapters.len(), 2 * 7, "2 private layers x 7 projections");

    // the export serves: generation under 2PC equals plaintext
    let a_dir = a.to_str().unwrap();
    let (_, stderr) = run_ok(&[
        "generate",
        "--model",
        &model,
        "--adapters",
        a_dir,
        "--prompt",
        "the cat sat",
        "--max-new-tokens",
        "4",
        "--check",
    ]);
    assert!(stderr.contains("2 public, 2 private"), "{stderr}");
    assert!(stderr.contains("head merging 2"), "{stderr}");
    assert_agrees(&stderr, BOUND);

    // held-out evaluation of the export: plaintext reproduces the trainer's figure, the secure
    // sample agrees with plaintext
    let report = dir.join("eval.json");
    let held = dir.join("heldout.jsonl");
    run_ok(&[
        "tune",
        "eval",
        "--model",
        &model,
        "--adapters",
        a_dir,
        "--data",
        held.to_str().unwrap(),
        "--seq-len",
        "16",
        "--windows",
        "4",
        "--secure-windows",
        "2",
        "--json",
        report.to_str().unwrap(),
    ]);
    let e: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    let e = &e[0];
    let ppl = e["plain_perplexity"].as_f64().unwrap();
    assert!(
        (ppl - after).abs() < 1e-9 * after,
        "export evaluates to {ppl}, the trainer measured {after}"
    );
    let tokens = e["secure_sample"]["tokens"].as_u64().unwrap();
    assert_eq!(tokens, 32);
    assert_eq!(e["argmax_agree"].as_u64().unwrap(), tokens);
    assert!(e["max_abs_logit_err"].as_f64().unwrap() < BOUND, "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The pruning baseline trains and evaluates in plaintext; it has no secure suffix.
#[test]
fn pruned_export_is_plaintext_only() {
    let (dir, model) = with_tiny("tune-prune");
    let text = "one two three four five six seven eight nine ten. ".repeat(40);
    let data = dir.join("t.txt");
    std::fs::write(&data, text).unwrap();
    let out = dir.join("p");
    let (data, out) = (data.to_str().unwrap(), out.to_str().unwrap());
    run_ok(&[
        "tune",
        "train",
        "--model",
        &model,
        "--n-public",
        "2",
        "--hm",
        "1",
        "--prune",
        "2",
        "--lora-rank",
        "2",
        "--data",
        data,
        "--steps",
        "2",
        "--seq-len",
        "16",
        "--accum",
        "1",
        "--out",
        out,
    ]);
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("p/marill.json")).unwrap()).unwrap();
    assert_eq!(m["head_prune"], 2);
    let (stdout, stderr) = run_ok(&[
        "tune",
        "eval",
        "--model",
        &model,
        "--adapters",
        out,
        "--data",
        data,
        "--seq-len",
        "16",
        "--windows",
        "2",
    ]);
    assert!(stderr.contains("no secure suffix"), "{stderr}");
    assert!(stdout.contains("| plaintext | 2 |"), "{stdout}");
    let gen = marill(&[
        "generate",
        "--model",
        &model,
        "--adapters",
        out,
        "--prompt",
        "one two",
    ])
    .output()
    .unwrap();
    assert!(!gen.status.success());
    assert!(String::from_utf8_lossy(&gen.stderr).contains("head-pruned"));
    let _ = std::fs::remove_dir_all(&dir);
}
