//! The trail-bucket key parser: a key it accepts builds back into a key it
//! reads the same way.

use trailwatch_core::layout::classify;

pub fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(key) = classify(text) else { return };
    assert!(!key.account_id.is_empty(), "{text:?}: no account");
    let built = key.to_key();
    assert_eq!(classify(&built).as_ref(), Ok(&key), "{text:?} built back as {built:?}");
}
