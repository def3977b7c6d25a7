//! `reconcile`: declarative provisioning for serverless API stacks on AWS.
//!
//! Layers: [`manifest`] (parse, validate, resolve references) → [`plan`] (a diff as plain data) →
//! [`apply`] (an executor over the graph) → [`providers`] (one module per AWS service) → [`state`].

pub mod apply;
pub mod cli;
pub mod commands;
pub mod identity;
pub mod manifest;
pub mod plan;
pub mod providers;
pub mod state;
pub mod watch;
