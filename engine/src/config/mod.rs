//! Typed configuration (filled by the config work).
