//! The manifest (being written).
