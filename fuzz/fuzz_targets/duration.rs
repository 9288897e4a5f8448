//! Duration parsing never panics, and what it accepts is positive and bounded.
#![no_main]

use libfuzzer_sys::fuzz_target;
use presence_core::duration::{parse, MAX_REPRESENTABLE};

fuzz_target!(|text: &str| {
    if let Ok(duration) = parse(text) {
        assert!(!duration.is_zero());
        assert!(duration <= MAX_REPRESENTABLE);
    }
});
