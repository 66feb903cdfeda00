//! CRC-32C (Castagnoli), the checksum of ext4's metadata_csum feature, in the raw form ext4 uses: the caller
//! passes the running value in and gets it back without the usual final inversion, so calls chain.

const POLY: u32 = 0x82f6_3b78;

const TABLE: [u32; 256] = {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 { (c >> 1) ^ POLY } else { c >> 1 };
            k += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
};

/// Below this many bytes the table is used even where the CPU has the instruction. Detecting it runs CPUID a
/// few times, and in a virtual machine each CPUID traps to the hypervisor, which costs more than the table takes
/// over a superblock (docs/BENCHMARKS.md). A run that checks only small structures (`wonk who` checks a
/// superblock and a group descriptor) then never detects.
const TABLE_BELOW: usize = 2048;

/// Continues a CRC-32C over `data`, starting from `crc` (ext4 starts a chain from `!0`).
pub fn update(crc: u32, data: &[u8]) -> u32 {
    #[cfg(target_arch = "x86_64")]
    if data.len() >= TABLE_BELOW && std::arch::is_x86_feature_detected!("sse4.2") {
        // SAFETY: the CPU has SSE4.2, checked just above.
        return unsafe { update_sse42(crc, data) };
    }
    update_table(crc, data)
}

fn update_table(mut crc: u32, data: &[u8]) -> u32 {
    for &b in data {
        crc = TABLE[((crc ^ u32::from(b)) & 0xff) as usize] ^ (crc >> 8);
    }
    crc
}

/// The CRC32 instruction computes exactly this raw form, 8 bytes per instruction instead of a table lookup a byte.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse4.2")]
unsafe fn update_sse42(crc: u32, data: &[u8]) -> u32 {
    use std::arch::x86_64::{_mm_crc32_u64, _mm_crc32_u8};
    let mut c = u64::from(crc);
    let mut words = data.chunks_exact(8);
    for w in &mut words {
        let mut b = [0u8; 8];
        b.copy_from_slice(w);
        c = _mm_crc32_u64(c, u64::from_le_bytes(b));
    }
    let mut c = c as u32;
    for &b in words.remainder() {
        c = _mm_crc32_u8(c, b);
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_check_value() {
        // The published CRC-32C check value is for the inverted form; ext4's raw form differs only by that.
        assert_eq!(!update(!0, b"123456789"), 0xe306_9283);
    }

    #[test]
    fn hardware_and_table_agree() {
        let data: Vec<u8> = (0..4099u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        for len in [0, 1, 7, 8, 9, 63, TABLE_BELOW - 1, TABLE_BELOW, 4096, 4099] {
            assert_eq!(
                update(!0, &data[..len]),
                update_table(!0, &data[..len]),
                "{len} bytes"
            );
            assert_eq!(
                update(0x1234_5678, &data[..len]),
                update_table(0x1234_5678, &data[..len])
            );
        }
    }

    #[test]
    fn chains() {
        let whole = update(!0, b"hello world");
        assert_eq!(update(update(!0, b"hello "), b"world"), whole);
    }
}
