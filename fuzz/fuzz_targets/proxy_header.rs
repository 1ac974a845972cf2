//! Fuzz the PROXY protocol header parser (v1 text and v2 binary).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| keygate::fuzz::proxy_header_input(data));
