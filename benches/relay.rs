//! Relay benchmark (filled in below).
fn main() {}
