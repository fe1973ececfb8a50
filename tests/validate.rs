//! `salve validate` and `salve schema`, through the real binary.
