//! What operators reach besides the customer API: the admin listener ([`admin`]: metrics,
//! health, readiness and `POST /backup`) and the one-shot commands of the binary
//! ([`commands`]: `backup`, `restore`, `verify`).

pub(crate) mod admin;
pub mod commands;
