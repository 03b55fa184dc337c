//! Linearizability checker for client histories (Wing & Gong with memoization).
