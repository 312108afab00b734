//! Loading: tiny models through the safetensors and GGUF paths, PEFT adapters, checkpoint errors,
//! and the real SmolLM2 GGUF (`scripts/fetch-smollm2.sh`; its test fails without it).

mod common;

use std::collections::HashMap;

use candle_core::{Device, Tensor};
use common::{max_diff, tmp_dir};
use marill_model::lora::{LoraAdapters, LoraInit};
use marill_model::tiny::{
    tiny_config, tiny_weights, write_tiny_gguf, write_tiny_model, TinyOptions,
};
use marill_model::weights::TensorStore;
use marill_model::{Llama, LoadedModel, LoraSpec, MarillSpec, ModelError, PublicLayers, Target};

const TEXT: &str = "the cat sat on the mat, then 42 dogs ran in.";

fn logits(model: &Llama, tokens: &[u32]) -> Tensor {
    model
        .forward(tokens, 0, &mut model.new_cache())
        .expect("forward")
}

#[test]
fn tiny_model_save_load_round_trip() {
    let opts = TinyOptions {
        seed: 5,
        ..TinyOptions::default()
    };
    let dir = tmp_dir("round-trip");
    let cfg = write_tiny_model(&dir, &opts).expect("write");
    for f in ["config.json", "model.safetensors", "tokenizer.json"] {
        assert!(dir.join(f).is_file(), "{f} missing");
    }
    let loaded = LoadedModel::load(&dir, &Device::Cpu).expect("load");
    assert_eq!(loaded.model.config(), &cfg);

    // Same weights as generated in memory.
    let weights = tiny_weights(&cfg, opts.seed, &Device::Cpu).expect("weights");
    let in_memory = Llama::load(&TensorStore::new(weights), &cfg, &Device::Cpu).expect("build");
    let ids = loaded.tokenizer.encode(TEXT).expect("encode");
    assert_eq!(
        max_diff(&logits(&in_memory, &ids), &logits(&loaded.model, &ids)),
        0.0
    );

    // A different seed gives a different model.
    let other = tiny_weights(&cfg, 6, &Device::Cpu).expect("weights");
    let other = Llama::load(&TensorStore::new(other), &cfg, &Device::Cpu).expect("build");
    assert!(max_diff(&logits(&other, &ids), &logits(&loaded.model, &ids)) > 1e-3);

    // Tokenizer: merges apply, text round-trips, eos is special.
    assert_eq!(loaded.tokenizer.decode(&ids).expect("decode"), TEXT);
    let the = loaded.tokenizer.token_to_id("Ġthe").expect("merged token");
    assert!(ids.contains(&the));
    assert!(ids.len() < TEXT.len());
    let eos = cfg.eos_token_ids[0];
    assert_eq!(
        loaded.tokenizer.encode("<|endoftext|>").expect("encode"),
        vec![eos]
    );
    let text = loaded.generate_text("the", 5).expect("generate");
    assert!(text.len() <= 5 * 4, "at most 5 tokens of text: {text:?}");
}

#[test]
fn gguf_path_matches_safetensors_path() {
    for (name, tie) in [("gguf-tied", true), ("gguf-untied", false)] {
        let opts = TinyOptions {
            seed: 21,
            tie_word_embeddings: tie,
            ..TinyOptions::default()
        };
        let dir = tmp_dir(name);
        write_tiny_model(&dir, &opts).expect("write dir");
        let gguf = dir.join("tiny.gguf");
        write_tiny_gguf(&gguf, &opts).expect("write gguf");
        let from_dir = LoadedModel::load(&dir, &Device::Cpu).expect("load dir");
        let from_gguf = LoadedModel::load(&gguf, &Device::Cpu).expect("load gguf");
        let (a, b) = (from_dir.model.config(), from_gguf.model.config());
        assert_eq!(a.vocab_size, b.vocab_size);
        assert_eq!(a.tie_word_embeddings, b.tie_word_embeddings);
        assert_eq!(
            (a.n_heads, a.n_kv_heads, a.head_dim),
            (b.n_heads, b.n_kv_heads, b.head_dim)
        );
        assert_eq!(a.eos_token_ids, b.eos_token_ids);
        // The tokenizer rebuilt from GGUF metadata agrees with tokenizer.json.
        let ids = from_dir.tokenizer.encode(TEXT).expect("encode");
        assert_eq!(from_gguf.tokenizer.encode(TEXT).expect("encode"), ids);
        assert_eq!(from_gguf.tokenizer.decode(&ids).expect("decode"), TEXT);
        // Q/K were un-permuted back to HF layout: the weights are identical.
        let q_dir = from_dir.model.layers()[1].self_attn().k_proj().weight();
        let q_gguf = from_gguf.model.layers()[1].self_attn().k_proj().weight();
        assert_eq!(max_diff(q_dir, q_gguf), 0.0);
        // Hence the logits (GGUF stores eps and rope base as f32: tiny differences only).
        let err = max_diff(
            &logits(&from_dir.model, &ids),
            &logits(&from_gguf.model, &ids),
        );
        assert!(
            err < 1e-4,
            "{name}: gguf and safetensors logits differ by {err}"
        );
    }
}

#[test]
fn peft_adapters_round_trip() {
    let opts = TinyOptions::default();
    let cfg = tiny_config(&opts).expect("config");
    let dir = tmp_dir("peft-model");
    write_tiny_model(&dir, &opts).expect("write");
    let model = LoadedModel::load(&dir, &Device::Cpu).expect("load").model;
    let lora = LoraSpec {
        rank: 2,
        alpha: 4.0,
        targets: vec![Target::Q, Target::Up, Target::V],
    };
    let spec = MarillSpec {
        public_layers: PublicLayers::Fraction(0.5),
        lora: Some(lora),
        head_merge: 2,
    };
    let resolved = spec.resolve(&cfg).expect("valid");
    let adapters = LoraAdapters::init(
        &cfg,
        &resolved,
        LoraInit::Random { seed: 2, std: 0.3 },
        &Device::Cpu,
    )
    .expect("init");
    assert_eq!(adapters.len(), 2 * 3);
    let peft_dir = tmp_dir("peft-adapter");
    let resolved_lora = resolved.lora().expect("has lora").clone();
    adapters.save_peft(&peft_dir, &resolved_lora).expect("save");
    let (loaded_spec, loaded) = LoraAdapters::from_peft_dir(&peft_dir, &Device::Cpu).expect("load");
    assert_eq!(loaded_spec, resolved_lora);
    assert_eq!(loaded.len(), adapters.len());
    let spec2 = MarillSpec {
        lora: Some(loaded_spec),
        ..spec.clone()
    };
    let a = model.with_marill(&spec, Some(&adapters)).expect("apply");
    let b = model
        .with_marill(&spec2, Some(&loaded))
        .expect("apply loaded");
    let ids = [3u32, 9, 27, 81];
    assert_eq!(max_diff(&logits(&a, &ids), &logits(&b, &ids)), 0.0);

    // Adapters on a public layer (PEFT trained on all layers) are rejected on apply.
    let all = MarillSpec {
        public_layers: PublicLayers::Count(0),
        ..spec.clone()
    };
    let everywhere = LoraAdapters::init(
        &cfg,
        &all.resolve(&cfg).expect("valid"),
        LoraInit::ZeroB { seed: 1 },
        &Device::Cpu,
    )
    .expect("init");
    let e = model
        .with_marill(&spec, Some(&everywhere))
        .expect_err("public layer");
    assert!(
        e.to_string()
            .contains("lora adapter on layer 0, but layers 0..2 are public"),
        "{e}"
    );

    // A malformed PEFT config is a clear error.
    std::fs::write(
        peft_dir.join("adapter_config.json"),
        r#"{"r": 2, "lora_alpha": 4, "target_modules": ["q_proj"], "use_dora": true}"#,
    )
    .expect("write");
    let e = LoraAdapters::from_peft_dir(&peft_dir, &Device::Cpu).expect_err("dora");
    assert!(e.to_string().contains("DoRA"), "{e}");
    std::fs::write(
        peft_dir.join("adapter_config.json"),
        r#"{"r": 2, "lora_alpha": 4, "target_modules": ["q_proj"]}"#,
    )
    .expect("write");
    let e = LoraAdapters::from_peft_dir(&peft_dir, &Device::Cpu).expect_err("extra targets");
    assert!(
        e.to_string().contains("which target_modules does not list"),
        "{e}"
    );
}

fn store_with(
    cfg: &marill_model::ModelConfig,
    edit: impl FnOnce(&mut HashMap<String, Tensor>),
) -> Result<Llama, ModelError> {
    let mut w = tiny_weights(cfg, 0, &Device::Cpu).expect("weights");
    edit(&mut w);
    Llama::load(&TensorStore::new(w), cfg, &Device::Cpu)
}

#[test]
fn bad_checkpoints_are_clear_errors() {
    let cfg = tiny_config(&TinyOptions::default()).expect("config");
    let e = store_with(&cfg, |w| {
        w.remove("model.layers.2.mlp.up_proj.weight");
    })
    .expect_err("missing");
    assert_eq!(
        e.to_string(),
        "missing tensor model.layers.2.mlp.up_proj.weight"
    );

    let e = store_with(&cfg, |w| {
        let t = Tensor::zeros((16, 33), candle_core::DType::F32, &Device::Cpu).expect("zeros");
        w.insert("model.layers.0.self_attn.k_proj.weight".into(), t);
    })
    .expect_err("shape");
    assert_eq!(
        e.to_string(),
        "tensor model.layers.0.self_attn.k_proj.weight has shape [16, 33], expected [16, 32]"
    );

    let e = store_with(&cfg, |w| {
        let t = Tensor::zeros(32, candle_core::DType::F32, &Device::Cpu).expect("zeros");
        w.insert("model.layers.0.self_attn.q_proj.bias".into(), t);
    })
    .expect_err("bias");
    assert!(e
        .to_string()
        .contains("tensors the llama decoder does not use: model.layers.0.self_attn.q_proj.bias"));

    // Missing / invalid config.json.
    let dir = tmp_dir("bad-config");
    write_tiny_model(&dir, &TinyOptions::default()).expect("write");
    std::fs::write(dir.join("config.json"), r#"{"hidden_size": 32}"#).expect("write");
    let e = LoadedModel::load(&dir, &Device::Cpu).expect_err("config");
    assert!(
        e.to_string().contains("intermediate_size: missing") || e.to_string().contains("missing"),
        "{e}"
    );
    std::fs::write(dir.join("config.json"), "{not json").expect("write");
    let e = LoadedModel::load(&dir, &Device::Cpu).expect_err("json");
    assert!(e.to_string().starts_with("invalid json in "), "{e}");
    let e = LoadedModel::load(&dir.join("nope.bin"), &Device::Cpu).expect_err("path");
    assert!(
        e.to_string()
            .contains("expected a model directory or a .gguf file"),
        "{e}"
    );

    // A truncated GGUF file.
    let gguf = dir.join("broken.gguf");
    write_tiny_gguf(&gguf, &TinyOptions::default()).expect("write");
    let bytes = std::fs::read(&gguf).expect("read");
    std::fs::write(&gguf, &bytes[..bytes.len() / 2]).expect("write");
    assert!(LoadedModel::load(&gguf, &Device::Cpu).is_err());
    std::fs::write(&gguf, b"GGUF").expect("write");
    let e = LoadedModel::load(&gguf, &Device::Cpu).expect_err("header");
    assert!(e.to_string().starts_with("gguf: "), "{e}");
}

#[test]
fn smollm2_gguf_completes_paris() {
    let path = common::smollm2();
    let loaded = LoadedModel::load(&path, &Device::Cpu).expect("load smollm2");
    let cfg = loaded.model.config();
    assert_eq!(
        (
            cfg.n_layers,
            cfg.hidden_size,
            cfg.n_heads,
            cfg.n_kv_heads,
            cfg.intermediate_size
        ),
        (30, 576, 9, 3, 1536)
    );
    assert_eq!(cfg.vocab_size, 49152);
    assert!(cfg.tie_word_embeddings);

    let prompt = "The capital of France is";
    let ids = loaded.tokenizer.encode(prompt).expect("encode");
    assert_eq!(loaded.tokenizer.decode(&ids).expect("decode"), prompt);
    assert_eq!(
        loaded.tokenizer.encode("<|im_start|>").expect("encode"),
        vec![1]
    );

    assert_eq!(ids, vec![504, 3575, 282, 4649, 314]);

    // Reference logits at the last prompt position, from candle-transformers' `quantized_llama`
    // (interleaved RoPE on the GGUF's permuted Q/K) run on this file dequantised to f32: they
    // pin down the Q/K un-permutation, which a wrong layout still passes "Paris" without.
    let last = logits(&loaded.model, &ids)
        .get(0)
        .and_then(|l| l.get(ids.len() - 1))
        .and_then(|l| l.to_vec1::<f32>())
        .expect("logits");
    for (token, expected) in [
        (7042usize, 17.371258f32),
        (260, 14.888588),
        (4528, 13.244976),
    ] {
        let got = last[token];
        assert!(
            (got - expected).abs() < 2e-3,
            "logit of {token}: {got}, expected {expected}"
        );
    }

    let text = loaded.generate_text(prompt, 8).expect("generate");
    println!("smollm2: {prompt:?} -> {text:?}");
    assert!(text.contains("Paris"), "completion was {text:?}");

    // Split execution and Marill specs on the real model.
    let model = &loaded.model;
    let full = logits(model, &ids);
    let h = model.embed(&ids).expect("embed");
    let (mut c1, mut c2) = (model.new_cache(), model.new_cache());
    let h = model.forward_layers(&h, 0..20, &mut c1, 0).expect("prefix");
    let h = model
        .forward_layers(&h, 20..30, &mut c2, 0)
        .expect("suffix");
    assert!(max_diff(&full, &model.final_norm_and_head(&h).expect("head")) <= 1e-5);

    let spec = MarillSpec {
        public_layers: PublicLayers::Fraction(2.0 / 3.0),
        lora: Some(LoraSpec {
            rank: 8,
            alpha: 16.0,
            targets: vec![Target::Q, Target::V],
        }),
        head_merge: 1,
    };
    let resolved = spec.resolve(cfg).expect("valid");
    assert_eq!(resolved.n_public(), 20);
    let zero = LoraAdapters::init(cfg, &resolved, LoraInit::ZeroB { seed: 0 }, &Device::Cpu)
        .expect("init");
    let adapted = model.with_marill(&spec, Some(&zero)).expect("apply");
    assert_eq!(max_diff(&full, &logits(&adapted, &ids)), 0.0);
    let merged = model
        .with_marill(
            &MarillSpec {
                head_merge: 3,
                lora: None,
                ..spec
            },
            None,
        )
        .expect("apply hm");
    let l = logits(&merged, &ids);
    let finite = l
        .flatten_all()
        .expect("flat")
        .to_vec1::<f32>()
        .expect("vec");
    assert!(finite.iter().all(|v| v.is_finite()));
}
