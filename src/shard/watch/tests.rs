//! Unit tests of the watch registry.
