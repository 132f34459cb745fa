//! The behavioural suite every store runs (in progress).
