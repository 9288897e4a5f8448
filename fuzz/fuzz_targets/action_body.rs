//! Decoding any body for any action never panics; what it accepts applies to fresh facts without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use presence_api::route::Action;
use presence_core::{Timestamp, UserFacts};

const APP: &str = "0a0f1e5c-8f62-4d3f-9d52-3b1c3b0d5e11";

fuzz_target!(|data: &[u8]| {
    let Some((selector, body)) = data.split_first() else { return };
    let action = Action::ALL[usize::from(*selector) % Action::ALL.len()];
    if let Ok(command) = presence_api::decode_action(action, APP, Some("application/json"), body) {
        let mut facts = UserFacts::default();
        let _ = command.apply(&mut facts, Timestamp(1_788_256_800_000));
        let _ = presence_core::observe(&facts, Timestamp(1_788_256_800_000));
    }
});
