//! Decoder behaviour on tiny random models: split execution, KV cache, Marill specs (head
//! merging, LoRA) against an independent reference implementation.

mod common;

use candle_core::Device;
use common::{max_diff, max_diff_vs_reference, reference_logits, tiny};
use marill_model::lora::{LoraAdapters, LoraInit};
use marill_model::tiny::TinyOptions;
use marill_model::{Llama, LoraSpec, MarillSpec, ModelError, PublicLayers, SpecError, Target};

const PROMPT: &[u32] = &[5, 17, 200, 3, 99, 260, 42, 7, 130];

fn base(name: &str) -> Llama {
    tiny(name, &TinyOptions::default()).model
}

fn full_logits(model: &Llama, tokens: &[u32]) -> candle_core::Tensor {
    model
        .forward(tokens, 0, &mut model.new_cache())
        .expect("forward")
}

fn spec(n_public: usize, lora: Option<LoraSpec>, m: usize) -> MarillSpec {
    MarillSpec {
        public_layers: PublicLayers::Count(n_public),
        lora,
        head_merge: m,
    }
}

fn lora(targets: &[Target]) -> Option<LoraSpec> {
    Some(LoraSpec {
        rank: 4,
        alpha: 8.0,
        targets: targets.to_vec(),
    })
}

fn adapted(model: &Llama, s: &MarillSpec, init: LoraInit) -> Llama {
    let resolved = s.resolve(model.config()).expect("valid spec");
    let adapters =
        LoraAdapters::init(model.config(), &resolved, init, &Device::Cpu).expect("adapters");
    model.with_marill(s, Some(&adapters)).expect("apply spec")
}

#[test]
fn candle_decoder_matches_reference() {
    let model = base("ref-base");
    let logits = full_logits(&model, PROMPT);
    let err = max_diff_vs_reference(&logits, &reference_logits(&model, PROMPT));
    assert!(err < 1e-4, "base model differs from reference by {err}");
}

#[test]
fn prefix_then_suffix_equals_full_at_every_split() {
    let model = base("split");
    let n = model.config().n_layers;
    let full = full_logits(&model, PROMPT);
    for split in 0..=n {
        // The "client" runs the prefix with its own cache, the "server" the suffix with another.
        let mut client = model.new_cache();
        let mut server = model.new_cache();
        let h = model.embed(PROMPT).expect("embed");
        let h = model
            .forward_layers(&h, 0..split, &mut client, 0)
            .expect("prefix");
        let h = model
            .forward_layers(&h, split..n, &mut server, 0)
            .expect("suffix");
        let logits = model.final_norm_and_head(&h).expect("head");
        let err = max_diff(&full, &logits);
        assert!(err <= 1e-6, "split at {split}: max diff {err}");
        for layer in 0..n {
            let (c, s) = (client.seq_len(layer), server.seq_len(layer));
            let expected = if layer < split {
                (PROMPT.len(), 0)
            } else {
                (0, PROMPT.len())
            };
            assert_eq!((c, s), expected, "cache ownership at layer {layer}");
        }
    }
}

#[test]
fn split_decoding_with_caches_matches_full_decoding() {
    let model = base("split-decode");
    let n = model.config().n_layers;
    let split = 2;
    let mut full_cache = model.new_cache();
    let (mut client, mut server) = (model.new_cache(), model.new_cache());
    let mut pos = 0;
    for chunk in [&PROMPT[..5], &PROMPT[5..6], &PROMPT[6..]] {
        let full = model.forward(chunk, pos, &mut full_cache).expect("full");
        let h = model.embed(chunk).expect("embed");
        let h = model
            .forward_layers(&h, 0..split, &mut client, pos)
            .expect("prefix");
        let h = model
            .forward_layers(&h, split..n, &mut server, pos)
            .expect("suffix");
        let logits = model.final_norm_and_head(&h).expect("head");
        assert!(max_diff(&full, &logits) <= 1e-6);
        pos += chunk.len();
    }
}

#[test]
fn kv_cache_decoding_equals_recomputation() {
    let model = base("kv");
    let full = full_logits(&model, PROMPT);
    let full_rows = common::logits_rows(&full);
    let mut cache = model.new_cache();
    for (pos, &tok) in PROMPT.iter().enumerate() {
        let step = model.forward(&[tok], pos, &mut cache).expect("step");
        let row = common::logits_rows(&step).remove(0);
        let err = row
            .iter()
            .zip(&full_rows[pos])
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(err < 1e-4, "position {pos}: cached decode differs by {err}");
    }
    // Chunked prefill: a multi-token chunk after cached positions (causal mask with an offset).
    let mut cache = model.new_cache();
    model
        .forward(&PROMPT[..4], 0, &mut cache)
        .expect("first chunk");
    let chunk = common::logits_rows(&model.forward(&PROMPT[4..], 4, &mut cache).expect("chunk"));
    for (i, row) in chunk.iter().enumerate() {
        let err = row
            .iter()
            .zip(&full_rows[4 + i])
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(err < 1e-4, "chunked position {}: differs by {err}", 4 + i);
    }
    // Greedy generation with the cache equals argmax of full recomputation at every step.
    let generated = model.generate(&PROMPT[..3], 6, &[]).expect("generate");
    let mut seq = PROMPT[..3].to_vec();
    for &tok in &generated {
        let logits = full_logits(&model, &seq);
        assert_eq!(
            marill_model::llama::argmax_last(&logits).expect("argmax"),
            tok
        );
        seq.push(tok);
    }
    assert_eq!(generated.len(), 6);
}

#[test]
fn generate_stops_at_stop_token() {
    let model = base("stop");
    let free = model.generate(PROMPT, 5, &[]).expect("generate");
    let stop = free[2];
    let first = free.iter().position(|&t| t == stop).expect("present");
    let stopped = model.generate(PROMPT, 5, &[stop]).expect("generate");
    assert_eq!(stopped, free[..=first].to_vec());
    assert!(model.generate(PROMPT, 0, &[]).expect("generate").is_empty());
}

#[test]
fn head_merge_one_equals_original() {
    let model = base("hm1");
    let full = full_logits(&model, PROMPT);
    for n_public in [0, 2, 4] {
        let m1 = model
            .with_marill(&spec(n_public, None, 1), None)
            .expect("spec");
        assert_eq!(max_diff(&full, &full_logits(&m1, PROMPT)), 0.0);
    }
}

#[test]
fn head_merge_matches_reference_and_changes_logits() {
    let model = base("hm");
    let full = full_logits(&model, PROMPT);
    // 4 query heads over 2 kv heads: m = 2 merges heads sharing a kv head, m = 4 crosses groups.
    for m in [2, 4] {
        let merged = model.with_marill(&spec(1, None, m), None).expect("spec");
        for (i, layer) in merged.layers().iter().enumerate() {
            let expected = if i == 0 { 1 } else { m };
            assert_eq!(layer.self_attn().head_merge(), expected, "layer {i}");
        }
        let logits = full_logits(&merged, PROMPT);
        let err = max_diff_vs_reference(&logits, &reference_logits(&merged, PROMPT));
        assert!(err < 1e-4, "m = {m}: differs from reference by {err}");
        assert!(
            max_diff(&full, &logits) > 1e-3,
            "m = {m} should change the logits"
        );
        // The public layer is untouched: prefix hidden states equal the base model's.
        let h = model.embed(PROMPT).expect("embed");
        let a = model
            .forward_layers(&h, 0..1, &mut model.new_cache(), 0)
            .expect("base prefix");
        let b = merged
            .forward_layers(&h, 0..1, &mut merged.new_cache(), 0)
            .expect("merged prefix");
        assert_eq!(max_diff(&a, &b), 0.0);
    }
}

#[test]
fn head_merge_kv_cache_equals_recomputation() {
    let model = base("hm-kv");
    let merged = model.with_marill(&spec(0, None, 2), None).expect("spec");
    let full = common::logits_rows(&full_logits(&merged, PROMPT));
    let mut cache = merged.new_cache();
    let prefill = merged
        .forward(&PROMPT[..4], 0, &mut cache)
        .expect("prefill");
    assert_eq!(
        cache.get(0).map(|(k, _)| k.dims().to_vec()),
        Some(vec![1, 2, 4, 8])
    );
    let mut last = common::logits_rows(&prefill).remove(3);
    for (pos, &tok) in PROMPT.iter().enumerate().skip(4) {
        let err = last
            .iter()
            .zip(&full[pos - 1])
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(err < 1e-4, "position {}: {err}", pos - 1);
        last =
            common::logits_rows(&merged.forward(&[tok], pos, &mut cache).expect("step")).remove(0);
    }
}

#[test]
fn lora_with_zero_b_equals_base() {
    let model = base("lora-zero");
    let full = full_logits(&model, PROMPT);
    let s = spec(2, lora(&Target::ALL), 1);
    let m = adapted(&model, &s, LoraInit::ZeroB { seed: 3 });
    assert!(m.layers()[3].projection(Target::Down).lora().is_some());
    assert!(m.layers()[1].projection(Target::Q).lora().is_none());
    assert_eq!(max_diff(&full, &full_logits(&m, PROMPT)), 0.0);
}

#[test]
fn random_lora_changes_logits_and_matches_reference() {
    let model = base("lora-rand");
    let full = full_logits(&model, PROMPT);
    for targets in [vec![Target::Q, Target::V], Target::ALL.to_vec()] {
        for m in [1, 2] {
            let s = spec(1, lora(&targets), m);
            let am = adapted(&model, &s, LoraInit::Random { seed: 9, std: 0.2 });
            let logits = full_logits(&am, PROMPT);
            assert!(
                max_diff(&full, &logits) > 1e-3,
                "lora {targets:?} m={m} had no effect"
            );
            let err = max_diff_vs_reference(&logits, &reference_logits(&am, PROMPT));
            assert!(
                err < 1e-4,
                "lora {targets:?} m={m}: differs from reference by {err}"
            );
        }
    }
}

#[test]
fn adapters_are_checked_against_the_spec() {
    let model = base("lora-check");
    let cfg = model.config().clone();
    let s = spec(2, lora(&[Target::Q]), 1);
    // Adapters generated for layers 1.. (n_public = 1) put one on layer 1, public under s.
    let wide = spec(1, lora(&[Target::Q]), 1).resolve(&cfg).expect("valid");
    let adapters =
        LoraAdapters::init(&cfg, &wide, LoraInit::ZeroB { seed: 1 }, &Device::Cpu).expect("init");
    let e = model
        .with_marill(&s, Some(&adapters))
        .expect_err("public layer");
    assert!(
        matches!(
            e,
            ModelError::Spec(SpecError::LoraOnPublicLayer {
                layer: 1,
                n_public: 2
            })
        ),
        "{e}"
    );
    assert!(e
        .to_string()
        .contains("lora adapter on layer 1, but layers 0..2 are public"));

    // Spec has lora but no adapters, and the reverse.
    let e = model.with_marill(&s, None).expect_err("no adapters");
    assert!(
        e.to_string().contains("the spec has lora but no adapters"),
        "{e}"
    );
    let e = model
        .with_marill(&spec(1, None, 1), Some(&adapters))
        .expect_err("no lora in spec");
    assert!(e.to_string().contains("the spec has no lora"), "{e}");

    // Target outside the spec.
    let e = model
        .with_marill(&spec(1, lora(&[Target::K]), 1), Some(&adapters))
        .expect_err("target");
    assert!(
        e.to_string()
            .contains("targets q, which the spec does not list"),
        "{e}"
    );

    // Rank mismatch.
    let r8 = spec(
        1,
        Some(LoraSpec {
            rank: 8,
            alpha: 8.0,
            targets: vec![Target::Q],
        }),
        1,
    );
    let e = model.with_marill(&r8, Some(&adapters)).expect_err("rank");
    assert!(e.to_string().contains("adapters have rank 4"), "{e}");

    // Spec errors surface through with_marill.
    let e = model
        .with_marill(&spec(0, None, 3), None)
        .expect_err("m = 3");
    assert!(e
        .to_string()
        .contains("head_merge m = 3 must divide the number of query heads (4)"));

    // A spec'd model cannot take a second spec.
    let once = model.with_marill(&spec(1, None, 2), None).expect("spec");
    assert!(once.with_marill(&spec(1, None, 2), None).is_err());
    assert_eq!(once.marill_spec().map(|r| r.merged_heads()), Some(2));
}

#[test]
fn bad_inputs_are_errors_not_panics() {
    let model = base("bad-input");
    let vocab = model.config().vocab_size as u32;
    let e = model.embed(&[1, vocab]).expect_err("oov");
    assert!(e
        .to_string()
        .contains(&format!("token id {vocab} is outside the vocabulary")));
    assert!(model.embed(&[]).is_err());

    let h = model.embed(&PROMPT[..3]).expect("embed");
    let mut cache = model.new_cache();
    let e = model
        .forward_layers(&h, 0..9, &mut cache, 0)
        .expect_err("range");
    assert!(
        e.to_string()
            .contains("layer range 0..9 is not within 0..4"),
        "{e}"
    );
    let e = model
        .forward_layers(&h, 0..2, &mut cache, 1)
        .expect_err("pos");
    assert!(e
        .to_string()
        .contains("layer 0 has 0 cached positions, but the input starts at position 1"));
    model.forward_layers(&h, 0..2, &mut cache, 0).expect("ok");
    let e = model
        .forward_layers(&h, 0..2, &mut cache, 0)
        .expect_err("stale pos");
    assert!(
        e.to_string().contains("layer 0 has 3 cached positions"),
        "{e}"
    );
    let e = model
        .forward_layers(&h, 0..2, &mut marill_model::KvCache::new(3), 0)
        .expect_err("cache size");
    assert!(e
        .to_string()
        .contains("cache covers 3 layers, the model has 4"));
    let wrong = candle_core::Tensor::zeros((1, 3, 7), candle_core::DType::F32, &Device::Cpu)
        .expect("zeros");
    assert!(model
        .forward_layers(&wrong, 0..1, &mut model.new_cache(), 0)
        .is_err());
    let long: Vec<u32> = vec![1; 257];
    let e = model
        .forward(&long, 0, &mut model.new_cache())
        .expect_err("too long");
    assert!(
        e.to_string().contains("exceed max_position_embeddings 256"),
        "{e}"
    );
}

#[test]
fn untied_head_and_mha_models_work() {
    let opts = TinyOptions {
        seed: 11,
        tie_word_embeddings: false,
        n_kv_heads: 4,
        ..TinyOptions::default()
    };
    let model = tiny("untied", &opts).model;
    assert!(!model.config().tie_word_embeddings);
    let logits = full_logits(&model, PROMPT);
    let err = max_diff_vs_reference(&logits, &reference_logits(&model, PROMPT));
    assert!(err < 1e-4, "untied model differs from reference by {err}");
    let merged = model.with_marill(&spec(2, None, 4), None).expect("spec");
    let logits = full_logits(&merged, PROMPT);
    let err = max_diff_vs_reference(&logits, &reference_logits(&merged, PROMPT));
    assert!(
        err < 1e-4,
        "untied merged model differs from reference by {err}"
    );
}
