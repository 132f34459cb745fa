//! Redis store (in progress on its own branch).
