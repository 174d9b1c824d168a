//! Stock Pingora: the system allocator and whatever runtime the arguments ask for.
fn main() {
    weir_bench_bare_pingora::main_with_args();
}
