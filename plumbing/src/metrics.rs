//! Prometheus metrics. Labels are bounded (partition numbers, fixed
//! outcome names), never user ids or event ids.

use std::net::SocketAddr;
use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the global recorder once and returns the handle that renders
/// `/metrics`. Later calls return the same handle.
pub fn recorder() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets(&[
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 50.0, 100.0, 500.0,
                1000.0, 5000.0,
            ])
            .expect("the bucket list is non-empty");
        let rec = builder.build_recorder();
        let handle = rec.handle();
        // Fails only if another recorder was installed first (tests).
        let _ = metrics::set_global_recorder(rec);
        handle
    })
}

/// Serves `/metrics` on its own port (for `tokenusage projector`, which has
/// no HTTP server of its own).
pub fn serve_on(addr: SocketAddr) -> Result<(), String> {
    PrometheusBuilder::new()
        .with_http_listener(addr)
        .install()
        .map_err(|e| format!("cannot serve metrics on {addr}: {e}"))
}
