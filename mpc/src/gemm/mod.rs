//! Ring GEMM over Z_2^64: `C = A·B` with wrapping `u64` arithmetic, row-major.
//!
//! Entry points: [`gemm_u64`] (returns C), [`gemm_u64_into`] (C += A·B into a caller buffer) and
//! [`gemm_u64_bt`] (B given transposed, for Q·Kᵀ). Shapes are preconditions checked only by
//! `debug_assert!`; callers validate them (see [`crate::ring::RingTensor`]). Products with a
//! public weight matrix of small fixed-point entries (the frozen base weights under LoRA) run
//! faster through [`PublicWeights`] (AVX-512 IFMA where the CPU has it).
//!
//! # Method
//! BLIS-style blocking with an AVX2 micro-kernel, chosen at run time (`is_x86_feature_detected!`),
//! and a portable `wrapping_mul` kernel otherwise:
//! - **Micro-kernel** (4×4 block of C, one `__m256i` per row). AVX2 has no 64-bit low multiply
//!   (`vpmullq` is AVX-512), so with `a = a_hi·2^32 + a_lo` the product is
//!   `a·b mod 2^64 = a_lo·b_lo + ((a_lo·b_hi + a_hi·b_lo) mod 2^32)·2^32`. One `vpmuludq` gives
//!   `a_lo·b_lo`; one `vpmulld` of the broadcast `a` against `b` with its 32-bit halves swapped
//!   gives both cross products in the two 32-bit halves of each lane. The cross terms accumulate
//!   in 32-bit lanes (only their low 32 bits matter) and are folded in once per k-block. Cost:
//!   2 multiplies + 2 adds per 4 products, against 3 multiplies + 3 adds (+ shifts) for the
//!   textbook `3×vpmuludq` emulation.
//! - **Blocking**: k in blocks of `KC` = 256. B is packed eight 4-column panels at a time (whole
//!   cache lines of each B row, software-prefetched since consecutive rows are pages apart),
//!   each panel stored with its half-swapped copy (`KC×8` words, 16 KiB, L1-resident), right
//!   before the panels are used by every 4-row panel of A of the current ≤64-row block. A is read
//!   in place (64×256 words stay in L2). When A has ≤4 rows, or B is tiny, B is read in place and
//!   half-swapped with `vpshufd`.
//! - **Threads**: products of at least 2^18 multiply-adds are split by rayon into row blocks of
//!   64 rows and, when there are few rows (e.g. 32-token activations), column blocks (about two
//!   tasks per thread); smaller ones run on the calling thread.
//!
//! # Measured (AMD EPYC, 2 cores, `cargo bench -p marill-mpc --bench ring_gemm`)
//! Rates in 10^9 multiply-adds per second (median), both sides on both cores; the f32 side is
//! `matrixmultiply::sgemm` (AVX2/FMA) run as two column strips:
//!
//! | shape             | ring u64 | f32  | ring/f32 |
//! |-------------------|---------:|-----:|---------:|
//! | 256·256·256       | 18.4     | 81.8 | 0.23     |
//! | 512·512·512       | 18.8     | 97.4 | 0.19     |
//! | 1024·1024·1024    | 18.0     | 93.9 | 0.19     |
//! | (32×768)·(768×768)  | 16.1   | 79.5 | 0.20     |
//! | (32×768)·(768×2048) | 13.6   | 63.3 | 0.21     |
//!
//! One core: ring 7.5–9.6 against f32 35–46 (ratio 0.18–0.32). The figure is set by the
//! multipliers: the kernel alone (operands in L1) runs at 11 G/s per core, i.e. two vector
//! multiplies per cycle, against 16 f32 FMAs per cycle for sgemm; the blocked GEMM reaches about
//! 80 % of it. Other kernels measured the same way: textbook 3×`vpmuludq` emulation 4.1 G/s,
//! scalar `wrapping_mul` (register-tiled 4×8) 3.5 G/s. That CPU (Zen 4) in fact reported
//! AVX-512DQ, where a `vpmullq` kernel ran at 21 G/s; its intrinsics need Rust 1.89, the
//! workspace's minimum since the VAES encryption of `fss::prg`, but that kernel is not written
//! yet (the machine of 2026-11-30, a Zen 3, has no AVX-512). On the Intel Xeon of 2026-12-01
//! (`vpmullq` there runs at 0.84 per ns against 2.8 for `vpmadd52luq`) this AVX2 kernel gives
//! 8.8–9.7 G/s on both cores; the products with public weights, which dominate the LoRA
//! suffix, go through [`PublicWeights`] instead (17.6–25.4 G/s, IFMA).

mod public_weights;

pub use public_weights::PublicWeights;

use rayon::prelude::*;

/// Rows of C computed by one micro-kernel call.
const MR: usize = 4;
/// Columns of C computed by one micro-kernel call (one AVX2 vector of four `u64`).
const NR: usize = 4;
/// Depth of one k-block: a packed B micro-panel (`KC × 2·NR` words, 16 KiB) stays in L1.
const KC: usize = 256;
/// Rows of C per parallel task: the task's A block (`MC × KC` words, 128 KiB) stays in L2.
const MC: usize = 64;
/// Panels of B packed together (`GROUP·NR` columns: whole cache lines of each B row).
const GROUP: usize = 8;
/// Distance between packed panels: one panel plus a cache line, so that the panels written
/// together do not all map to the same L1 set.
const PANEL_STRIDE: usize = KC * 2 * NR + 8;
/// How many B rows ahead the packing prefetches.
const PREFETCH_ROWS: usize = 8;
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
    let want = 2 * threads;
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
        add_block(c, n, blk.i0, blk.j0..blk.j1, &out);
    }
}

/// Adds a row-major block `out` (as many columns as `cols`) into rows `i0..` and columns `cols`
/// of the row-major `c` (row stride `ldc`), wrapping: how a task's private block of C joins C.
fn add_block(c: &mut [u64], ldc: usize, i0: usize, cols: std::ops::Range<usize>, out: &[u64]) {
    for (r, orow) in out.chunks_exact(cols.len()).enumerate() {
        let crow = &mut c[(i0 + r) * ldc + cols.start..(i0 + r) * ldc + cols.end];
        for (x, &y) in crow.iter_mut().zip(orow) {
            *x = x.wrapping_add(y);
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
    let group_panels = if direct_b {
        1
    } else {
        (blk.j1 - blk.j0).div_ceil(NR).min(GROUP)
    };
    let mut packed = vec![0u64; (group_panels - 1) * PANEL_STRIDE + KC.min(k) * 2 * NR];
    for p0 in (0..k).step_by(KC) {
        let kc = KC.min(k - p0);
        for jg in (blk.j0..blk.j1).step_by(GROUP * NR) {
            let jge = (jg + GROUP * NR).min(blk.j1);
            // B is packed a group of panels at a time (reading whole cache lines of each B row)
            // right before use, so the panels are still in L1/L2 for every row panel.
            if !direct_b {
                pack_b_group(isa, b, k, n, p0, kc, jg, jge, &mut packed);
            }
            for (q, j) in (jg..jge).step_by(NR).enumerate() {
                let cols = NR.min(jge - j);
                let bp = match b {
                    BSrc::Normal(bb) if direct_b && cols == NR => BPanel::Direct {
                        b: bb,
                        off: p0 * n + j,
                        ld: n,
                    },
                    _ if direct_b => {
                        pack_b_group(isa, b, k, n, p0, kc, j, j + cols, &mut packed);
                        BPanel::Packed(&packed[..kc * 2 * NR])
                    }
                    _ => BPanel::Packed(&packed[q * PANEL_STRIDE..q * PANEL_STRIDE + kc * 2 * NR]),
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
}

/// A `kc × NR` slice of B as the micro-kernel reads it.
#[derive(Clone, Copy)]
enum BPanel<'a> {
    /// Packed: per depth step, `NR` words then the same words with 32-bit halves swapped.
    Packed(&'a [u64]),
    /// In place in row-major B: row `p` of the panel starts at `b[off + p*ld]`; needs `NR` columns.
    Direct { b: &'a [u64], off: usize, ld: usize },
}

/// Packs B rows `p0..p0+kc`, columns `j0..j1` (at most `GROUP·NR` of them) into panels of `NR`
/// columns, panel `q` at `dst[q*PANEL_STRIDE..]`, the last one zero-padded: depth step `p` of a
/// panel holds its `NR` words followed by the same words with their 32-bit halves swapped.
#[allow(clippy::too_many_arguments)]
fn pack_b_group(
    isa: Isa,
    b: BSrc<'_>,
    k: usize,
    n: usize,
    p0: usize,
    kc: usize,
    j0: usize,
    j1: usize,
    dst: &mut [u64],
) {
    let panels = (j1 - j0).div_ceil(NR);
    debug_assert!((1..=GROUP).contains(&panels));
    assert!(dst.len() >= (panels - 1) * PANEL_STRIDE + kc * 2 * NR);
    let pack_word = |d: &mut [u64], t: usize, v: u64| {
        d[t] = v;
        d[NR + t] = v.rotate_left(32);
    };
    match b {
        BSrc::Normal(bb) => {
            let done = pack_full_panels_fast(isa, bb, n, p0, kc, j0, (j1 - j0) / NR, dst);
            for q in done..panels {
                let jq = j0 + q * NR;
                let cols = NR.min(j1 - jq);
                let panel = &mut dst[q * PANEL_STRIDE..q * PANEL_STRIDE + kc * 2 * NR];
                for (p, d) in panel.chunks_exact_mut(2 * NR).enumerate() {
                    let row = (p0 + p) * n + jq;
                    for t in 0..NR {
                        pack_word(d, t, if t < cols { bb[row + t] } else { 0 });
                    }
                }
            }
        }
        BSrc::Transposed(bt) => {
            for q in 0..panels {
                let panel = &mut dst[q * PANEL_STRIDE..q * PANEL_STRIDE + kc * 2 * NR];
                for t in 0..NR {
                    let j = j0 + q * NR + t;
                    if j < j1 {
                        let src = &bt[j * k + p0..j * k + p0 + kc];
                        for (d, &v) in panel.chunks_exact_mut(2 * NR).zip(src) {
                            pack_word(d, t, v);
                        }
                    } else {
                        for d in panel.chunks_exact_mut(2 * NR) {
                            pack_word(d, t, 0);
                        }
                    }
                }
            }
        }
    }
}

/// Packs the first `full` (complete) panels of a group of row-major B with a SIMD routine when
/// one is available; returns how many panels it packed (0 without one).
#[allow(clippy::too_many_arguments)]
fn pack_full_panels_fast(
    isa: Isa,
    bb: &[u64],
    n: usize,
    p0: usize,
    kc: usize,
    j0: usize,
    full: usize,
    dst: &mut [u64],
) -> usize {
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 if full > 0 => {
            let start = p0 * n + j0;
            assert!(start + (kc - 1) * n + full * NR <= bb.len());
            assert!(dst.len() >= (full - 1) * PANEL_STRIDE + kc * 2 * NR);
            // SAFETY: AVX2 was detected; reads and writes are in bounds (checked above).
            unsafe { avx2::pack_normal(bb, start, n, kc, full, dst) };
            full
        }
        _ => {
            let _ = (bb, n, p0, kc, j0, full, dst);
            0
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
    use super::{BPanel, MR, NR, PANEL_STRIDE, PREFETCH_ROWS};
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
                let b0 = pk.as_ptr();
                for p in 0..kc {
                    let bv = _mm256_loadu_si256(b0.add(p * 2 * NR) as *const __m256i);
                    let bs = _mm256_loadu_si256(b0.add(p * 2 * NR + NR) as *const __m256i);
                    step::<R>(&mut lo, &mut cr, &arow, p, bv, bs);
                }
            }
            BPanel::Direct { b, off, ld } => {
                let b0 = b.as_ptr().add(off);
                for p in 0..kc {
                    let bv = _mm256_loadu_si256(b0.add(p * ld) as *const __m256i);
                    let bs = _mm256_shuffle_epi32::<0b10_11_00_01>(bv);
                    step::<R>(&mut lo, &mut cr, &arow, p, bv, bs);
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

    /// Packs `panels` full panels (`kc × NR` each) of row-major B whose top-left word is
    /// `b[start]` (row stride `ld`), panel `q` at `dst[q*PANEL_STRIDE..]`: per depth step the
    /// four words, then the four words with their 32-bit halves swapped.
    ///
    /// # Safety
    /// AVX2 must be available, `start + (kc-1)*ld + panels*NR <= b.len()` and
    /// `dst.len() >= (panels-1)*PANEL_STRIDE + kc*2*NR`.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn pack_normal(
        b: &[u64],
        start: usize,
        ld: usize,
        kc: usize,
        panels: usize,
        dst: &mut [u64],
    ) {
        debug_assert!(panels >= 1 && dst.len() >= (panels - 1) * PANEL_STRIDE + kc * 2 * NR);
        let base = dst.as_mut_ptr();
        for p in 0..kc {
            let src = b.as_ptr().add(start + p * ld);
            if p + PREFETCH_ROWS < kc {
                // Rows are a page apart for wide B: the hardware prefetchers do not follow.
                let ahead = src.add(PREFETCH_ROWS * ld);
                for w in (0..panels * NR).step_by(8) {
                    _mm_prefetch::<_MM_HINT_T0>(ahead.add(w) as *const i8);
                }
            }
            for q in 0..panels {
                let v = _mm256_loadu_si256(src.add(q * NR) as *const __m256i);
                let d = base.add(q * PANEL_STRIDE + p * 2 * NR);
                _mm256_storeu_si256(d as *mut __m256i, v);
                _mm256_storeu_si256(
                    d.add(NR) as *mut __m256i,
                    _mm256_shuffle_epi32::<0b10_11_00_01>(v),
                );
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    fn naive(m: usize, k: usize, n: usize, a: &[u64], b: &[u64]) -> Vec<u64> {
        let mut c = vec![0u64; m * n];
        for i in 0..m {
            for j in 0..n {
                let mut s = 0u64;
                for p in 0..k {
                    s = s.wrapping_add(a[i * k + p].wrapping_mul(b[p * n + j]));
                }
                c[i * n + j] = s;
            }
        }
        c
    }

    fn transpose(rows: usize, cols: usize, x: &[u64]) -> Vec<u64> {
        let mut t = vec![0u64; rows * cols];
        for r in 0..rows {
            for c in 0..cols {
                t[c * rows + r] = x[r * cols + c];
            }
        }
        t
    }

    fn random(len: usize, rng: &mut StdRng) -> Vec<u64> {
        (0..len).map(|_| rng.gen()).collect()
    }

    /// All ISAs available on this machine (the portable kernel always is).
    fn isas() -> Vec<Isa> {
        let mut v = vec![Isa::Portable];
        if detect_isa() != Isa::Portable {
            v.push(detect_isa());
        }
        v
    }

    /// Checks every entry point and every kernel family on one shape.
    fn check(m: usize, k: usize, n: usize, seed: u64) {
        let mut rng = StdRng::seed_from_u64(seed);
        let a = random(m * k, &mut rng);
        let b = random(k * n, &mut rng);
        let c0 = random(m * n, &mut rng);
        let want = naive(m, k, n, &a, &b);
        let bt = transpose(k, n, &b);
        assert_eq!(gemm_u64(m, k, n, &a, &b), want, "gemm_u64 {m}x{k}x{n}");
        assert_eq!(
            gemm_u64_bt(m, k, n, &a, &bt),
            want,
            "gemm_u64_bt {m}x{k}x{n}"
        );
        let mut c = c0.clone();
        gemm_u64_into(m, k, n, &a, &b, &mut c);
        let acc: Vec<u64> = c0
            .iter()
            .zip(&want)
            .map(|(x, y)| x.wrapping_add(*y))
            .collect();
        assert_eq!(c, acc, "gemm_u64_into {m}x{k}x{n}");
        for isa in isas() {
            let mut c = vec![0u64; m * n];
            gemm_with(isa, m, k, n, &a, BSrc::Normal(&b), &mut c);
            assert_eq!(c, want, "{isa:?} normal {m}x{k}x{n}");
            let mut c = c0.clone();
            gemm_with(isa, m, k, n, &a, BSrc::Transposed(&bt), &mut c);
            assert_eq!(c, acc, "{isa:?} transposed {m}x{k}x{n}");
        }
    }

    #[test]
    fn gemm_matches_naive_on_edge_shapes() {
        let dims = [0usize, 1, 2, 3, 4, 5, 7, 8, 9, 13, 17];
        let mut seed = 0;
        for &m in &dims {
            for &k in &dims {
                for &n in &dims {
                    seed += 1;
                    check(m, k, n, seed);
                }
            }
        }
    }

    #[test]
    fn gemm_matches_naive_across_blocks() {
        // k beyond one k-block (KC), m beyond one row block (MC), ragged tiles, direct-B paths.
        for (i, &(m, k, n)) in [
            (1, 576, 67),
            (3, 300, 41),
            (4, 257, 4),
            (5, 513, 6),
            (32, 64, 32),
            (33, 255, 29),
            (65, 258, 23),
            (129, 70, 131),
        ]
        .iter()
        .enumerate()
        {
            check(m, k, n, 1000 + i as u64);
        }
    }

    #[test]
    fn gemm_parallel_paths_match_naive() {
        // Big enough for the task grid: column-split blocks (few rows) and row-split blocks.
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .expect("pool");
        pool.install(|| {
            for (i, &(m, k, n)) in [
                (400, 30, 30),
                (32, 300, 211),
                (2, 700, 301),
                (200, 260, 37),
                (130, 90, 70),
            ]
            .iter()
            .enumerate()
            {
                assert!(m * k * n >= PAR_MIN_WORK);
                check(m, k, n, 2000 + i as u64);
            }
        });
    }

    #[test]
    fn gemm_wraps_mod_2_64() {
        let a = [u64::MAX, 1u64 << 63, 3];
        let b = [u64::MAX, 2, 1u64 << 62];
        // 1×3 · 3×1: (-1)(-1) + 2^63·2 + 3·2^62 = 1 + 0 + 2^62·3 (mod 2^64)
        let want = 1u64.wrapping_add(3u64.wrapping_mul(1 << 62));
        assert_eq!(gemm_u64(1, 3, 1, &a, &b), vec![want]);
        assert_eq!(gemm_u64_bt(1, 3, 1, &a, &b), vec![want]);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn gemm_random_small_shapes(m in 0usize..20, k in 0usize..40, n in 0usize..20, seed in any::<u64>()) {
            check(m, k, n, seed);
        }
    }
}
