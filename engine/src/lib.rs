//! # dirigo-engine
