//! Usage history: parsing a request into a view (`params`), planning its
//! buckets (`plan`), reading it from the rollups (`read`, through the
//! series `cache`), and presenting it (`present`, shared with live views,
//! and `csv`); the REST handlers that chain them are
//! `crate::http::routes::history`.

pub mod cache;
pub(crate) mod csv;
pub mod days;
pub mod params;
pub mod plan;
pub mod present;
pub mod read;
