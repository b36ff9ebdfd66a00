#![no_main]

use std::sync::OnceLock;

use trailwatch_fuzz::graphql::Target;

static TARGET: OnceLock<Target> = OnceLock::new();

libfuzzer_sys::fuzz_target!(|data: &[u8]| TARGET.get_or_init(Target::new).run(data));
