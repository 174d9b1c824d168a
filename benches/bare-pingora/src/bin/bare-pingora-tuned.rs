//! Pingora with the allocator weir uses (jemalloc), to separate the allocator's share from
//! weir's own work. Run it with `no-steal` for weir's runtime settings too.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() {
    weir_bench_bare_pingora::main_with_args();
}
