//! Static deltas (being written).
