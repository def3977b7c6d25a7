//! A stack pinned to its account and region (end to end against moto).

#[allow(unused_imports)]
use super::*;
