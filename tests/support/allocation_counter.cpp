#include "tests/support/allocation_counter.h"

#include <cstdlib>
#include <new>

namespace {
thread_local bool g_count_allocations = false;
thread_local long g_allocations = 0;
}  // namespace

#if DVPN_COUNT_ALLOCATIONS
void* operator new(std::size_t n) {
  if (g_count_allocations) ++g_allocations;
  if (n == 0) n = 1;
  for (;;) {
    if (void* p = std::malloc(n)) return p;
    std::new_handler h = std::get_new_handler();
    if (!h) throw std::bad_alloc();
    h();
  }
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
#endif

namespace dvpn::test {

AllocationCounter::AllocationCounter() {
  g_allocations = 0;
  g_count_allocations = true;
}

AllocationCounter::~AllocationCounter() { Stop(); }

void AllocationCounter::Stop() { g_count_allocations = false; }

long AllocationCounter::count() const { return g_allocations; }

}  // namespace dvpn::test
