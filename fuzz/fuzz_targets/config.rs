//! Fuzz the configuration and keys parsers and the validator.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| keygate::fuzz::config_input(data));
