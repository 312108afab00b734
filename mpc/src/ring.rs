//! Shaped tensors over Z_2^64 with wrapping arithmetic (the ring of all Marill shares).

use crate::error::{MpcError, Result};

/// A row-major tensor of ring elements (u64, arithmetic modulo 2^64). Deserialisation checks
/// that the data fits the shape.
#[derive(Clone, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "RawTensor")]
pub struct RingTensor {
    shape: Vec<usize>,
    data: Vec<u64>,
}

#[derive(serde::Deserialize)]
struct RawTensor {
    shape: Vec<usize>,
    data: Vec<u64>,
}

impl TryFrom<RawTensor> for RingTensor {
    type Error = MpcError;
    fn try_from(r: RawTensor) -> Result<Self> {
        let n = r
            .shape
            .iter()
            .try_fold(1usize, |a, b| a.checked_mul(*b))
            .ok_or(MpcError::Shape {
                op: "RingTensor",
                detail: format!("shape {:?} overflows", r.shape),
            })?;
        if n != r.data.len() {
            return Err(MpcError::Shape {
                op: "RingTensor",
                detail: format!(
                    "shape {:?} needs {n} elements, got {}",
                    r.shape,
                    r.data.len()
                ),
            });
        }
        Ok(Self {
            shape: r.shape,
            data: r.data,
        })
    }
}

impl RingTensor {
    /// A tensor of zeros.
    pub fn zeros(shape: &[usize]) -> Self {
        let n = shape.iter().product();
        Self {
            shape: shape.to_vec(),
            data: vec![0; n],
        }
    }

    /// Builds a tensor; fails if `data.len()` is not the product of `shape`.
    pub fn from_vec(shape: &[usize], data: Vec<u64>) -> Result<Self> {
        let n: usize = shape.iter().product();
        if n != data.len() {
            return Err(MpcError::Shape {
                op: "RingTensor::from_vec",
                detail: format!("shape {shape:?} needs {n} elements, got {}", data.len()),
            });
        }
        Ok(Self {
            shape: shape.to_vec(),
            data,
        })
    }

    /// A 1-D tensor.
    pub fn from_flat(data: Vec<u64>) -> Self {
        Self {
            shape: vec![data.len()],
            data,
        }
    }

    /// The shape.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The elements, row-major.
    pub fn data(&self) -> &[u64] {
        &self.data
    }

    /// Mutable elements.
    pub fn data_mut(&mut self) -> &mut [u64] {
        &mut self.data
    }

    /// Consumes the tensor, returning its elements.
    pub fn into_data(self) -> Vec<u64> {
        self.data
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// True when the tensor has no element.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Same data, new shape with the same number of elements.
    pub fn reshape(mut self, shape: &[usize]) -> Result<Self> {
        let n: usize = shape.iter().product();
        if n != self.data.len() {
            return Err(MpcError::Shape {
                op: "RingTensor::reshape",
                detail: format!("{:?} -> {shape:?}", self.shape),
            });
        }
        self.shape = shape.to_vec();
        Ok(self)
    }

    fn check_same(&self, other: &Self, op: &'static str) -> Result<()> {
        if self.shape != other.shape {
            return Err(MpcError::Shape {
                op,
                detail: format!("{:?} vs {:?}", self.shape, other.shape),
            });
        }
        Ok(())
    }

    /// Elementwise wrapping sum.
    pub fn add(&self, other: &Self) -> Result<Self> {
        self.check_same(other, "add")?;
        Ok(self.zip(other, u64::wrapping_add))
    }

    /// Elementwise wrapping difference.
    pub fn sub(&self, other: &Self) -> Result<Self> {
        self.check_same(other, "sub")?;
        Ok(self.zip(other, u64::wrapping_sub))
    }

    /// Elementwise wrapping product.
    pub fn mul(&self, other: &Self) -> Result<Self> {
        self.check_same(other, "mul")?;
        Ok(self.zip(other, u64::wrapping_mul))
    }

    /// In-place wrapping sum.
    pub fn add_assign(&mut self, other: &Self) -> Result<()> {
        self.check_same(other, "add_assign")?;
        for (x, y) in self.data.iter_mut().zip(&other.data) {
            *x = x.wrapping_add(*y);
        }
        Ok(())
    }

    /// In-place wrapping difference.
    pub fn sub_assign(&mut self, other: &Self) -> Result<()> {
        self.check_same(other, "sub_assign")?;
        for (x, y) in self.data.iter_mut().zip(&other.data) {
            *x = x.wrapping_sub(*y);
        }
        Ok(())
    }

    /// Wrapping negation.
    pub fn neg(&self) -> Self {
        self.map(u64::wrapping_neg)
    }

    /// Multiplies every element by a ring scalar.
    pub fn scale(&self, s: u64) -> Self {
        self.map(|x| x.wrapping_mul(s))
    }

    /// Applies `f` to every element.
    pub fn map(&self, f: impl Fn(u64) -> u64) -> Self {
        Self {
            shape: self.shape.clone(),
            data: self.data.iter().map(|&x| f(x)).collect(),
        }
    }

    /// Elementwise combination of two same-shape tensors (shapes are not checked).
    pub fn zip(&self, other: &Self, f: impl Fn(u64, u64) -> u64) -> Self {
        Self {
            shape: self.shape.clone(),
            data: self
                .data
                .iter()
                .zip(&other.data)
                .map(|(&x, &y)| f(x, y))
                .collect(),
        }
    }

    /// Rows and columns of a 2-D tensor (a 1-D tensor is one row).
    pub fn dims2(&self) -> Result<(usize, usize)> {
        match self.shape.as_slice() {
            [n] => Ok((1, *n)),
            [m, n] => Ok((*m, *n)),
            s => Err(MpcError::Shape {
                op: "dims2",
                detail: format!("expected a matrix, got shape {s:?}"),
            }),
        }
    }

    /// Matrix product over the ring (2-D tensors).
    pub fn matmul(&self, other: &Self) -> Result<Self> {
        let (m, k) = self.dims2()?;
        let (k2, n) = other.dims2()?;
        if k != k2 {
            return Err(MpcError::Shape {
                op: "matmul",
                detail: format!("{:?} x {:?}", self.shape, other.shape),
            });
        }
        let data = crate::gemm::gemm_u64(m, k, n, &self.data, &other.data);
        Self::from_vec(&[m, n], data)
    }

    /// Matrix product with prepared public weights (`self` is m×k, `w` is k×n).
    pub fn matmul_public(&self, w: &crate::gemm::PublicWeights) -> Result<Self> {
        let (m, k) = self.dims2()?;
        if k != w.k() {
            return Err(MpcError::Shape {
                op: "matmul_public",
                detail: format!("{:?} x [{}, {}]", self.shape, w.k(), w.n()),
            });
        }
        Self::from_vec(&[m, w.n()], w.matmul(m, &self.data))
    }

    /// Transpose of a 2-D tensor.
    pub fn transpose(&self) -> Result<Self> {
        let (m, n) = self.dims2()?;
        let mut out = vec![0u64; m * n];
        for i in 0..m {
            for j in 0..n {
                out[j * m + i] = self.data[i * n + j];
            }
        }
        Self::from_vec(&[n, m], out)
    }
}
