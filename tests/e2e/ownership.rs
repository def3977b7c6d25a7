//! Import ownership, region-wide singletons, output-only changes (end to end against moto).

#[allow(unused_imports)]
use super::*;
