//! Pingora with the allocator weir uses, to separate the allocator's share from weir's own work.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    weir_bench_bare_pingora::main_with_args();
}
