// Data-parallel training processes on c10d's Gloo backend (include/xbar/train/data_parallel.h).
#include "xbar/train/data_parallel.h"

#include <cstdlib>
#include <string>

#include "xbar/core/error.h"

#ifdef XBAR_HAVE_GLOO
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#endif

namespace xbar {

struct DataParallel::Impl {
#ifdef XBAR_HAVE_GLOO
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::ProcessGroupGloo> group;
#endif
};

namespace {

int64_t EnvInt(const char* name, int64_t def, int64_t lo, int64_t hi) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return def;
  char* end = nullptr;
  const long long x = std::strtoll(v, &end, 10);
  if (*end != '\0' || x < lo || x > hi) {
    throw ConfigError(StrCat("environment ", name, "=", v, ": expected an integer in [", lo, ", ", hi, "]"));
  }
  return x;
}

}  // namespace

std::shared_ptr<DataParallel> DataParallel::Single() { return std::shared_ptr<DataParallel>(new DataParallel()); }

std::shared_ptr<DataParallel> DataParallel::FromEnvironment() {
  auto dp = Single();
  const int64_t world = EnvInt("WORLD_SIZE", 1, 1, 65536);
  if (world == 1) return dp;
  const int64_t rank = EnvInt("RANK", -1, 0, world - 1);
  if (rank < 0) throw ConfigError(StrCat("environment WORLD_SIZE=", world, " needs RANK (0 .. ", world - 1, ") too"));
  const char* addr_env = std::getenv("MASTER_ADDR");
  const std::string addr = addr_env != nullptr && *addr_env != '\0' ? addr_env : "127.0.0.1";
  const int64_t port = EnvInt("MASTER_PORT", 29500, 1, 65535);
  const int64_t timeout = EnvInt("XBAR_DIST_TIMEOUT", 300, 1, 86400);
  dp->rank_ = static_cast<int>(rank);
  dp->world_ = static_cast<int>(world);
#ifdef XBAR_HAVE_GLOO
  dp->impl_ = std::make_unique<Impl>();
  try {
    c10d::TCPStoreOptions o;
    o.port = static_cast<uint16_t>(port);
    o.isServer = rank == 0;
    o.numWorkers = static_cast<size_t>(world);
    o.waitWorkers = true;
    o.timeout = std::chrono::seconds(timeout);
    dp->impl_->store = c10::make_intrusive<c10d::TCPStore>(addr, o);
    auto opts = c10d::ProcessGroupGloo::Options::create(std::chrono::seconds(timeout));
    // The network interface: GLOO_SOCKET_IFNAME as in PyTorch, loopback for a one-machine run,
    // otherwise the one this host's name resolves to.
    const char* ifname = std::getenv("GLOO_SOCKET_IFNAME");
    if (ifname != nullptr && *ifname != '\0') {
      opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(ifname));
    } else if (addr == "127.0.0.1" || addr == "localhost") {
      opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
    } else {
      opts->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
    }
    dp->impl_->group = c10::make_intrusive<c10d::ProcessGroupGloo>(dp->impl_->store, static_cast<int>(rank),
                                                                    static_cast<int>(world), opts);
  } catch (const std::exception& e) {
    std::string msg = e.what();
    throw InputError(StrCat("data-parallel rendezvous at ", addr, ":", port, " (rank ", rank, " of ", world,
                            ") failed: ", msg.substr(0, msg.find('\n'))));
  }
#else
  throw ConfigError(StrCat("environment WORLD_SIZE=", world, ": this build has no c10d Gloo support "
                           "(install libgloo-dev and rebuild) to train in several processes"));
#endif
  return dp;
}

DataParallel::~DataParallel() = default;

// One collective over the tensors' concatenation (float64), written back in place.
void DataParallel::Collective(const std::vector<torch::Tensor>& tensors, bool sum) {
  if (world_ == 1 || tensors.empty()) return;
#ifdef XBAR_HAVE_GLOO
  std::vector<torch::Tensor> flat;
  for (const auto& t : tensors) flat.push_back(t.reshape({-1}).to(torch::kFloat64));
  std::vector<torch::Tensor> buf = {torch::cat(flat)};
  (sum ? impl_->group->allreduce(buf) : impl_->group->broadcast(buf))->wait();
  int64_t at = 0;
  torch::NoGradGuard no_grad;
  for (const auto& t : tensors) {
    t.copy_(buf[0].narrow(0, at, t.numel()).view(t.sizes()));
    at += t.numel();
  }
#endif
}

void DataParallel::AllReduceSum(const std::vector<torch::Tensor>& tensors) { Collective(tensors, /*sum=*/true); }

void DataParallel::Broadcast(const std::vector<torch::Tensor>& tensors) { Collective(tensors, /*sum=*/false); }

std::pair<int64_t, int64_t> DataParallel::Shard(int64_t count) const {
  return {count * rank_ / world_, count * (rank_ + 1) / world_};
}

}  // namespace xbar
