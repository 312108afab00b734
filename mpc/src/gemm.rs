//! Ring GEMM over Z_2^64 (placeholder naive kernel; being replaced by the optimised one).
#![allow(missing_docs)]

/// C = A·B over Z_2^64 (wrapping), row-major: a is m×k, b is k×n, returns m×n.
pub fn gemm_u64(m: usize, k: usize, n: usize, a: &[u64], b: &[u64]) -> Vec<u64> {
    let mut c = vec![0u64; m * n];
    gemm_u64_into(m, k, n, a, b, &mut c);
    c
}

/// C += A·B (wrapping) into a caller buffer.
pub fn gemm_u64_into(m: usize, k: usize, n: usize, a: &[u64], b: &[u64], c: &mut [u64]) {
    for i in 0..m {
        for p in 0..k {
            let av = a[i * k + p];
            for j in 0..n {
                c[i * n + j] = c[i * n + j].wrapping_add(av.wrapping_mul(b[p * n + j]));
            }
        }
    }
}

/// Variant with B given transposed (n×k row-major).
pub fn gemm_u64_bt(m: usize, k: usize, n: usize, a: &[u64], bt: &[u64]) -> Vec<u64> {
    let mut c = vec![0u64; m * n];
    for i in 0..m {
        for j in 0..n {
            let mut s = 0u64;
            for p in 0..k {
                s = s.wrapping_add(a[i * k + p].wrapping_mul(bt[j * k + p]));
            }
            c[i * n + j] = s;
        }
    }
    c
}
