//! Compaction (being written).
