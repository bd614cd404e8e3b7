//! The integration tests, in one binary: the real services started
//! in-process on port 0 (or as the real `tokenusage` binary), each test
//! with a database and a topic of its own, against the PostgreSQL and the
//! Kafka-protocol broker that `scripts/test.sh` provides.
//!
//! One binary rather than one per file: each binary links the whole tree
//! (librdkafka included), and on a 2-core CI machine eight links cost
//! minutes that one does not.

mod budgets;
mod common;
mod days;
mod docs;
mod first_run;
mod history;
mod hostile;
mod ingest_http;
mod live;
mod live_faults;
mod maintenance;
mod money;
mod oidc_tls;
mod operations;
mod otlp;
mod overload;
mod processes;
mod projector;
mod replica;
mod provider_stub;
mod providers;
mod sdk_usage;
mod security;
mod sessions;
mod slice;
mod teams;
