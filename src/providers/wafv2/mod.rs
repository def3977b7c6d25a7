//! WAFv2: web ACLs and their associations.

pub mod association;
pub mod web_acl;
