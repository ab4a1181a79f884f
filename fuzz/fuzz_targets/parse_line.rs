//! The line parser on arbitrary bytes: it must not panic, every refusal must render, and any
//! line it accepts must be an event that writes back to JSON and reads back as itself.
#![no_main]

use d2d_model::parse::parse_line;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match parse_line(data) {
        Ok(event) => {
            let json = serde_json::to_string(&event).expect("an accepted event serialises");
            assert_eq!(
                parse_line(json.as_bytes()).as_ref(),
                Ok(&event),
                "re-parse of {json}"
            );
        }
        Err(reason) => {
            assert!(!reason.to_string().is_empty());
            assert!(!reason.code().is_empty());
        }
    }
});
