//! Creates that fail part-way; writes that fail are failures (end to end against moto).

#[allow(unused_imports)]
use super::*;
