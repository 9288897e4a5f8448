//! Parsing any batch body never panics; an accepted batch is within the documented bounds.
#![no_main]

use libfuzzer_sys::fuzz_target;
use presence_api::batch::{parse_batch, MAX_BATCH_REQUESTS};

fuzz_target!(|data: &[u8]| {
    if let Ok(requests) = parse_batch(data) {
        assert!(!requests.is_empty() && requests.len() <= MAX_BATCH_REQUESTS);
        for request in &requests {
            assert!(request.depends_on.iter().all(|index| *index < requests.len()));
        }
    }
});
