//! Secrets, AWS naming rules, code path confinement (end to end against moto).

#[allow(unused_imports)]
use super::*;
