#pragma once
// Counts heap allocations (global operator new) made on this thread, for the tests that prove
// a data path allocates nothing per packet. Linking dvpn_test_allocation_counter replaces the
// global operator new of the test binary (malloc-based, like libstdc++'s own). Sanitizer
// runtimes bring their own operator new, so there nothing is replaced and
// DVPN_COUNT_ALLOCATIONS is 0: guard the tests with it.

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define DVPN_COUNT_ALLOCATIONS 0
#else
#define DVPN_COUNT_ALLOCATIONS 1
#endif

namespace dvpn::test {

// Counts this thread's allocations from construction until Stop() or destruction.
class AllocationCounter {
 public:
  AllocationCounter();
  ~AllocationCounter();
  AllocationCounter(const AllocationCounter&) = delete;
  AllocationCounter& operator=(const AllocationCounter&) = delete;

  void Stop();
  long count() const;
};

}  // namespace dvpn::test
