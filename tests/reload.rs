//! Hot reload on a real file system.
