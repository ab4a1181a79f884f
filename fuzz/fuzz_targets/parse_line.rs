//! The line parser on arbitrary bytes: it must not panic, every refusal must render, any line
//! it accepts must be an event that writes back to JSON and reads back as itself, and it must
//! agree with `Event`'s serde `Deserialize` (which never takes the parser's fast paths).
#![no_main]

use d2d_model::event::Event;
use d2d_model::parse::parse_line;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let ours = parse_line(data);
    match &ours {
        Ok(event) => {
            let json = serde_json::to_string(event).expect("an accepted event serialises");
            assert_eq!(
                parse_line(json.as_bytes()).as_ref(),
                Ok(event),
                "re-parse of {json}"
            );
        }
        Err(reason) => {
            assert!(!reason.to_string().is_empty());
            assert!(!reason.code().is_empty());
        }
    }
    // `Event`'s Deserialize also takes a JSON array positionally; the parser refuses those.
    if let Ok(text) = std::str::from_utf8(data) {
        if !text
            .trim_start_matches([' ', '\t', '\n', '\r'])
            .starts_with('[')
        {
            let theirs = serde_json::from_str::<Event>(text);
            assert_eq!(ours.as_ref().ok(), theirs.as_ref().ok(), "line: {text}");
        }
    }
});
