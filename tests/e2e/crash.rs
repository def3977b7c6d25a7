//! Crashes during replacements and destroy; replacement order; key renames (end to end against moto).

#[allow(unused_imports)]
use super::*;
