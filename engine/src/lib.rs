//! # dirigo-engine
pub mod config;
pub mod source;
