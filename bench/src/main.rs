//! `dirigo-bench`: named benchmark scenarios.
fn main() {}
