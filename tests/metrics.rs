//! The engine's metrics (being written).
