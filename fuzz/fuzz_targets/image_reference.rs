//! An image reference as PullImage, ImageStatus or RemoveImage take it. Never a panic; a reference that parses
//! normalizes to a string that parses to the same reference.

#![no_main]

use libfuzzer_sys::fuzz_target;
use reef_images::reference::ImageRef;

fuzz_target!(|data: &[u8]| {
    let Ok(input) = std::str::from_utf8(data) else { return };
    let Ok(parsed) = ImageRef::parse(input) else { return };
    let normalized = parsed.to_string();
    let again = ImageRef::parse(&normalized).unwrap_or_else(|e| panic!("{input:?} normalized to {normalized:?}: {e}"));
    assert_eq!(again, parsed, "{input:?} normalized to {normalized:?}");
    assert!(parsed.tag.is_some() || parsed.digest.is_some(), "{input:?} has neither tag nor digest");
    let _ = (parsed.tagged(), parsed.with_digest("sha256:00"));
});
