//! A bounds-checked front to the `gemm` crate (the GEMM candle's own matmul runs on), so the
//! custom ops call it with slices instead of raw pointers.

/// A row-major view of `m × n` matrix elements in a slice: element `(i, j)` sits at
/// `i * row_stride + j * col_stride`. Transposes are views with the strides swapped.
#[derive(Clone, Copy)]
pub struct MatRef<'a> {
    pub data: &'a [f32],
    pub row_stride: usize,
    pub col_stride: usize,
}

impl<'a> MatRef<'a> {
    /// A contiguous row-major matrix with `cols` columns.
    pub fn rows(data: &'a [f32], cols: usize) -> Self {
        Self {
            data,
            row_stride: cols,
            col_stride: 1,
        }
    }
    /// The transpose of a contiguous row-major matrix with `cols` columns.
    pub fn transposed(data: &'a [f32], cols: usize) -> Self {
        Self {
            data,
            row_stride: 1,
            col_stride: cols,
        }
    }
    fn check(&self, rows: usize, cols: usize, what: &str) {
        if rows == 0 || cols == 0 {
            return;
        }
        let last = (rows - 1) * self.row_stride + (cols - 1) * self.col_stride;
        assert!(
            last < self.data.len(),
            "{what}: a {rows}×{cols} view reaches element {last} of {}",
            self.data.len()
        );
    }
}

/// `dst[m × n] (+)= lhs[m × k] · rhs[k × n]`, single-threaded (callers parallelize over
/// images); `dst` is contiguous row-major, `accumulate` adds to what it holds.
pub fn matmul(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [f32],
    accumulate: bool,
    lhs: MatRef,
    rhs: MatRef,
) {
    assert!(
        dst.len() >= m * n,
        "matmul: dst holds {} < {m}×{n}",
        dst.len()
    );
    lhs.check(m, k, "matmul lhs");
    rhs.check(k, n, "matmul rhs");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            dst[..m * n].fill(0.0);
        }
        return;
    }
    // SAFETY: every view was checked above to stay inside its slice for the given sizes,
    // and `dst` is a unique borrow that no input aliases.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            lhs.data.as_ptr(),
            lhs.col_stride as isize,
            lhs.row_stride as isize,
            rhs.data.as_ptr(),
            rhs.col_stride as isize,
            rhs.row_stride as isize,
            if accumulate { 1.0 } else { 0.0 },
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::{matmul, MatRef};

    fn naive(m: usize, n: usize, k: usize, a: MatRef, b: MatRef) -> Vec<f32> {
        let mut out = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                out[i * n + j] = (0..k)
                    .map(|p| {
                        a.data[i * a.row_stride + p * a.col_stride]
                            * b.data[p * b.row_stride + j * b.col_stride]
                    })
                    .sum();
            }
        }
        out
    }

    #[test]
    fn plain_transposed_and_accumulated_products_match_loops() {
        let (m, n, k) = (5, 7, 3);
        let a: Vec<f32> = (0..m * k).map(|i| i as f32 * 0.5 - 3.0).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i % 5) as f32 - 1.5).collect();
        let at: Vec<f32> = (0..k * m).map(|i| a[(i % m) * k + i / m]).collect();
        let mut dst = vec![9.0; m * n];
        matmul(
            m,
            n,
            k,
            &mut dst,
            false,
            MatRef::rows(&a, k),
            MatRef::rows(&b, n),
        );
        assert_eq!(
            dst,
            naive(m, n, k, MatRef::rows(&a, k), MatRef::rows(&b, n))
        );
        let mut acc = dst.clone();
        matmul(
            m,
            n,
            k,
            &mut acc,
            true,
            MatRef::transposed(&at, m),
            MatRef::rows(&b, n),
        );
        let doubled: Vec<f32> = dst.iter().map(|v| 2.0 * v).collect();
        assert_eq!(acc, doubled);
    }

    #[test]
    #[should_panic(expected = "matmul rhs")]
    fn a_view_past_its_slice_is_refused() {
        let mut dst = vec![0.0; 4];
        matmul(
            2,
            2,
            2,
            &mut dst,
            false,
            MatRef::rows(&[1.0; 4], 2),
            MatRef::rows(&[1.0; 3], 2),
        );
    }
}
