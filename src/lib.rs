//! `reconcile`: declarative provisioning for serverless API stacks on AWS.
//!
//! Layers: [`manifest`] (parse, validate, resolve references) → [`plan`] (a diff as plain data) →
//! [`apply`] (an executor over the graph) → [`providers`] (one module per resource kind, behind one trait) → [`state`].
//! [`verify`] probes an applied stack (HTTP and direct invocations).

pub mod apply;
pub mod artifact;
pub mod canonical;
pub mod cli;
pub mod commands;
pub mod identity;
pub mod input;
pub mod manifest;
pub mod plan;
pub mod providers;
pub mod redact;
pub mod state;
pub mod verify;
pub mod watch;
