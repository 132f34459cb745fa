//! Health endpoints (in progress on its own branch).
