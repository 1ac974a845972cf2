//! Fuzz path normalization, credential extraction and the authentication decision.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| keygate::fuzz::auth_input(data));
