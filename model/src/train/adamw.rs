//! AdamW (Loshchilov & Hutter 2019, "Decoupled Weight Decay Regularization") with state that can
//! be saved and restored.
//!
//! `candle_nn::AdamW` keeps its moments and step count private, so a checkpoint could not hold
//! them and a resumed run would restart the moments at zero (a different trajectory). This one
//! exposes its state ([`AdamW::state`], [`AdamW::restore`]) so `--resume` continues bit for bit.
//! It also takes gradients as plain tensors, which suits gradient accumulation (the caller sums
//! the micro-batch gradients).
//!
//! Update per parameter `θ` with gradient `g` at step `t` (1-based):
//! `m ← β₁m + (1−β₁)g`, `v ← β₂v + (1−β₂)g²`, `m̂ = m/(1−β₁ᵗ)`, `v̂ = v/(1−β₂ᵗ)`,
//! `θ ← θ(1 − lr·λ) − lr·m̂/(√v̂ + ε)`.

use candle_core::{Tensor, Var};

use crate::error::{ModelError, Result};

/// AdamW hyper-parameters.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AdamWParams {
    /// Learning rate.
    pub lr: f64,
    /// First-moment decay.
    pub beta1: f64,
    /// Second-moment decay.
    pub beta2: f64,
    /// Denominator epsilon.
    pub eps: f64,
    /// Decoupled weight decay `λ`.
    pub weight_decay: f64,
}

impl Default for AdamWParams {
    /// lr 1e-3, betas (0.9, 0.999), eps 1e-8, no weight decay.
    fn default() -> Self {
        Self {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        }
    }
}

/// The optimizer over a fixed list of parameters.
#[derive(Debug)]
pub struct AdamW {
    params: AdamWParams,
    vars: Vec<Var>,
    m: Vec<Tensor>,
    v: Vec<Tensor>,
    step: usize,
}

impl AdamW {
    /// Fresh state (zero moments, step 0) for `vars`.
    pub fn new(vars: Vec<Var>, params: AdamWParams) -> Result<Self> {
        let m = vars
            .iter()
            .map(|v| v.as_tensor().zeros_like())
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Self {
            params,
            v: m.clone(),
            m,
            vars,
            step: 0,
        })
    }

    /// Optimizer steps taken.
    pub fn step_count(&self) -> usize {
        self.step
    }

    /// The hyper-parameters.
    pub fn params(&self) -> AdamWParams {
        self.params
    }

    /// One update with one gradient per parameter (same order as the vars).
    pub fn step(&mut self, grads: &[Tensor]) -> Result<()> {
        if grads.len() != self.vars.len() {
            return Err(ModelError::Train(format!(
                "{} gradients for {} parameters",
                grads.len(),
                self.vars.len()
            )));
        }
        self.step += 1;
        let p = self.params;
        let bc1 = 1.0 - p.beta1.powi(self.step as i32);
        let bc2 = 1.0 - p.beta2.powi(self.step as i32);
        for (i, g) in grads.iter().enumerate() {
            let m = ((&self.m[i] * p.beta1)? + (g * (1.0 - p.beta1))?)?;
            let v = ((&self.v[i] * p.beta2)? + (g.sqr()? * (1.0 - p.beta2))?)?;
            let m_hat = (&m / bc1)?;
            let v_hat = (&v / bc2)?;
            let theta = self.vars[i].as_tensor().detach();
            let update = (m_hat / (v_hat.sqrt()? + p.eps)?)?;
            let next = ((theta * (1.0 - p.lr * p.weight_decay))? - (update * p.lr)?)?;
            self.vars[i].set(&next)?;
            self.m[i] = m;
            self.v[i] = v;
        }
        Ok(())
    }

    /// The state: step count, first and second moments (same order as the vars).
    pub fn state(&self) -> (usize, &[Tensor], &[Tensor]) {
        (self.step, &self.m, &self.v)
    }

    /// Restores a saved state (shapes must match the vars).
    pub fn restore(&mut self, step: usize, m: Vec<Tensor>, v: Vec<Tensor>) -> Result<()> {
        if m.len() != self.vars.len() || v.len() != self.vars.len() {
            return Err(ModelError::Train(format!(
                "optimizer state for {}/{} parameters, expected {}",
                m.len(),
                v.len(),
                self.vars.len()
            )));
        }
        for ((var, m), v) in self.vars.iter().zip(&m).zip(&v) {
            if var.dims() != m.dims() || var.dims() != v.dims() {
                return Err(ModelError::Train(format!(
                    "optimizer state shapes {:?}/{:?} do not match parameter {:?}",
                    m.dims(),
                    v.dims(),
                    var.dims()
                )));
            }
        }
        self.step = step;
        self.m = m;
        self.v = v;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// One step from zero moments moves every coordinate by `lr·sign(g)` (up to eps), whatever
    /// the gradient's magnitude — the textbook Adam property.
    #[test]
    fn first_step_moves_by_lr_times_sign() {
        let var = Var::from_vec(vec![1f32, 1.0, 1.0], 3, &Device::Cpu).expect("var");
        let mut opt = AdamW::new(
            vec![var.clone()],
            AdamWParams {
                lr: 0.1,
                ..Default::default()
            },
        )
        .expect("opt");
        let g = Tensor::new(&[2f32, -0.001, 0.0], &Device::Cpu).expect("g");
        opt.step(&[g]).expect("step");
        let got: Vec<f32> = var.as_tensor().to_vec1().expect("vec");
        assert!((got[0] - 0.9).abs() < 1e-5, "{got:?}");
        assert!((got[1] - 1.1).abs() < 1e-4, "{got:?}");
        assert_eq!(got[2], 1.0);
        assert_eq!(opt.step_count(), 1);
    }
}
