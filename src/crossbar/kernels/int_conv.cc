// Exact integer convolution on oneDNN's int8 primitives (kernels.h): the counting pass of
// zero-skipping estimates (workload.cc) sums quantised inputs times quantised weights, integers
// that a float32 GEMM rounds once they pass 2^24. Split into bytes, the inputs go through one u8 x
// s8 -> s32 convolution per byte (AMX or VNNI on CPUs that have them: 4-8x a float32 convolution
// of the same shape), and the byte sums are recombined in int64: every output is the exact sum,
// rounded once to float32. Integer sums do not depend on the order of the additions, so the result
// is the same at any thread count and on any ISA that sums exactly.
#include "xbar/crossbar/kernels.h"

#include <algorithm>
#include <cstdint>
#include <memory>

#ifdef XBAR_HAVE_DNNL
#include <oneapi/dnnl/dnnl.hpp>
#endif

namespace xbar {

#ifdef XBAR_HAVE_DNNL
namespace {

using dt = dnnl::memory::data_type;
using tag = dnnl::memory::format_tag;

// Where oneDNN's u8 x s8 products accumulate straight into int32. Without VNNI (or AMX) its
// kernels add pairs of products in saturating int16 first (vpmaddubsw), which is not exact for
// inputs near 255 times weights near 127.
bool ExactInt8Isa() {
  static const bool exact = [] {
    switch (dnnl::get_effective_cpu_isa()) {
      case dnnl::cpu_isa::avx512_core_vnni:
      case dnnl::cpu_isa::avx512_core_bf16:
      case dnnl::cpu_isa::avx512_core_amx:
      case dnnl::cpu_isa::avx2_vnni:
        return true;
      default:
        return false;
    }
  }();
  return exact;
}

const dnnl::engine& CpuEngine() {
  static const dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

}  // namespace

bool ExactIntConvAvailable() { return ExactInt8Isa(); }

bool ExactIntConv(const IntConvShape& c, const float* x, const int8_t* w, float* y) {
  if (!ExactInt8Isa()) return false;
  const int64_t N = c.batch, C = c.in_channels, H = c.height, W = c.width, O = c.out_channels;
  const int64_t G = c.groups, KH = c.kernel_h, KW = c.kernel_w;
  const int64_t OH = (H + 2 * c.padding - c.dilation * (KH - 1) - 1) / c.stride + 1;
  const int64_t OW = (W + 2 * c.padding - c.dilation * (KW - 1) - 1) / c.stride + 1;
  if (N <= 0 || G <= 0 || C % G != 0 || O % G != 0 || OH <= 0 || OW <= 0) return false;
  // A byte's sum over one output's C/G·KH·KW products stays within int32: 255·128 per product.
  const int64_t reduce = C / G * KH * KW;
  if (reduce > (int64_t{1} << 31) / (255 * 128)) return false;

  // The inputs as bytes (NCHW), checked to be integer codes in [0, 2^16) on the way: low bytes,
  // then high bytes when any code needs them.
  const int64_t n_in = N * C * H * W;
  std::unique_ptr<uint8_t[]> lo(new uint8_t[static_cast<size_t>(n_in)]), hi(new uint8_t[static_cast<size_t>(n_in)]);
  uint32_t any_high = 0, bad = 0;
  {
    const float* __restrict xs = x;
    uint8_t* __restrict l = lo.get();
    uint8_t* __restrict h = hi.get();
    for (int64_t i = 0; i < n_in; ++i) {  // branch-free: vectorises (-fno-trapping-math)
      const float v = xs[i];
      const uint32_t in_range = static_cast<uint32_t>(v >= 0.0f) & static_cast<uint32_t>(v <= 65535.0f);  // 0 for NaN
      const auto u = static_cast<uint32_t>(static_cast<int32_t>(in_range != 0 ? v : 0.0f));
      bad |= (in_range ^ 1u) | static_cast<uint32_t>(static_cast<float>(u) != v);
      l[i] = static_cast<uint8_t>(u & 0xff);
      h[i] = static_cast<uint8_t>((u >> 8) & 0xff);
      any_high |= u >> 8;
    }
  }
  if (bad != 0) return false;
  const int passes = any_high != 0 ? 2 : 1;

  const int64_t n_out = N * O * OH * OW, P = OH * OW;
  std::unique_ptr<int32_t[]> sums(new int32_t[static_cast<size_t>(n_out * passes)]);
  bool nhwc = false;
  try {
    // oneDNN picks the layouts its int8 kernels want (NHWC for AMX); reorders move the data in and out.
    const dnnl::engine& engine = CpuEngine();
    dnnl::stream stream(engine);
    const dnnl::memory::dims wdims = G == 1 ? dnnl::memory::dims{O, C, KH, KW} : dnnl::memory::dims{G, O / G, C / G, KH, KW};
    const dnnl::memory::desc src_user({N, C, H, W}, dt::u8, tag::nchw);
    const dnnl::memory::desc dst_user({N, O, OH, OW}, dt::s32, tag::nchw);
    const dnnl::memory::desc wei_user(wdims, dt::s8, G == 1 ? tag::oihw : tag::goihw);
    const dnnl::convolution_forward::desc desc(
        dnnl::prop_kind::forward_inference, dnnl::algorithm::convolution_direct,
        dnnl::memory::desc({N, C, H, W}, dt::u8, tag::any), dnnl::memory::desc(wdims, dt::s8, tag::any),
        dnnl::memory::desc({N, O, OH, OW}, dt::s32, tag::any), {c.stride, c.stride}, {c.dilation - 1, c.dilation - 1},
        {c.padding, c.padding}, {c.padding, c.padding});
    const dnnl::convolution_forward::primitive_desc pd(desc, engine);  // from oneDNN's primitive cache
    const dnnl::convolution_forward conv(pd);
    // Brings user memory into the primitive's layout (or uses it as it is).
    auto in_layout = [&](dnnl::memory user, const dnnl::memory::desc& want) {
      if (user.get_desc() == want) return user;
      dnnl::memory packed(want, engine);
      dnnl::reorder(user, packed).execute(stream, user, packed);
      return packed;
    };
    const dnnl::memory weights = in_layout(dnnl::memory(wei_user, engine, const_cast<int8_t*>(w)), pd.weights_desc());
    // The sums in the primitive's layout: NHWC (AMX, VNNI) is recombined and transposed to NCHW in one
    // pass below; any other layout is reordered to NCHW first.
    const dnnl::memory::desc dst_nhwc({N, O, OH, OW}, dt::s32, tag::nhwc);
    nhwc = pd.dst_desc() == dst_nhwc;
    const bool direct = nhwc || pd.dst_desc() == dst_user;
    dnnl::memory dst_packed = direct ? dnnl::memory() : dnnl::memory(pd.dst_desc(), engine);
    for (int pass = 0; pass < passes; ++pass) {
      const dnnl::memory src = in_layout(dnnl::memory(src_user, engine, (pass == 0 ? lo : hi).get()), pd.src_desc());
      dnnl::memory out(direct ? pd.dst_desc() : dst_user, engine, sums.get() + pass * n_out);
      dnnl::memory dst = direct ? out : dst_packed;
      conv.execute(stream, {{DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, weights}, {DNNL_ARG_DST, dst}});
      if (!direct) dnnl::reorder(dst, out).execute(stream, dst, out);
    }
    stream.wait();
  } catch (const dnnl::error&) {
    return false;  // no int8 implementation for this shape: the caller's float path, y untouched
  }

  // Exact int64 sums (high byte's sum · 256 + low byte's), rounded once to float32.
  const int32_t* __restrict s_lo = sums.get();
  const int32_t* __restrict s_hi = passes == 2 ? sums.get() + n_out : nullptr;
  auto sum_at = [s_lo, s_hi](int64_t i) {
    return static_cast<float>(s_hi != nullptr ? int64_t{s_hi[i]} * 256 + s_lo[i] : int64_t{s_lo[i]});
  };
  if (!nhwc) {
    for (int64_t i = 0; i < n_out; ++i) y[i] = sum_at(i);
    return true;
  }
  // NHWC [N, P, O] to NCHW [N, O, P] in 32 x 32 tiles: reads along o and writes along p stay in
  // cache. (Measured faster than oneDNN's s32 reorder followed by a contiguous pass, and than a
  // vectorised pass into a float buffer followed by a transposition.)
  constexpr int64_t kTile = 32;
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t p0 = 0; p0 < P; p0 += kTile) {
      const int64_t p1 = std::min(P, p0 + kTile);
      for (int64_t o0 = 0; o0 < O; o0 += kTile) {
        const int64_t o1 = std::min(O, o0 + kTile);
        for (int64_t p = p0; p < p1; ++p) {
          const int64_t from = (n * P + p) * O;
          float* to = y + n * O * P + p;
          for (int64_t o = o0; o < o1; ++o) to[o * P] = sum_at(from + o);
        }
      }
    }
  }
  return true;
}

#else

bool ExactIntConvAvailable() { return false; }
bool ExactIntConv(const IntConvShape&, const float*, const int8_t*, float*) { return false; }

#endif

}  // namespace xbar
