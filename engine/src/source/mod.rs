//! Sources (filled by the sources work).
