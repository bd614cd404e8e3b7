//! The access rule (`tokenusage-access`, pure) applied with the team
//! directory's answers (`resolve`): the API's one way to decide who may see
//! or set what.

mod resolve;

pub(crate) use resolve::{SubjectError, reach_of, subject};
pub use tokenusage_access::*;
