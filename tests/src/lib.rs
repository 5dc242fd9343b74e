//! Host-side simulation tests live in `tests/`.
