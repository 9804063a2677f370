//! The one checksum of the format: CRC-32C (Castagnoli).
//!
//! Polynomial `0x1EDC6F41` (reflected `0x82F63B78`), initial value `0xFFFFFFFF`,
//! reflected input and output, final XOR `0xFFFFFFFF`; the CRC of the ASCII bytes
//! `"123456789"` is `0xE3069283`. Hardware-accelerated where the CPU allows.

/// CRC-32C of `bytes`.
pub fn crc32c(bytes: &[u8]) -> u32 {
    crc32c::crc32c(bytes)
}

/// Continues a CRC-32C: `crc32c_append(crc32c(a), b) == crc32c(a ++ b)`.
pub fn crc32c_append(crc: u32, bytes: &[u8]) -> u32 {
    crc32c::crc32c_append(crc, bytes)
}

#[cfg(test)]
mod tests {
    #[test]
    fn check_value_matches_the_documented_one() {
        assert_eq!(super::crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(
            super::crc32c_append(super::crc32c(b"1234"), b"56789"),
            0xE306_9283
        );
    }
}
