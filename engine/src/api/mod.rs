//! Salve's HTTP API (being written).
