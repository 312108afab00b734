//! Ring GEMM over Z_2^64: `C = A·B` with wrapping `u64` arithmetic.
//!
//! (Header with method and figures is filled in below.)

use rayon::prelude::*;

/// Rows of C computed by one micro-kernel call.
const MR: usize = 4;
/// Columns of C computed by one micro-kernel call (one AVX2 vector of four `u64`).
const NR: usize = 4;
/// Depth of one k-block: a packed B micro-panel (`KC × 2·NR` words, 16 KiB) stays in L1.
const KC: usize = 256;
/// Rows of C per parallel task: the task's A block (`MC × KC` words, 128 KiB) stays in L2.
const MC: usize = 64;
/// Below this many multiply-adds a product runs on the calling thread.
const PAR_MIN_WORK: usize = 1 << 18;
/// At most this many rows: B is read in place (no packing), since each B word is used by few rows.
const DIRECT_B_MAX_ROWS: usize = 4;
/// B with at most this many words (64 KiB) is also read in place: it stays cached as it is.
const DIRECT_B_MAX_WORDS: usize = 1 << 13;

/// Where B comes from: row-major `k×n`, or transposed (`n×k` row-major).
#[derive(Clone, Copy)]
enum BSrc<'a> {
    /// `b[p*n + j]`
    Normal(&'a [u64]),
    /// `bt[j*k + p]`
    Transposed(&'a [u64]),
}

/// C = A·B over Z_2^64 (wrapping), row-major: `a` is m×k, `b` is k×n, returns m×n.
///
/// Preconditions (callers check shapes): `a.len() == m*k`, `b.len() == k*n`.
/// They are checked with `debug_assert!`; in release, too-short inputs panic on indexing and
/// longer ones have their tail ignored.
pub fn gemm_u64(m: usize, k: usize, n: usize, a: &[u64], b: &[u64]) -> Vec<u64> {
    let mut c = vec![0u64; m * n];
    gemm_u64_into(m, k, n, a, b, &mut c);
    c
}

/// C += A·B (wrapping) into a caller buffer `c` (m×n, row-major).
///
/// Preconditions as for [`gemm_u64`], plus `c.len() == m*n`.
pub fn gemm_u64_into(m: usize, k: usize, n: usize, a: &[u64], b: &[u64], c: &mut [u64]) {
    debug_assert_eq!(a.len(), m * k, "gemm_u64_into: a is not m×k");
    debug_assert_eq!(b.len(), k * n, "gemm_u64_into: b is not k×n");
    debug_assert_eq!(c.len(), m * n, "gemm_u64_into: c is not m×n");
    gemm_dispatch(
        m,
        k,
        n,
        &a[..m * k],
        BSrc::Normal(&b[..k * n]),
        &mut c[..m * n],
    );
}

/// C = A·Bᵀ over Z_2^64 (wrapping) with B given transposed: `a` is m×k, `bt` is n×k (row-major),
/// returns m×n. Used for Q·Kᵀ.
///
/// Preconditions (callers check shapes): `a.len() == m*k`, `bt.len() == n*k`.
pub fn gemm_u64_bt(m: usize, k: usize, n: usize, a: &[u64], bt: &[u64]) -> Vec<u64> {
    debug_assert_eq!(a.len(), m * k, "gemm_u64_bt: a is not m×k");
    debug_assert_eq!(bt.len(), n * k, "gemm_u64_bt: bt is not n×k");
    let mut c = vec![0u64; m * n];
    gemm_dispatch(m, k, n, &a[..m * k], BSrc::Transposed(&bt[..n * k]), &mut c);
    c
}

/// Which micro-kernel family runs.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Isa {
    Portable,
    #[cfg(target_arch = "x86_64")]
    Avx2,
}

fn detect_isa() -> Isa {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") {
            return Isa::Avx2;
        }
    }
    Isa::Portable
}

fn gemm_dispatch(m: usize, k: usize, n: usize, a: &[u64], b: BSrc<'_>, c: &mut [u64]) {
    gemm_with(detect_isa(), m, k, n, a, b, c);
}

/// A rectangular block of C computed by one task.
#[derive(Clone, Copy)]
struct Block {
    i0: usize,
    i1: usize,
    j0: usize,
    j1: usize,
}

fn gemm_with(isa: Isa, m: usize, k: usize, n: usize, a: &[u64], b: BSrc<'_>, c: &mut [u64]) {
    if m == 0 || n == 0 || k == 0 {
        return;
    }
    let work = m.saturating_mul(k).saturating_mul(n);
    let threads = rayon::current_num_threads();
    if work < PAR_MIN_WORK || threads <= 1 {
        let blk = Block {
            i0: 0,
            i1: m,
            j0: 0,
            j1: n,
        };
        compute_block(isa, k, n, a, b, blk, c, n);
        return;
    }
    // Task grid: row blocks of MC rows, then enough column blocks for load balance.
    let row_tasks = m.div_ceil(MC);
    let col_panels = n.div_ceil(NR);
    let want = 4 * threads;
    let col_tasks = want.div_ceil(row_tasks).clamp(1, col_panels);
    if col_tasks == 1 {
        // Row blocks own disjoint rows of C: compute in place.
        c.par_chunks_mut(MC * n).enumerate().for_each(|(t, cb)| {
            let i0 = t * MC;
            let blk = Block {
                i0,
                i1: i0 + cb.len() / n,
                j0: 0,
                j1: n,
            };
            compute_block(isa, k, n, a, b, blk, cb, n);
        });
        return;
    }
    let ncb = col_panels.div_ceil(col_tasks) * NR;
    let mut blocks = Vec::with_capacity(row_tasks * col_tasks);
    for i0 in (0..m).step_by(MC) {
        for j0 in (0..n).step_by(ncb) {
            blocks.push(Block {
                i0,
                i1: (i0 + MC).min(m),
                j0,
                j1: (j0 + ncb).min(n),
            });
        }
    }
    let parts: Vec<(Block, Vec<u64>)> = blocks
        .into_par_iter()
        .map(|blk| {
            let w = blk.j1 - blk.j0;
            let mut out = vec![0u64; (blk.i1 - blk.i0) * w];
            compute_block(isa, k, n, a, b, blk, &mut out, w);
            (blk, out)
        })
        .collect();
    for (blk, out) in parts {
        let w = blk.j1 - blk.j0;
        for (r, orow) in out.chunks_exact(w).enumerate() {
            let crow = &mut c[(blk.i0 + r) * n + blk.j0..(blk.i0 + r) * n + blk.j1];
            for (x, &y) in crow.iter_mut().zip(orow) {
                *x = x.wrapping_add(y);
            }
        }
    }
}

/// Adds A·B restricted to block `blk` into `out` (rows `i0..i1`, columns `j0..j1` of C, stored
/// row-major with leading dimension `ldo`).
#[allow(clippy::too_many_arguments)]
fn compute_block(
    isa: Isa,
    k: usize,
    n: usize,
    a: &[u64],
    b: BSrc<'_>,
    blk: Block,
    out: &mut [u64],
    ldo: usize,
) {
    // Row blocks of at most MC rows keep the A rows of one k-block in L2.
    for ib in (blk.i0..blk.i1).step_by(MC) {
        let sub = Block {
            i0: ib,
            i1: (ib + MC).min(blk.i1),
            ..blk
        };
        let off = (ib - blk.i0) * ldo;
        compute_rows(isa, k, n, a, b, sub, &mut out[off..], ldo);
    }
}

/// [`compute_block`] for a block of at most `MC` rows; `out` starts at the block's first row.
#[allow(clippy::too_many_arguments)]
fn compute_rows(
    isa: Isa,
    k: usize,
    n: usize,
    a: &[u64],
    b: BSrc<'_>,
    blk: Block,
    out: &mut [u64],
    ldo: usize,
) {
    let direct_b = matches!(b, BSrc::Normal(_))
        && (blk.i1 - blk.i0 <= DIRECT_B_MAX_ROWS || k * n <= DIRECT_B_MAX_WORDS);
    let mut panel = [0u64; KC * 2 * NR];
    for p0 in (0..k).step_by(KC) {
        let kc = KC.min(k - p0);
        for j in (blk.j0..blk.j1).step_by(NR) {
            let cols = NR.min(blk.j1 - j);
            // The B micro-panel is packed right before use, so it is in L1 for every row panel.
            let bp = match b {
                BSrc::Normal(bb) if direct_b && cols == NR => BPanel::Direct {
                    b: bb,
                    off: p0 * n + j,
                    ld: n,
                },
                _ => {
                    pack_b_panel(b, k, n, p0, kc, j, j + cols, &mut panel);
                    BPanel::Packed(&panel[..kc * 2 * NR])
                }
            };
            for i in (blk.i0..blk.i1).step_by(MR) {
                let r = MR.min(blk.i1 - i);
                let acc = micro(isa, r, kc, a, i * k + p0, k, bp);
                let o0 = (i - blk.i0) * ldo + (j - blk.j0);
                for (ri, arow) in acc.iter().take(r).enumerate() {
                    let orow = &mut out[o0 + ri * ldo..o0 + ri * ldo + cols];
                    for (x, &y) in orow.iter_mut().zip(arow) {
                        *x = x.wrapping_add(y);
                    }
                }
            }
        }
    }
}

/// A `kc × NR` slice of B as the micro-kernel reads it.
#[derive(Clone, Copy)]
enum BPanel<'a> {
    /// Packed: per depth step, `NR` words then the same words with 32-bit halves swapped.
    Packed(&'a [u64]),
    /// In place in row-major B: row `p` of the panel starts at `b[off + p*ld]`; needs `NR` columns.
    Direct { b: &'a [u64], off: usize, ld: usize },
}

/// Packs B rows `p0..p0+kc`, columns `j0..j1` (at most `NR` of them, zero-padded to `NR`) into
/// `dst`: depth step `p` holds the `NR` words followed by the same words with their 32-bit halves
/// swapped.
#[allow(clippy::too_many_arguments)]
fn pack_b_panel(
    b: BSrc<'_>,
    k: usize,
    n: usize,
    p0: usize,
    kc: usize,
    j0: usize,
    j1: usize,
    dst: &mut [u64],
) {
    let cols = j1 - j0;
    debug_assert!(cols <= NR);
    let dst = &mut dst[..kc * 2 * NR];
    match b {
        BSrc::Normal(bb) => {
            for (p, d) in dst.chunks_exact_mut(2 * NR).enumerate() {
                let row = (p0 + p) * n + j0;
                let mut w = [0u64; NR];
                if cols == NR {
                    w.copy_from_slice(&bb[row..row + NR]);
                } else {
                    for (x, &y) in w.iter_mut().zip(&bb[row..row + cols]) {
                        *x = y;
                    }
                }
                for t in 0..NR {
                    d[t] = w[t];
                    d[NR + t] = w[t].rotate_left(32);
                }
            }
        }
        BSrc::Transposed(bt) => {
            for t in 0..NR {
                if t < cols {
                    let j = j0 + t;
                    let src = &bt[j * k + p0..j * k + p0 + kc];
                    for (d, &v) in dst.chunks_exact_mut(2 * NR).zip(src) {
                        d[t] = v;
                        d[NR + t] = v.rotate_left(32);
                    }
                } else {
                    for d in dst.chunks_exact_mut(2 * NR) {
                        d[t] = 0;
                        d[NR + t] = 0;
                    }
                }
            }
        }
    }
}

/// One micro-kernel call: returns the `r × NR` (r ≤ MR) product of A rows starting at `a[a_off]`
/// (row stride `lda`, `kc` consecutive columns) and the B panel. Rows `r..MR` of the result are 0.
fn micro(
    isa: Isa,
    r: usize,
    kc: usize,
    a: &[u64],
    a_off: usize,
    lda: usize,
    bp: BPanel<'_>,
) -> [[u64; NR]; MR] {
    debug_assert!((1..=MR).contains(&r));
    // Bounds checks for everything the kernels read through raw pointers.
    assert!(kc >= 1 && a_off + (r - 1) * lda + kc <= a.len());
    match bp {
        BPanel::Packed(p) => assert!(p.len() >= kc * 2 * NR),
        BPanel::Direct { b, off, ld } => assert!(off + (kc - 1) * ld + NR <= b.len()),
    }
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => {
            // SAFETY: AVX2 was detected at run time; the reads stay inside the slices (checked above).
            unsafe {
                match r {
                    1 => avx2::kernel::<1>(kc, a, a_off, lda, bp),
                    2 => avx2::kernel::<2>(kc, a, a_off, lda, bp),
                    3 => avx2::kernel::<3>(kc, a, a_off, lda, bp),
                    _ => avx2::kernel::<4>(kc, a, a_off, lda, bp),
                }
            }
        }
        Isa::Portable => portable_kernel(r, kc, a, a_off, lda, bp),
    }
}

/// Portable micro-kernel (plain `wrapping_mul`), for targets without AVX2.
fn portable_kernel(
    r: usize,
    kc: usize,
    a: &[u64],
    a_off: usize,
    lda: usize,
    bp: BPanel<'_>,
) -> [[u64; NR]; MR] {
    let mut acc = [[0u64; NR]; MR];
    for p in 0..kc {
        let bv: [u64; NR] = match bp {
            BPanel::Packed(pk) => pk[p * 2 * NR..p * 2 * NR + NR]
                .try_into()
                .expect("NR words"),
            BPanel::Direct { b, off, ld } => b[off + p * ld..off + p * ld + NR]
                .try_into()
                .expect("NR words"),
        };
        for (i, acc_row) in acc.iter_mut().take(r).enumerate() {
            let x = a[a_off + i * lda + p];
            for (s, &y) in acc_row.iter_mut().zip(&bv) {
                *s = s.wrapping_add(x.wrapping_mul(y));
            }
        }
    }
    acc
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    //! AVX2 micro-kernel. AVX2 has no 64-bit low multiply, so each product is split into 32-bit
    //! halves: `a·b mod 2^64 = a_lo·b_lo + ((a_lo·b_hi + a_hi·b_lo) mod 2^32)·2^32`.
    //! `vpmuludq` gives the full 64-bit `a_lo·b_lo`; one `vpmulld` of the broadcast `a` against
    //! `b` with its 32-bit halves swapped gives both cross products (low 32 bits) in the two
    //! 32-bit halves of each lane. Cross terms accumulate in 32-bit lanes and are folded in once
    //! per k-block, so the inner loop costs two multiplies and two adds per four products.
    use super::{BPanel, MR, NR};
    use std::arch::x86_64::*;

    /// # Safety
    /// AVX2 must be available; `a[a_off + i*lda + p]` for `i < R`, `p < kc` and the panel's
    /// `kc` depth steps must be in bounds (checked by the caller).
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn kernel<const R: usize>(
        kc: usize,
        a: &[u64],
        a_off: usize,
        lda: usize,
        bp: BPanel<'_>,
    ) -> [[u64; NR]; MR] {
        let z = _mm256_setzero_si256();
        let mut lo = [z; R];
        let mut cr = [z; R];
        let ap = a.as_ptr().add(a_off);
        let mut arow = [ap; R];
        for (i, p) in arow.iter_mut().enumerate() {
            *p = ap.add(i * lda);
        }
        match bp {
            BPanel::Packed(pk) => {
                let mut bptr = pk.as_ptr();
                for p in 0..kc {
                    let bv = _mm256_loadu_si256(bptr as *const __m256i);
                    let bs = _mm256_loadu_si256(bptr.add(NR) as *const __m256i);
                    step::<R>(&mut lo, &mut cr, &arow, p, bv, bs);
                    bptr = bptr.add(2 * NR);
                }
            }
            BPanel::Direct { b, off, ld } => {
                let mut bptr = b.as_ptr().add(off);
                for p in 0..kc {
                    let bv = _mm256_loadu_si256(bptr as *const __m256i);
                    let bs = _mm256_shuffle_epi32::<0b10_11_00_01>(bv);
                    step::<R>(&mut lo, &mut cr, &arow, p, bv, bs);
                    bptr = bptr.add(ld);
                }
            }
        }
        let mut out = [[0u64; NR]; MR];
        for i in 0..R {
            let x = cr[i];
            // Low 32 bits of each lane: cross_even + cross_odd; move them to the high half.
            let s = _mm256_slli_epi64::<32>(_mm256_add_epi32(x, _mm256_srli_epi64::<32>(x)));
            let v = _mm256_add_epi64(lo[i], s);
            _mm256_storeu_si256(out[i].as_mut_ptr() as *mut __m256i, v);
        }
        out
    }

    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn step<const R: usize>(
        lo: &mut [__m256i; R],
        cr: &mut [__m256i; R],
        arow: &[*const u64; R],
        p: usize,
        bv: __m256i,
        bs: __m256i,
    ) {
        for i in 0..R {
            let x = _mm256_set1_epi64x(*arow[i].add(p) as i64);
            lo[i] = _mm256_add_epi64(lo[i], _mm256_mul_epu32(x, bv));
            cr[i] = _mm256_add_epi32(cr[i], _mm256_mullo_epi32(x, bs));
        }
    }
}
