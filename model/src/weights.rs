//! Checkpoint tensors: a name-keyed store with shape checks, and readers for safetensors and GGUF.
//!
//! Everything is converted to f32 on load and keyed by Hugging Face checkpoint names
//! (`model.layers.N.self_attn.q_proj.weight`, ...), so the decoder has one loading path whatever
//! the file format.
//!
//! # GGUF and rotary layout
//!
//! llama.cpp's converter permutes the rows of `q_proj` and `k_proj` inside every head so that the
//! two halves HF's "rotate-half" RoPE pairs up (`i`, `i + d/2`) become adjacent pairs (`2i`,
//! `2i + 1`) for its interleaved RoPE. We **un-permute** those rows back to the HF layout when
//! loading a GGUF file (see [`unpermute_qk_rows`]), so the decoder uses rotate-half RoPE for every
//! model and the weights the secure executor shares are in one layout. Quantisation blocks run
//! along rows, so un-permuting after dequantisation is exact.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::io::{BufReader, Read, Seek};
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file;
use candle_core::{DType, Device, Tensor};

use crate::error::{ModelError, Result};

/// Tensors of a checkpoint by HF name, with tracking of which ones the model consumed.
#[derive(Debug)]
pub struct TensorStore {
    tensors: HashMap<String, Tensor>,
    used: RefCell<BTreeSet<String>>,
}

impl TensorStore {
    /// Wraps a name -> tensor map.
    pub fn new(tensors: HashMap<String, Tensor>) -> Self {
        Self {
            tensors,
            used: RefCell::new(BTreeSet::new()),
        }
    }

    /// Whether a tensor is present.
    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// Takes a tensor as contiguous f32, checking its shape.
    pub fn get(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let t = self
            .tensors
            .get(name)
            .ok_or_else(|| ModelError::MissingTensor {
                name: name.to_string(),
            })?;
        if t.dims() != shape {
            return Err(ModelError::TensorShape {
                name: name.to_string(),
                expected: shape.to_vec(),
                got: t.dims().to_vec(),
            });
        }
        self.used.borrow_mut().insert(name.to_string());
        Ok(t.to_dtype(DType::F32)?.contiguous()?)
    }

    /// Marks a tensor as deliberately ignored.
    pub fn ignore(&self, name: &str) {
        if self.contains(name) {
            self.used.borrow_mut().insert(name.to_string());
        }
    }

    /// Names present but never taken or ignored, sorted.
    pub fn unused(&self) -> Vec<String> {
        let used = self.used.borrow();
        let mut names: Vec<String> = self
            .tensors
            .keys()
            .filter(|n| !used.contains(*n))
            .cloned()
            .collect();
        names.sort();
        names
    }

    /// Consumes the store, returning the map.
    pub fn into_inner(self) -> HashMap<String, Tensor> {
        self.tensors
    }
}

/// The `*.safetensors` files of a directory, sorted by name (handles sharded checkpoints).
pub fn safetensors_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir).map_err(|e| ModelError::io(dir, e))?;
    let mut files = Vec::new();
    for entry in entries {
        let path = entry.map_err(|e| ModelError::io(dir, e))?.path();
        if path.extension().is_some_and(|e| e == "safetensors") {
            files.push(path);
        }
    }
    files.sort();
    if files.is_empty() {
        return Err(ModelError::io(
            dir,
            std::io::Error::new(std::io::ErrorKind::NotFound, "no *.safetensors file"),
        ));
    }
    Ok(files)
}

/// Reads safetensors files into one map (a name appearing twice is an error).
pub fn read_safetensors(files: &[PathBuf], device: &Device) -> Result<HashMap<String, Tensor>> {
    let mut all = HashMap::new();
    for file in files {
        let tensors = candle_core::safetensors::load(file, device).map_err(|e| {
            ModelError::io(
                file,
                std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()),
            )
        })?;
        for (name, t) in tensors {
            if all.insert(name.clone(), t).is_some() {
                return Err(ModelError::Input(format!(
                    "tensor {name} appears in more than one safetensors file"
                )));
            }
        }
    }
    Ok(all)
}

/// Maps a GGUF llama tensor name to its HF name, or `None` if unknown.
pub fn gguf_to_hf_name(name: &str) -> Option<String> {
    match name {
        "token_embd.weight" => return Some("model.embed_tokens.weight".into()),
        "output_norm.weight" => return Some("model.norm.weight".into()),
        "output.weight" => return Some("lm_head.weight".into()),
        _ => {}
    }
    let rest = name.strip_prefix("blk.")?;
    let (layer, leaf) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let hf_leaf = match leaf {
        "attn_norm.weight" => "input_layernorm.weight",
        "ffn_norm.weight" => "post_attention_layernorm.weight",
        "attn_q.weight" => "self_attn.q_proj.weight",
        "attn_k.weight" => "self_attn.k_proj.weight",
        "attn_v.weight" => "self_attn.v_proj.weight",
        "attn_output.weight" => "self_attn.o_proj.weight",
        "ffn_gate.weight" => "mlp.gate_proj.weight",
        "ffn_up.weight" => "mlp.up_proj.weight",
        "ffn_down.weight" => "mlp.down_proj.weight",
        _ => return None,
    };
    Some(format!("model.layers.{layer}.{hf_leaf}"))
}

/// Maps an HF llama tensor name to its GGUF name, or `None` if unknown (inverse of
/// [`gguf_to_hf_name`]).
pub fn hf_to_gguf_name(name: &str) -> Option<String> {
    match name {
        "model.embed_tokens.weight" => return Some("token_embd.weight".into()),
        "model.norm.weight" => return Some("output_norm.weight".into()),
        "lm_head.weight" => return Some("output.weight".into()),
        _ => {}
    }
    let rest = name.strip_prefix("model.layers.")?;
    let (layer, leaf) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let gguf_leaf = match leaf {
        "input_layernorm.weight" => "attn_norm.weight",
        "post_attention_layernorm.weight" => "ffn_norm.weight",
        "self_attn.q_proj.weight" => "attn_q.weight",
        "self_attn.k_proj.weight" => "attn_k.weight",
        "self_attn.v_proj.weight" => "attn_v.weight",
        "self_attn.o_proj.weight" => "attn_output.weight",
        "mlp.gate_proj.weight" => "ffn_gate.weight",
        "mlp.up_proj.weight" => "ffn_up.weight",
        "mlp.down_proj.weight" => "ffn_down.weight",
        _ => return None,
    };
    Some(format!("blk.{layer}.{gguf_leaf}"))
}

/// Undoes llama.cpp's Q/K row permutation: GGUF rows of a head ordered as pairs
/// `(0, d/2), (1, d/2+1), ...` go back to HF's `0..d/2, d/2..d`.
///
/// `w` is `(n_heads * head_dim, in)`; GGUF row `h*d + 2i + j` holds HF row `h*d + j*d/2 + i`.
pub fn unpermute_qk_rows(w: &Tensor, n_heads: usize, head_dim: usize) -> Result<Tensor> {
    let (rows, cols) = w.dims2()?;
    if rows != n_heads * head_dim || !head_dim.is_multiple_of(2) {
        return Err(ModelError::Gguf(format!(
            "cannot un-permute a ({rows}, {cols}) q/k weight for {n_heads} heads of width {head_dim}"
        )));
    }
    Ok(w.reshape((n_heads, head_dim / 2, 2, cols))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape((rows, cols))?)
}

/// Applies llama.cpp's Q/K row permutation (HF layout -> GGUF layout); inverse of
/// [`unpermute_qk_rows`]. Used to write GGUF test files.
pub fn permute_qk_rows(w: &Tensor, n_heads: usize, head_dim: usize) -> Result<Tensor> {
    let (rows, cols) = w.dims2()?;
    if rows != n_heads * head_dim || !head_dim.is_multiple_of(2) {
        return Err(ModelError::Gguf(format!(
            "cannot permute a ({rows}, {cols}) q/k weight for {n_heads} heads of width {head_dim}"
        )));
    }
    Ok(w.reshape((n_heads, 2, head_dim / 2, cols))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape((rows, cols))?)
}

/// A parsed GGUF file: its header (metadata and tensor index) and a reader for the data.
pub struct GgufFile {
    path: PathBuf,
    content: gguf_file::Content,
    reader: BufReader<std::fs::File>,
}

impl GgufFile {
    /// Opens and parses the header of a GGUF file.
    pub fn open(path: &Path) -> Result<Self> {
        let file = std::fs::File::open(path).map_err(|e| ModelError::io(path, e))?;
        let mut reader = BufReader::new(file);
        let content = gguf_file::Content::read(&mut reader)
            .map_err(|e| ModelError::Gguf(format!("{}: {e}", path.display())))?;
        Ok(Self {
            path: path.to_path_buf(),
            content,
            reader,
        })
    }

    /// The metadata key/value pairs.
    pub fn metadata(&self) -> &HashMap<String, gguf_file::Value> {
        &self.content.metadata
    }

    /// Whether a tensor is present.
    pub fn has_tensor(&self, name: &str) -> bool {
        self.content.tensor_infos.contains_key(name)
    }

    /// Tensor names, sorted.
    pub fn tensor_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.content.tensor_infos.keys().cloned().collect();
        names.sort();
        names
    }

    /// Reads one tensor and dequantises it to f32.
    pub fn dequantize(&mut self, name: &str, device: &Device) -> Result<Tensor> {
        read_dequantized(&self.content, &mut self.reader, name, device)
            .map_err(|e| ModelError::Gguf(format!("{}: tensor {name}: {e}", self.path.display())))
    }

    /// Reads every tensor of a llama GGUF file, dequantised to f32 and keyed by HF name, with Q/K
    /// rows un-permuted to HF layout. Unknown tensors are an error (they would otherwise be
    /// silently ignored, e.g. `rope_freqs.weight` of rope-scaled models).
    pub fn llama_tensors(
        &mut self,
        n_heads: usize,
        n_kv_heads: usize,
        head_dim: usize,
        device: &Device,
    ) -> Result<HashMap<String, Tensor>> {
        let mut out = HashMap::new();
        for name in self.tensor_names() {
            let hf = gguf_to_hf_name(&name).ok_or_else(|| {
                ModelError::Gguf(format!("unsupported tensor {name} in a llama gguf file"))
            })?;
            let mut t = self.dequantize(&name, device)?;
            if hf.ends_with("self_attn.q_proj.weight") {
                t = unpermute_qk_rows(&t, n_heads, head_dim)?;
            } else if hf.ends_with("self_attn.k_proj.weight") {
                t = unpermute_qk_rows(&t, n_kv_heads, head_dim)?;
            }
            out.insert(hf, t);
        }
        Ok(out)
    }
}

fn read_dequantized<R: Read + Seek>(
    content: &gguf_file::Content,
    reader: &mut R,
    name: &str,
    device: &Device,
) -> candle_core::Result<Tensor> {
    let q = content.tensor(reader, name, device)?;
    q.dequantize(device)?.to_dtype(DType::F32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for hf in [
            "model.embed_tokens.weight",
            "model.norm.weight",
            "lm_head.weight",
            "model.layers.12.self_attn.k_proj.weight",
            "model.layers.0.mlp.down_proj.weight",
            "model.layers.3.post_attention_layernorm.weight",
        ] {
            let g = hf_to_gguf_name(hf).expect("known name");
            assert_eq!(gguf_to_hf_name(&g).as_deref(), Some(hf));
        }
        assert_eq!(gguf_to_hf_name("rope_freqs.weight"), None);
        assert_eq!(gguf_to_hf_name("blk.x.attn_q.weight"), None);
    }

    #[test]
    fn qk_permutation_is_llama_cpp_order_and_inverts() -> Result<()> {
        // 2 heads of width 4, 1 column: HF rows 0..8.
        let hf = Tensor::arange(0f32, 8.0, &Device::Cpu)?.reshape((8, 1))?;
        let gguf = permute_qk_rows(&hf, 2, 4)?;
        // Per head, rows (0, 2, 1, 3): pairs (i, i + d/2) made adjacent.
        let rows: Vec<f32> = gguf.flatten_all()?.to_vec1()?;
        assert_eq!(rows, vec![0., 2., 1., 3., 4., 6., 5., 7.]);
        let back: Vec<f32> = unpermute_qk_rows(&gguf, 2, 4)?.flatten_all()?.to_vec1()?;
        assert_eq!(back, (0..8).map(|i| i as f32).collect::<Vec<_>>());
        assert!(unpermute_qk_rows(&gguf, 3, 4).is_err());
        Ok(())
    }

    #[test]
    fn store_checks_names_and_shapes() -> Result<()> {
        let t = Tensor::zeros((2, 3), DType::F32, &Device::Cpu)?;
        let store = TensorStore::new([("a".to_string(), t.clone()), ("b".to_string(), t)].into());
        assert!(matches!(
            store.get("c", &[2, 3]),
            Err(ModelError::MissingTensor { .. })
        ));
        let e = store.get("a", &[3, 2]).expect_err("wrong shape");
        assert_eq!(e.to_string(), "tensor a has shape [2, 3], expected [3, 2]");
        store.get("a", &[2, 3])?;
        assert_eq!(store.unused(), vec!["b".to_string()]);
        store.ignore("b");
        assert!(store.unused().is_empty());
        Ok(())
    }
}
