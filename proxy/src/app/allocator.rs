//! The memory allocator's settings and its numbers: jemalloc (the `weir` binary's global
//! allocator, `src/main.rs`) is told to purge freed pages while weir is idle, and its own
//! accounting is exported as `weir_allocator_bytes{state}` so that an operator can tell
//! live data from allocator retention when RSS grows.
//!
//! Must not: choose the global allocator (only a binary can) or allocate per request.

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{IntGaugeVec, Opts};

/// jemalloc returns freed pages to the kernel only while the process allocates, so an idle
/// router kept every page its last config parse had touched (1,000 routes: 58 MiB idle
/// instead of 35). One background thread purges on jemalloc's decay timer (10 s) instead.
pub fn return_freed_memory_when_idle() {
    let enabled = tikv_jemalloc_ctl::max_background_threads::write(1)
        .and_then(|()| tikv_jemalloc_ctl::background_thread::write(true));
    if let Err(e) = enabled {
        tracing::warn!("allocator background purging unavailable: {e}");
    }
}

/// `weir_allocator_bytes{state}`, read from jemalloc at each scrape. Where the allocator
/// is not jemalloc (unit tests) the numbers are jemalloc's own, near zero.
pub struct AllocatorCollector {
    bytes: IntGaugeVec,
}

impl AllocatorCollector {
    pub fn new() -> prometheus::Result<Self> {
        let bytes = IntGaugeVec::new(
            Opts::new(
                "weir_allocator_bytes",
                "Heap as jemalloc accounts it: allocated (live objects), active (their pages), \
                 resident (in RAM, including freed pages not yet purged and metadata), \
                 metadata, retained (address space kept for reuse, not in RAM).",
            ),
            &["state"],
        )?;
        Ok(AllocatorCollector { bytes })
    }

    fn refresh(&self) {
        // jemalloc's statistics are a snapshot taken when the epoch advances.
        if tikv_jemalloc_ctl::epoch::advance().is_err() {
            return;
        }
        use tikv_jemalloc_ctl::stats;
        let readings = [
            ("allocated", stats::allocated::read()),
            ("active", stats::active::read()),
            ("resident", stats::resident::read()),
            ("metadata", stats::metadata::read()),
            ("retained", stats::retained::read()),
        ];
        for (state, value) in readings {
            if let Ok(value) = value {
                let value = i64::try_from(value).unwrap_or(i64::MAX);
                self.bytes.with_label_values(&[state]).set(value);
            }
        }
    }
}

impl Collector for AllocatorCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.bytes.desc()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        self.refresh();
        self.bytes.collect()
    }
}
