// g++'s -fsanitize-coverage=trace-cmp also reports floating-point comparisons (through the two
// hooks below), which clang never emits and so libclang_rt.fuzzer does not define. Code with a
// double comparison (the gossip node's token buckets) then fails to link; libFuzzer gains
// nothing from float comparisons, so they are ignored.
extern "C" {
void __sanitizer_cov_trace_cmpf(float, float) {}
void __sanitizer_cov_trace_cmpd(double, double) {}
}
