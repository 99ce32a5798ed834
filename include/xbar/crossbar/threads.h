// xbar/crossbar/threads.h — keeping float sums independent of the thread count.
//
// Results must be the same bits at any thread count (ARCHITECTURE.md). Our own loops split work by
// output (at::parallel_for over positions, tiles or image batches), so each sum runs in one fixed
// order. Library kernels are different: OpenBLAS splits a float GEMM between its threads in a way
// that changes the order of some sums (a float32 bmm gives other last bits on 2 threads than on 1).
// OneThread runs the library calls in its scope on the calling thread only (inside an
// at::parallel_for they already are), by lowering this thread's OpenMP limit, which OpenBLAS and
// ATen read; it is cheap (no thread pool is rebuilt, unlike at::set_num_threads).
//
//   { OneThread one;  y = model.forward(batch); }   // the same bits at any thread count
#pragma once

#include <omp.h>

namespace xbar {

class OneThread {
 public:
  OneThread() : threads_(omp_get_max_threads()) { omp_set_num_threads(1); }
  ~OneThread() { omp_set_num_threads(threads_); }
  OneThread(const OneThread&) = delete;
  OneThread& operator=(const OneThread&) = delete;

 private:
  int threads_;
};

}  // namespace xbar
