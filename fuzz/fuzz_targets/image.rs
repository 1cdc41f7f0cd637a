//! Arbitrary bytes as a firmware image to the checks a device makes before it keeps or boots
//! one (`fw_image::verify`): never a panic, and nothing passes that was not signed with the
//! device's key. The corpus starts from a valid signed image, so mutations reach the CRC and
//! signature checks, not only the header's.
#![no_main]
use libfuzzer_sys::fuzz_target;

/// The fuzzing key (public, fixed): the seed corpus's image is signed with it.
const SEED: [u8; 32] = [0x42; 32];

fuzz_target!(|data: &[u8]| {
    // Derived once: deriving it is a scalar multiplication, dearer than most inputs.
    static KEY: std::sync::OnceLock<[u8; 32]> = std::sync::OnceLock::new();
    let key = KEY.get_or_init(|| fw_image::public_key(&SEED));
    if let Ok(p) = fw_image::verify(data, key, fw_image::BOARD_SIM) {
        // Whatever verified is exactly header, signature and payload, as the header says.
        assert_eq!(
            data.len(),
            fw_image::PAYLOAD_OFFSET + p.header.payload_size.get() as usize
        );
        assert_eq!(fw_image::crc32(p.payload), p.header.payload_crc.get());
    }
    let _ = fw_image::check_rollback(
        data.len() as u32,
        0x0100_0000,
        data.get(1).map_or(0, |&b| (b as u32) << 16),
        data.first() == Some(&1),
    );
});
