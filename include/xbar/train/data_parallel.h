// xbar/train/data_parallel.h — multi-process data-parallel training on LibTorch's c10d (Gloo).
//
// N processes (one machine or several) each train on 1/N of every global mini-batch; after each
// backward pass the gradients are summed across processes (all-reduce), so every process applies
// the same update and holds the same weights: the same global batch and seed give the accuracy of
// one process, up to the order of float sums. Rendezvous is a TCPStore at MASTER_ADDR:MASTER_PORT
// (rank 0 serves it), as torchrun and PyTorch DDP use:
//
//   RANK=0 WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=29500 xbar train -c exp.yaml &
//   RANK=1 WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=29500 xbar train -c exp.yaml
//
//   std::shared_ptr<DataParallel> dp = DataParallel::FromEnvironment();  // world 1 without WORLD_SIZE
//   dp->AllReduceSum(grads);
#pragma once

#include <torch/torch.h>

#include <memory>
#include <string>
#include <vector>

namespace xbar {

class DataParallel {
 public:
  // From RANK, WORLD_SIZE, MASTER_ADDR (default 127.0.0.1) and MASTER_PORT (default 29500). Without
  // WORLD_SIZE (or WORLD_SIZE=1) a world of one process, where every call is the identity. Throws
  // ConfigError for malformed variables, InputError when the rendezvous fails (timeout 300 s,
  // XBAR_DIST_TIMEOUT seconds).
  static std::shared_ptr<DataParallel> FromEnvironment();
  // A world of one process.
  static std::shared_ptr<DataParallel> Single();
  ~DataParallel();

  int rank() const { return rank_; }
  int world() const { return world_; }
  bool leader() const { return rank_ == 0; }

  // Sums every tensor across the processes, in place (one all-reduce over their concatenation).
  void AllReduceSum(const std::vector<torch::Tensor>& tensors);
  // Rank 0's values everywhere, in place.
  void Broadcast(const std::vector<torch::Tensor>& tensors);
  // Rows [begin, end) of a global batch of `count` rows that this process trains on.
  std::pair<int64_t, int64_t> Shard(int64_t count) const;

 private:
  struct Impl;
  DataParallel() = default;
  void Collective(const std::vector<torch::Tensor>& tensors, bool sum);  // all-reduce (sum) or broadcast
  int rank_ = 0, world_ = 1;
  std::unique_ptr<Impl> impl_;
};

}  // namespace xbar
