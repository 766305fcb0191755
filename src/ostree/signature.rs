//! Commit signatures (being written).
