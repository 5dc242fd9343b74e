//! Telling channels-first (NCHW) from channels-last (NHWC) image arrays by their shape.
//!
//! `keras.datasets` gives `(N, H, W)` (MNIST, Fashion-MNIST) or `(N, H, W, C)` (CIFAR);
//! PyTorch tensors saved with numpy are `(N, C, H, W)`. Images have more than 4 pixels a
//! side and at most 4 channels, so the one small axis among the last three is the channel
//! axis; a shape where that is not clear, like `(N, 3, 32, 3)`, is an error rather than a
//! guess.

/// The axis order of an image array.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// `(N, H, W)`: one channel.
    Nhw,
    /// `(N, C, H, W)`.
    Nchw,
    /// `(N, H, W, C)`.
    Nhwc,
}

/// The most channels an axis can have and still be taken for the channel axis.
pub const MAX_CHANNELS: u64 = 4;

/// An image array's layout and its `(N, [C, H, W])`, or why the shape is not one.
pub fn detect(shape: &[u64]) -> Result<(Layout, usize, [usize; 3]), String> {
    let small = |d: u64| d <= MAX_CHANNELS;
    let (layout, n, chw) = match *shape {
        [n, h, w] => (Layout::Nhw, n, [1, h, w]),
        [n, a, h, w] if small(a) && !small(h) && !small(w) => (Layout::Nchw, n, [a, h, w]),
        [n, h, w, c] if small(c) && !small(h) && !small(w) => (Layout::Nhwc, n, [c, h, w]),
        [_, _, _, _] => {
            return Err(format!(
                "shape {shape:?} is neither (N, C, H, W) nor (N, H, W, C) with C <= \
                 {MAX_CHANNELS} channels and H, W > {MAX_CHANNELS} pixels"
            ))
        }
        _ => {
            return Err(format!(
                "shape {shape:?} has {} axes; images must be (N, H, W), (N, C, H, W) or \
                 (N, H, W, C)",
                shape.len()
            ))
        }
    };
    let to_usize = |d: u64| usize::try_from(d).map_err(|_| format!("shape {shape:?} is too large"));
    let chw = [to_usize(chw[0])?, to_usize(chw[1])?, to_usize(chw[2])?];
    if chw.contains(&0) {
        return Err(format!("shape {shape:?} has an empty image axis"));
    }
    Ok((layout, to_usize(n)?, chw))
}

/// Reorders one image from `layout` to channels-first `(C, H, W)`.
pub fn to_chw<T: Copy>(image: &[T], layout: Layout, [c, h, w]: [usize; 3], out: &mut Vec<T>) {
    match layout {
        Layout::Nhw | Layout::Nchw => out.extend_from_slice(image),
        Layout::Nhwc => {
            for ch in 0..c {
                out.extend((0..h * w).map(|pixel| image[pixel * c + ch]));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keras_and_torch_shapes() {
        assert_eq!(
            detect(&[60000, 28, 28]).unwrap(),
            (Layout::Nhw, 60000, [1, 28, 28])
        );
        assert_eq!(
            detect(&[50, 32, 32, 3]).unwrap(),
            (Layout::Nhwc, 50, [3, 32, 32])
        );
        assert_eq!(
            detect(&[50, 3, 32, 32]).unwrap(),
            (Layout::Nchw, 50, [3, 32, 32])
        );
        assert_eq!(
            detect(&[7, 1, 28, 28]).unwrap(),
            (Layout::Nchw, 7, [1, 28, 28])
        );
        assert_eq!(
            detect(&[7, 28, 28, 1]).unwrap(),
            (Layout::Nhwc, 7, [1, 28, 28])
        );
        assert_eq!(detect(&[7, 20, 12]).unwrap().2, [1, 20, 12]);
    }

    #[test]
    fn unclear_shapes_are_errors() {
        assert!(detect(&[5, 3, 32, 3]).unwrap_err().contains("neither"));
        assert!(detect(&[5, 8, 32, 32]).unwrap_err().contains("neither"));
        assert!(detect(&[5, 784]).unwrap_err().contains("2 axes"));
        assert!(detect(&[5, 0, 28]).unwrap_err().contains("empty"));
    }

    #[test]
    fn nhwc_is_reordered_to_chw() {
        // 2×2 pixels, 3 channels: value = 10·pixel + channel.
        let hwc: Vec<u8> = (0..4)
            .flat_map(|p| (0..3).map(move |c| 10 * p + c))
            .collect();
        let mut chw = Vec::new();
        to_chw(&hwc, Layout::Nhwc, [3, 2, 2], &mut chw);
        assert_eq!(chw, [0, 10, 20, 30, 1, 11, 21, 31, 2, 12, 22, 32]);
    }
}
