//! Greedy completion with a model directory or GGUF file.
//!
//! `cargo run -p marill-model --release --example generate -- MODEL "PROMPT" [MAX_NEW_TOKENS]`

use std::path::PathBuf;
use std::time::Instant;

use candle_core::Device;
use marill_model::LoadedModel;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(path), Some(prompt)) = (args.next(), args.next()) else {
        eprintln!("usage: generate MODEL PROMPT [MAX_NEW_TOKENS]");
        std::process::exit(2);
    };
    let max_new: usize = match args.next() {
        Some(n) => n.parse()?,
        None => 32,
    };
    let start = Instant::now();
    let loaded = LoadedModel::load(&PathBuf::from(path), &Device::Cpu)?;
    let cfg = loaded.model.config();
    eprintln!(
        "loaded in {:.2}s: {} layers, hidden {}, {} heads / {} kv heads, vocab {}, tied {}",
        start.elapsed().as_secs_f64(),
        cfg.n_layers,
        cfg.hidden_size,
        cfg.n_heads,
        cfg.n_kv_heads,
        cfg.vocab_size,
        cfg.tie_word_embeddings
    );
    let ids = loaded.tokenizer.encode(&prompt)?;
    eprintln!("prompt ids: {ids:?}");
    let start = Instant::now();
    let new = loaded
        .model
        .generate(&ids, max_new, loaded.eos_token_ids())?;
    let secs = start.elapsed().as_secs_f64();
    eprintln!("new ids: {new:?}");
    println!("{prompt}{}", loaded.tokenizer.decode(&new)?);
    eprintln!("{} tokens in {secs:.2}s", new.len());
    Ok(())
}
