//! Usage history: parsing a request into a view (`params`), planning its
//! buckets (`plan`), reading it from the rollups (`read`, through the
//! series `cache`), and presenting it (`present`, shared with live views,
//! and `csv`); `routes` are the REST handlers that chain them.

pub mod cache;
pub(crate) mod csv;
pub mod days;
pub mod params;
pub mod plan;
pub mod present;
pub mod read;
pub(crate) mod routes;
