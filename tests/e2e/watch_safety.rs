//! The watcher never fights its users (end to end against moto).

#[allow(unused_imports)]
use super::*;
