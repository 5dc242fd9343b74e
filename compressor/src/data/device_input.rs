//! An image as the deployed int8 model takes it: normalized, quantized onto the model's
//! input grid, channels-last.

use super::Dataset;

impl Dataset {
    /// Image `i` as the deployed model's input: each pixel normalized by this dataset's
    /// [`Normalization`](super::Normalization), then `q = clamp(round(x / scale) +
    /// zero_point)` in the f32 arithmetic the fake quantization uses (candle's `x / scale`
    /// is `x · (1 / scale)` with the factor rounded to f32), so host and chip see the
    /// same integers; laid out `(H, W, C)` as `sprig-runtime` takes it.
    ///
    /// # Panics
    /// If `i >= len()`.
    pub fn device_input(&self, i: usize, scale: f32, zero_point: i32) -> Vec<i8> {
        let inv = (1.0 / f64::from(scale)) as f32;
        let zp = zero_point as f32;
        let chw: Vec<f32> = self.normalized(i).collect();
        let plane = self.rows * self.cols;
        (0..plane)
            .flat_map(|pixel| (0..self.channels).map(move |c| c * plane + pixel))
            .map(|k| ((chw[k] * inv).round() + zp).clamp(-128.0, 127.0) as i8)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use crate::data::{pixel_to_int8, Dataset, Normalization, INPUT_GRID};

    #[test]
    fn default_normalization_gives_pixel_minus_128() {
        let pixels: Vec<u8> = (0..=255).collect();
        let data = Dataset::from_parts(pixels.clone(), vec![0], [1, 16, 16], "all".into());
        let q = data.device_input(0, INPUT_GRID.scale, INPUT_GRID.zero_point);
        assert!(q.iter().zip(&pixels).all(|(&q, &p)| q == pixel_to_int8(p)));
    }

    #[test]
    fn channels_go_last_and_each_lands_on_the_grid() {
        // 2 channels of 1×3: c0 = [0, 128, 255], c1 = [10, 20, 30].
        let data = Dataset::from_parts(
            vec![0, 128, 255, 10, 20, 30],
            vec![0],
            [2, 1, 3],
            "c".into(),
        )
        .with_normalization(Normalization::Unit)
        .unwrap();
        let g = Normalization::Unit.input_grid();
        let q = data.device_input(0, g.scale, g.zero_point);
        // Unit: q = p − 128, interleaved (H, W, C).
        assert_eq!(q, [-128, -118, 0, -108, 127, -98]);
    }
}
