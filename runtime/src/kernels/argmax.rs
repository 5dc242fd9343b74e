//! ArgMax over the last dimension (the first maximum wins), index written as int8.

use crate::error::Error;

/// For each row of `depth` values, the index of its first largest value. `depth` is at
/// most 128 so that every index fits an `i8`.
pub fn argmax(depth: usize, input: &[i8], output: &mut [i8]) -> Result<(), Error> {
    if depth == 0 || depth > 128 || depth.checked_mul(output.len()) != Some(input.len()) {
        return Err(Error::KernelArgs);
    }
    for (row, out) in input.chunks_exact(depth).zip(output.iter_mut()) {
        let mut best = 0usize;
        let mut best_value = i8::MIN;
        for (i, &v) in row.iter().enumerate() {
            if i == 0 || v > best_value {
                best = i;
                best_value = v;
            }
        }
        *out = i8::try_from(best).unwrap_or(i8::MAX);
    }
    Ok(())
}
