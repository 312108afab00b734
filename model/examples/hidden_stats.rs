//! Prints, per layer boundary, the largest |hidden| and the largest row sum of squares of a
//! model on a prompt (used to declare the secure suffix's value ranges).
use candle_core::Device;
use marill_model::LoadedModel;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let path = args.get(1).ok_or("usage: hidden_stats MODEL [PROMPT]")?;
    let prompt = args
        .get(2)
        .map(String::as_str)
        .unwrap_or("The capital of France is");
    let m = LoadedModel::load(std::path::Path::new(path), &Device::Cpu)?;
    let ids = m.tokenizer.encode(prompt)?;
    let mut cache = m.model.new_cache();
    let mut h = m.model.embed(&ids)?;
    for l in 0..m.model.config().n_layers {
        h = m.model.forward_layers(&h, l..l + 1, &mut cache, 0)?;
        let v: Vec<Vec<f32>> = h.squeeze(0)?.to_vec2()?;
        let maxabs = v.iter().flatten().fold(0f32, |a, b| a.max(b.abs()));
        let maxss = v
            .iter()
            .map(|r| r.iter().map(|x| x * x).sum::<f32>())
            .fold(0f32, f32::max);
        println!("after layer {l:2}: max|h| = {maxabs:10.2}  max row Σh² = {maxss:14.1}");
    }
    Ok(())
}
