//! Fuzzes the pgoutput decoder: any payload must decode or fail with an error, never panic,
//! hang or allocate beyond its size.

#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = ferry_postgres::decode::decode(&Bytes::copy_from_slice(data));
});
