//! Resource sizes as users write them on a command line, checked and converted: the one
//! parser `accelctl` (and any other front end) uses, fuzzed on its own.

use crate::error::{Error, Result};

/// A size as users write it ("4G", "512MiB", "4096"), in bytes.
pub fn parse_size(s: &str) -> Result<u64> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| Error::Invalid(format!("'{s}' is not a size (try 512M or 4G)")))?;
    let mult = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        _ => {
            return Err(Error::Invalid(format!(
                "'{s}': unknown unit (use K, M, G or T)"
            )))
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| Error::Invalid(format!("'{s}' is too large")))
}

/// Bytes → granules of `1 << shift` bytes (the granule the device reports): a positive whole
/// number of them.
pub fn granules(bytes: u64, shift: u8) -> Result<u32> {
    let g = 1u64
        .checked_shl(shift as u32)
        .filter(|_| shift < 48)
        .ok_or_else(|| Error::Invalid(format!("the device reports a 2^{shift}-byte granule")))?;
    if bytes == 0 || !bytes.is_multiple_of(g) {
        return Err(Error::Invalid(format!(
            "memory must be a positive multiple of the {} granule",
            human(g)
        )));
    }
    u32::try_from(bytes / g).map_err(|_| Error::Invalid("memory size too large".into()))
}

fn human(b: u64) -> String {
    match b {
        b if b >= 1 << 30 && b.is_multiple_of(1 << 30) => format!("{} GiB", b >> 30),
        b if b >= 1 << 20 && b.is_multiple_of(1 << 20) => format!("{} MiB", b >> 20),
        b if b >= 1 << 10 && b.is_multiple_of(1 << 10) => format!("{} KiB", b >> 10),
        b => format!("{b}-byte"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_granules() {
        assert_eq!(parse_size("4G").unwrap(), 4 << 30);
        assert_eq!(parse_size(" 512MiB ").unwrap(), 512 << 20);
        assert!(parse_size("4X").is_err());
        assert!(parse_size("G").is_err());
        assert!(parse_size("99999999999T").is_err(), "overflow is an error");
        assert_eq!(granules(4 << 30, 21).unwrap(), 2048);
        assert!(granules(3 << 20, 21).is_err());
        assert!(granules(0, 21).is_err());
        assert!(
            granules(1 << 20, 200).is_err(),
            "a nonsense granule is an error, not a panic"
        );
        assert!(granules(4096, 12).is_ok());
    }
}
