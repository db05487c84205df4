//! The ingress's URL paths that more than one module names.

/// The customers collection; a customer is `{CUSTOMERS_PATH}/{id}`.
pub(crate) const CUSTOMERS_PATH: &str = "/api/v1/customers";

/// The search endpoint (a path no customer id can take: ids start with `cus_`).
pub(crate) const SEARCH_PATH: &str = "/api/v1/customers/search";
