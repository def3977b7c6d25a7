//! Second state files, stage logging order, small fixes (end to end against moto).

#[allow(unused_imports)]
use super::*;
