//! Resource sizes as a user types them (`--memory 4G`, `--size 1M`), then converted to the
//! device's granules: any string gives a number or a clear error, never a panic, and the two
//! agree with each other.
#![no_main]
use host_driver::spec::{granules, parse_size};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&shift, text)) = data.split_first() else {
        return;
    };
    let Ok(s) = std::str::from_utf8(text) else {
        return;
    };
    match parse_size(s) {
        Ok(bytes) => {
            // A size parses to digits times a unit, and nothing else.
            assert!(s.trim().starts_with(|c: char| c.is_ascii_digit()), "{s:?}");
            match granules(bytes, shift) {
                Ok(n) => {
                    assert!(n > 0);
                    assert_eq!((n as u64) << shift, bytes, "{s:?} at shift {shift}");
                }
                Err(e) => assert!(!e.to_string().is_empty()),
            }
        }
        Err(e) => assert!(
            e.to_string().contains('\''),
            "the message quotes the input: {e}"
        ),
    }
});
