//! CRC-32/ISO-HDLC ("IEEE", as in zlib, PNG and Ethernet): reflected polynomial
//! `0xEDB88320`, initial value and final XOR `0xFFFFFFFF`. A 16-entry (64-byte) table
//! built at compile time, two lookups per byte: the CRC runs once per blob at load, so
//! flash matters more than speed here (a 256-entry table costs 1 KiB of flash for one
//! lookup per byte).

const POLY: u32 = 0xEDB8_8320;

// Evaluated at compile time: an out-of-range index would be a build error, not a panic.
#[allow(clippy::indexing_slicing)]
const TABLE: [u32; 16] = {
    let mut table = [0u32; 16];
    let mut i = 0;
    while i < 16 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 4 {
            c = if c & 1 != 0 { (c >> 1) ^ POLY } else { c >> 1 };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
};

/// Streaming CRC32 (IEEE).
#[derive(Debug, Clone, Copy)]
pub struct Crc32 {
    state: u32,
}

impl Default for Crc32 {
    fn default() -> Self {
        Self::new()
    }
}

impl Crc32 {
    /// A fresh CRC.
    pub const fn new() -> Self {
        Crc32 { state: !0 }
    }

    /// Feed `bytes`.
    #[must_use]
    pub fn update(mut self, bytes: &[u8]) -> Self {
        let mut crc = self.state;
        for &b in bytes {
            crc ^= u32::from(b);
            // Low nibble, then high nibble. A 4-bit index into a 16-entry table: the `get`
            // never fails (and is optimized out).
            for _ in 0..2 {
                crc = (crc >> 4) ^ TABLE.get((crc & 0xf) as usize).copied().unwrap_or(0);
            }
        }
        self.state = crc;
        self
    }

    /// The CRC of everything fed so far.
    pub fn finish(self) -> u32 {
        !self.state
    }
}

/// CRC32 (IEEE) of `bytes`.
pub fn crc32(bytes: &[u8]) -> u32 {
    Crc32::new().update(bytes).finish()
}

#[cfg(test)]
mod tests {
    use super::crc32;

    #[test]
    fn check_value() {
        // The standard check value of CRC-32/ISO-HDLC.
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
        let split = super::Crc32::new()
            .update(b"1234")
            .update(b"56789")
            .finish();
        assert_eq!(split, 0xCBF4_3926);
    }
}
