#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| trailwatch_fuzz::log_file::run(data));
