// Fused convolution + 2x2 max-pool for CPU model packs (K members, each its own weights):
// convolve (stride 1, no padding, square kernel) and max-pool in one pass over each image.
// The first stage of a pack also gathers each member's records from the dataset (idx) and
// computes no input gradient (the input is the data); a later stage reads its members'
// channels of a (B, K*C, H, W) activation and returns the input gradient too.
//
// Why: with 3-16 channels per member, PyTorch's grouped convolutions run their vector
// units mostly idle, and the max-pool backward zero-fills and scatters a full-size
// gradient. Here one image and one member's weights stay in L1 while a pair of output
// rows is accumulated in registers, pooled, and written once; the gradients are formed
// from the pooled gradient and the saved argmax.
//
// Portable C++: GCC/Clang vector extensions (lowered to AVX-512, AVX2 or NEON by the
// compiler), parallelised with at::parallel_for. engine/fused.py builds and loads it.
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstring>
#include <vector>

namespace {

constexpr int L = 16;  // floats per vector
typedef float vf __attribute__((vector_size(64)));
typedef int vi __attribute__((vector_size(64)));

inline vf loadu(const float* p) { vf v; std::memcpy(&v, p, sizeof(vf)); return v; }

#if defined(__clang__)
#define EVEN(a, b) __builtin_shufflevector(a, b, 0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30)
#define ODD(a, b) __builtin_shufflevector(a, b, 1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31)
#else
constexpr vi kEven = {0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30};
#define EVEN(a, b) __builtin_shuffle(a, b, kEven)
#define ODD(a, b) __builtin_shuffle(a, b, kEven + 1)
#endif

// mask ? a : b, lane by lane (mask lanes are all ones or all zeros)
inline vf select(vi mask, vf a, vf b) { return (vf)((mask & (vi)a) | (~mask & (vi)b)); }
inline vi select(vi mask, vi a, vi b) { return (mask & a) | (~mask & b); }

inline int round_up(int n) { return (n + L - 1) / L * L; }

// Max-pool of 2x2 windows, lane by lane: values a0 a1 / a2 a3 -> maximum m and its place
// id (0..3). The first maximum wins and a NaN wins, as in PyTorch's max_pool2d.
inline void pool4(vf a0, vf a1, vf a2, vf a3, vf& m, vi& id) {
  const vi c1 = (a1 > a0) | (a1 != a1), c3 = (a3 > a2) | (a3 != a3);
  const vf top = select(c1, a1, a0), bot = select(c3, a3, a2);
  const vi cf = (bot > top) | (bot != bot);
  m = select(cf, bot, top);
  id = select(cf, (c3 & 1) + 2, c1 & 1);
}

struct Geo {
  int C, H, W, KS, PH, PW, OC;
  int NV, WP;       // vectors spanning a conv output row; padded input row (64-byte multiple)
  int NVX, GH, GW;  // input-gradient rows: vectors spanning an input row; padded gradient
  bool OCV;         // vectors across output channels (16 at a time) instead of columns
};

Geo geometry(int64_t K, const at::Tensor& x, const at::Tensor& w) {
  Geo g;
  g.C = w.size(1); g.H = x.size(2); g.W = x.size(3); g.KS = w.size(2);
  g.PH = (g.H - g.KS + 1) / 2; g.PW = (g.W - g.KS + 1) / 2;
  g.OC = w.size(0) / K;
  g.NV = (2 * g.PW + L - 1) / L;
  g.WP = round_up(g.NV * L + g.KS - 1);
  g.NVX = (g.W + L - 1) / L;
  g.GH = g.H + g.KS - 1;
  g.GW = round_up(g.KS - 1 + std::max(g.NV, g.NVX) * L);
  g.OCV = g.OC % L == 0 && (g.KS == 3 || g.KS == 5);
  return g;
}

// Where member k's image b is: row idx[k, b] of the dataset (first stage), or channels
// k*C .. k*C+C-1 of sample b of a (B, K*C, H, W) activation (later stages).
struct Source {
  const float* x;
  const int64_t* idx;  // null for an activation
  int64_t K, B, img;   // img: floats per member image (C*H*W)
  const float* image(int64_t k, int64_t b) const {
    return idx ? x + idx[k * B + b] * img : x + (b * K + k) * img;
  }
};

// Output channels per register block: 6 while at least 6 remain, then 2, then 1.
inline int block_size(int remaining) { return remaining >= 6 ? 6 : remaining >= 2 ? 2 : 1; }

// Image src (C, H, W) -> rows (C, H, WP) of buf; columns W .. WP-1 of buf are zero from
// its allocation and are never written.
void pad_image(const float* src, float* buf, const Geo& g) {
  for (int r = 0; r < g.C * g.H; ++r) {
    const float* s = src + r * g.W;
    float* d = buf + r * g.WP;
    for (int x = 0; x < g.W; ++x) d[x] = s[x];
  }
}

// Ask for the next image while this one is worked on: records are gathered at random
// from a data set larger than a core's caches.
void prefetch_image(const float* src, const Geo& g) {
  const int n = g.C * g.H * g.W;
  for (int i = 0; i < n; i += L) __builtin_prefetch(src + i);
}

// Tap q = (c, r, j): input row r (0..KS) of an output row pair, column shift j. It feeds
// output row 0 with w[o, c, r, j] and row 1 with w[o, c, r - 1, j] (0 where out of range).
// off[q]: offset of the tap in the padded image; wt: per channel block, (taps, 2, block).
void tap_tables(const float* w, int* off, float* wt, const Geo& g) {
  const int KS = g.KS, taps = g.C * (KS + 1) * KS;
  for (int c = 0, q = 0; c < g.C; ++c)
    for (int r = 0; r <= KS; ++r)
      for (int j = 0; j < KS; ++j, ++q) off[q] = (c * g.H + r) * g.WP + j;
  for (int o0 = 0; o0 < g.OC;) {
    const int ob = block_size(g.OC - o0);
    float* tb = wt + o0 * taps * 2;
    for (int c = 0, q = 0; c < g.C; ++c)
      for (int r = 0; r <= KS; ++r)
        for (int j = 0; j < KS; ++j, ++q)
          for (int t = 0; t < 2; ++t)
            for (int o = 0; o < ob; ++o) {
              const int i = r - t;
              tb[(q * 2 + t) * ob + o] =
                  (i < 0 || i >= KS) ? 0.f : w[(((o0 + o) * g.C + c) * KS + i) * KS + j];
            }
    o0 += ob;
  }
}

// One block of OB output channels of one image: out/arg (OB, PH, PW).
template <int NV, int OB>
void forward_block(const float* buf, const int* off, const float* wt, const float* bias,
                   float* out, uint8_t* arg, const Geo& g) {
  const int taps = g.C * (g.KS + 1) * g.KS;
  for (int py = 0; py < g.PH; ++py) {
    vf acc[2][OB][NV];
    for (int t = 0; t < 2; ++t)
      for (int o = 0; o < OB; ++o)
        for (int v = 0; v < NV; ++v) acc[t][o][v] = vf{} + bias[o];
    const float* base = buf + 2 * py * g.WP;
    const float* wq = wt;
    for (int q = 0; q < taps; ++q, wq += 2 * OB) {
      vf xv[NV];
      for (int v = 0; v < NV; ++v) xv[v] = loadu(base + off[q] + v * L);
      for (int t = 0; t < 2; ++t)
        for (int o = 0; o < OB; ++o)
          for (int v = 0; v < NV; ++v) acc[t][o][v] += xv[v] * wq[t * OB + o];
    }
    // two vectors of a row give 16 pooled columns
    for (int o = 0; o < OB; ++o)
      for (int v = 0; v < NV; v += 2) {
        const vf z{};
        const vf t0 = acc[0][o][v], t1 = v + 1 < NV ? acc[0][o][v + 1] : z;
        const vf b0 = acc[1][o][v], b1 = v + 1 < NV ? acc[1][o][v + 1] : z;
        const vf a0 = EVEN(t0, t1), a1 = ODD(t0, t1), a2 = EVEN(b0, b1), a3 = ODD(b0, b1);
        vf m;
        vi id;
        pool4(a0, a1, a2, a3, m, id);
        const int px0 = v * L / 2, n = std::min(L, g.PW - px0);
        float* op = out + (o * g.PH + py) * g.PW + px0;
        uint8_t* ap = arg + (o * g.PH + py) * g.PW + px0;
        for (int u = 0; u < n; ++u) {
          op[u] = m[u];
          ap[u] = static_cast<uint8_t>(id[u]);
        }
      }
  }
}

// Weight gradient of JB neighbouring taps (c, i, j .. j+JB-1) of a block of OB channels:
// the taps share each load of the gradient rows. dw: the vector of tap (o=0, c, i, j);
// channel o at dw + o * ds, tap j + t at + t.
template <int NV, int OB, int JB>
inline void weight_grad_taps(const float* in, const float* G, int gs, int go, vf* dw, int ds,
                             const Geo& g) {
  vf acc[JB][OB][NV] = {};
  for (int y = 0; y < 2 * g.PH; ++y, in += g.WP, G += gs) {
    vf xv[JB][NV];
    for (int t = 0; t < JB; ++t)
      for (int v = 0; v < NV; ++v) xv[t][v] = loadu(in + t + v * L);
    for (int o = 0; o < OB; ++o)
      for (int v = 0; v < NV; ++v) {
        const vf gv = loadu(G + o * go + v * L);
        for (int t = 0; t < JB; ++t) acc[t][o][v] += gv * xv[t][v];
      }
  }
  for (int t = 0; t < JB; ++t)
    for (int o = 0; o < OB; ++o) {
      vf s = acc[t][o][0];
      for (int v = 1; v < NV; ++v) s += acc[t][o][v];
      dw[o * ds + t] += s;
    }
}

// Weight gradient of one block of OB channels of one image, summed into dw (OB, C, KS, KS)
// vectors (reduced across lanes once, at the end). G: the block's dense conv-output
// gradient, zero off the argmax: row y of channel o at G + y * gs + o * go. Two taps at a
// time where their sums fit the registers (32 AVX-512 vectors).
template <int NV, int OB>
void weight_grad_block(const float* buf, const float* G, int gs, int go, vf* dw,
                       const Geo& g) {
  const int KS = g.KS, ds = g.C * KS * KS;
#if defined(__AVX512F__)
  constexpr int JB = 2 * OB * NV + 2 * NV + 1 <= 32 ? 2 : 1;
#else
  constexpr int JB = 1;
#endif
  for (int c = 0; c < g.C; ++c)
    for (int i = 0; i < KS; ++i) {
      const float* in = buf + (c * g.H + i) * g.WP;
      vf* d = dw + (c * KS + i) * KS;
      int j = 0;
      for (; j + JB <= KS; j += JB)
        weight_grad_taps<NV, OB, JB>(in + j, G, gs, go, d + j, ds, g);
      for (; j < KS; ++j) weight_grad_taps<NV, OB, 1>(in + j, G, gs, go, d + j, ds, g);
    }
}

template <int NV>
void forward_image(const float* buf, const int* off, const float* wt, const float* bias,
                   float* out, uint8_t* arg, const Geo& g) {
  const int tstride = g.C * (g.KS + 1) * g.KS * 2, ostride = g.PH * g.PW;
  for (int o = 0; o < g.OC;) {
    const int ob = block_size(g.OC - o);
    const float* w = wt + o * tstride;
    if (ob == 6) forward_block<NV, 6>(buf, off, w, bias + o, out + o * ostride, arg + o * ostride, g);
    else if (ob == 2) forward_block<NV, 2>(buf, off, w, bias + o, out + o * ostride, arg + o * ostride, g);
    else forward_block<NV, 1>(buf, off, w, bias + o, out + o * ostride, arg + o * ostride, g);
    o += ob;
  }
}

// Input gradient of one image for a block of CB input channels: dx rows (CB, H, W) of the
// full correlation of the dense conv-output gradient with the weights. Gp: (GH, OC, GW),
// the gradient of output (y, x) at row KS-1+y, column KS-1+x, zero elsewhere;
// wx: the block's weights as (OC, KS, KS, CB).
template <int NVX, int CB>
void input_grad_block(const float* Gp, const float* wx, float* dx, const Geo& g) {
  const int KS = g.KS;
  for (int y0 = 0; y0 < g.H; y0 += 2) {  // two rows at a time: twice the independent sums
    const bool two = y0 + 1 < g.H;
    vf acc[2][CB][NVX] = {};
    // kernel rows that meet a nonzero gradient row (rows 0 .. 2*PH-1) from y0 or y0 + 1
    const int i0 = std::max(0, y0 - 2 * g.PH + 1), i1 = std::min(KS - 1, y0 + 1);
    for (int o = 0; o < g.OC; ++o)
      for (int i = i0; i <= i1; ++i) {
        const float* r0 = Gp + ((y0 - i + KS - 1) * g.OC + o) * g.GW + KS - 1;
        const float* r1 = two ? r0 + g.OC * g.GW : r0;  // row y0 + 1 (or y0 again)
        const float* wq = wx + (o * KS + i) * KS * CB;
        for (int j = 0; j < KS; ++j, wq += CB) {
          vf g0[NVX], g1[NVX];
          for (int v = 0; v < NVX; ++v) {
            g0[v] = loadu(r0 - j + v * L);
            g1[v] = loadu(r1 - j + v * L);
          }
          for (int c = 0; c < CB; ++c)
            for (int v = 0; v < NVX; ++v) {
              acc[0][c][v] += g0[v] * wq[c];
              acc[1][c][v] += g1[v] * wq[c];
            }
        }
      }
    for (int t = 0; t < (two ? 2 : 1); ++t)
      for (int c = 0; c < CB; ++c) {
        float* d = dx + (c * g.H + y0 + t) * g.W;
        for (int v = 0; v < NVX; ++v)
          for (int u = 0; u < L && v * L + u < g.W; ++u) d[v * L + u] = acc[t][c][v][u];
      }
  }
}

// Input-gradient weight table of one member: per block of input channels, (OC, KS, KS, CB).
void input_grad_table(const float* w, float* wx, const Geo& g) {
  const int KS = g.KS;
  for (int c0 = 0; c0 < g.C;) {
    const int cb = block_size(g.C - c0);
    float* tb = wx + c0 * g.OC * KS * KS;
    for (int o = 0; o < g.OC; ++o)
      for (int i = 0; i < KS; ++i)
        for (int j = 0; j < KS; ++j)
          for (int c = 0; c < cb; ++c)
            tb[((o * KS + i) * KS + j) * cb + c] = w[((o * g.C + c0 + c) * KS + i) * KS + j];
    c0 += cb;
  }
}

// Input gradient of one image (dx: (C, H, W)) from the padded dense gradient G.
void input_grad_image(const float* G, const float* wx, float* dx, const Geo& g) {
  for (int c = 0; c < g.C;) {
    const int cb = block_size(g.C - c);
    const float* w = wx + c * g.OC * g.KS * g.KS;
    float* d = dx + c * g.H * g.W;
    switch (g.NVX * 10 + cb) {  // NVX <= 4: checked by the caller
#define CASE(n, b) case n * 10 + b: input_grad_block<n, b>(G, w, d, g); break;
      CASE(1, 1) CASE(1, 2) CASE(1, 6) CASE(2, 1) CASE(2, 2) CASE(2, 6)
      CASE(3, 1) CASE(3, 2) CASE(3, 6) CASE(4, 1) CASE(4, 2) CASE(4, 6)
#undef CASE
    }
    c += cb;
  }
}

// Gradients of one image from its pooled gradient gp (OC, PH, PW) and argmax: weight (into
// dw vectors), bias (into db) and, when dx is given, input (dx: (C, H, W)). G: scratch of
// GH * OC * GW floats; wx: input_grad_table of the member.
template <int NV>
void grad_image(const float* buf, const float* gp, const uint8_t* arg, vf* dw, float* db,
                float* G, const float* wx, float* dx, const Geo& g) {
  const int wstride = g.C * g.KS * g.KS;
  // Dense conv-output gradient: unpadded rows (2*PH, OC, NV*L) for the weight gradient
  // alone (aligned loads), padded rows (GH, OC, GW) when the input gradient is wanted.
  // G is all zeros on entry and is left so (the entries written are cleared at the end).
  const bool pad = dx != nullptr;
  const int go = pad ? g.GW : NV * L, gs = g.OC * go, shift = pad ? g.KS - 1 : 0;
  float* G0 = G + shift * gs + shift;  // output (0, 0)
  auto at = [&](int q, int o, int py, int px) {
    return (2 * py + (arg[q] >> 1)) * gs + o * go + 2 * px + (arg[q] & 1);
  };
  for (int o = 0, q = 0; o < g.OC; ++o) {
    float sum = 0.f;  // in a register: db may alias G for the compiler
    for (int py = 0; py < g.PH; ++py)
      for (int px = 0; px < g.PW; ++px, ++q) {
        G0[at(q, o, py, px)] = gp[q];
        sum += gp[q];
      }
    db[o] += sum;
  }
  for (int o = 0; o < g.OC;) {
    const int ob = block_size(g.OC - o);
    vf* d = dw + o * wstride;
    if (ob == 6) weight_grad_block<NV, 6>(buf, G0 + o * go, gs, go, d, g);
    else if (ob == 2) weight_grad_block<NV, 2>(buf, G0 + o * go, gs, go, d, g);
    else weight_grad_block<NV, 1>(buf, G0 + o * go, gs, go, d, g);
    o += ob;
  }
  if (pad) input_grad_image(G, wx, dx, g);
  for (int o = 0, q = 0; o < g.OC; ++o)
    for (int py = 0; py < g.PH; ++py)
      for (int px = 0; px < g.PW; ++px, ++q) G0[at(q, o, py, px)] = 0.f;
}

// ---- Output channels as the vector dimension (OC a multiple of 16: every lane busy) ----

// Member weights (OC, C, KS, KS) -> (C, KS, KS, OC).
void channels_last_weights(const float* w, float* wv, const Geo& g) {
  const int taps = g.C * g.KS * g.KS;
  for (int o = 0; o < g.OC; ++o)
    for (int q = 0; q < taps; ++q) wv[q * g.OC + o] = w[o * taps + q];
}

// Pooled columns px0 .. px0+PB-1 of output channels o0 .. o0+15 of one image; wv as
// channels_last_weights gives; out/arg (OC, PH, PW).
template <int PB, int KS>
void forward_ocv(const float* buf, const float* wv, const float* bias, float* out,
                 uint8_t* arg, int px0, int o0, const Geo& g) {
  constexpr int XB = 2 * PB;
  const vf bv = loadu(bias + o0);
  for (int py = 0; py < g.PH; ++py) {
    vf acc[2][XB];
    for (int x = 0; x < XB; ++x) acc[0][x] = acc[1][x] = bv;
    for (int c = 0; c < g.C; ++c)
      for (int r = 0; r <= KS; ++r) {  // input row 2*py + r feeds output rows r and r - 1
        const float* in = buf + (c * g.H + 2 * py + r) * g.WP + 2 * px0;
#pragma GCC unroll 1
        for (int j = 0; j < KS; ++j) {  // not unrolled: the input broadcasts stay few
          if (r < KS) {
            const vf w = loadu(wv + ((c * KS + r) * KS + j) * g.OC + o0);
            for (int x = 0; x < XB; ++x) acc[0][x] += in[x + j] * w;
          }
          if (r > 0) {
            const vf w = loadu(wv + ((c * KS + r - 1) * KS + j) * g.OC + o0);
            for (int x = 0; x < XB; ++x) acc[1][x] += in[x + j] * w;
          }
        }
      }
    for (int px = 0; px < PB; ++px) {  // lanes are channels here
      const vf a0 = acc[0][2 * px], a1 = acc[0][2 * px + 1];
      const vf a2 = acc[1][2 * px], a3 = acc[1][2 * px + 1];
      vf m;
      vi id;
      pool4(a0, a1, a2, a3, m, id);
      const int q = (o0 * g.PH + py) * g.PW + px0 + px, step = g.PH * g.PW;
      for (int u = 0; u < L; ++u) {
        out[q + u * step] = m[u];
        arg[q + u * step] = static_cast<uint8_t>(id[u]);
      }
    }
  }
}

template <int KS>
void forward_image_ocv(const float* buf, const float* wv, const float* bias, float* out,
                       uint8_t* arg, const Geo& g) {
  for (int o0 = 0; o0 < g.OC; o0 += L)
    for (int px0 = 0; px0 < g.PW; px0 += 5) {
      switch (std::min(5, g.PW - px0)) {
#define CASE(n) case n: forward_ocv<n, KS>(buf, wv, bias, out, arg, px0, o0, g); break;
        CASE(1) CASE(2) CASE(3) CASE(4) CASE(5)
#undef CASE
      }
    }
}

// Weight gradient of one image into dw ((C, KS, KS, OC/16) vectors of 16 channels) from
// Gc, the dense conv-output gradient channels last: (2*PH, 2*PW, OC).
template <int KS>
void weight_grad_ocv(const float* buf, const float* Gc, vf* dw, const Geo& g) {
  const int nb = g.OC / L, xw = 2 * g.PW;
  for (int c = 0; c < g.C; ++c)
    for (int i = 0; i < KS; ++i)
      for (int ob = 0; ob < nb; ++ob) {
        vf acc[2][KS] = {};  // even and odd columns: twice the independent sums
        for (int y = 0; y < 2 * g.PH; ++y) {
          const float* in = buf + (c * g.H + y + i) * g.WP;
          const float* gr = Gc + y * xw * g.OC + ob * L;
          for (int x = 0; x < xw; x += 2) {
            const vf g0 = loadu(gr + x * g.OC), g1 = loadu(gr + (x + 1) * g.OC);
            for (int j = 0; j < KS; ++j) {
              acc[0][j] += in[x + j] * g0;
              acc[1][j] += in[x + 1 + j] * g1;
            }
          }
        }
        for (int j = 0; j < KS; ++j) dw[((c * KS + i) * KS + j) * nb + ob] += acc[0][j] + acc[1][j];
      }
}

// Gradients of one image as grad_image does, for OCV geometries. Gc: scratch of
// 2*PH * 2*PW * OC floats.
template <int KS>
void grad_image_ocv(const float* buf, const float* gp, const uint8_t* arg, vf* dw, float* db,
                    float* G, float* Gc, const float* wx, float* dx, const Geo& g) {
  // G and Gc are all zeros on entry and are left so.
  const int xw = 2 * g.PW;
  const bool pad = dx != nullptr;
  float* G0 = G + (KS - 1) * g.OC * g.GW + KS - 1;  // output (0, 0) in the padded rows
  auto scatter = [&](bool clear) {
    for (int o = 0, q = 0; o < g.OC; ++o) {
      float sum = 0.f;
      for (int py = 0; py < g.PH; ++py)
        for (int px = 0; px < g.PW; ++px, ++q) {
          const int y = 2 * py + (arg[q] >> 1), x = 2 * px + (arg[q] & 1);
          const float v = clear ? 0.f : gp[q];
          Gc[(y * xw + x) * g.OC + o] = v;
          if (pad) G0[(y * g.OC + o) * g.GW + x] = v;
          sum += v;
        }
      if (!clear) db[o] += sum;
    }
  };
  scatter(false);
  weight_grad_ocv<KS>(buf, Gc, dw, g);
  if (pad) input_grad_image(G, wx, dx, g);
  scatter(true);
}

template <typename F>
void dispatch_nv(int nv, F f) {
  switch (nv) {
    case 1: f(std::integral_constant<int, 1>{}); break;
    case 2: f(std::integral_constant<int, 2>{}); break;
    case 3: f(std::integral_constant<int, 3>{}); break;
    case 4: f(std::integral_constant<int, 4>{}); break;
    default: TORCH_CHECK(false, "conv_pool: images wider than 64 columns");
  }
}

// x: the dataset (N, C, H, W) with idx (K, B), or an activation (B, K*C, H, W) (idx
// undefined); weight (K*OC, C, KS, KS).
Geo checked_geometry(int64_t K, const at::Tensor& x, const std::optional<at::Tensor>& idx,
                     const at::Tensor& w) {
  TORCH_CHECK(x.dim() == 4 && x.scalar_type() == at::kFloat && x.is_contiguous() && x.is_cpu(),
              "conv_pool: inputs must be a contiguous float32 4-d CPU tensor");
  TORCH_CHECK(K >= 1 && w.dim() == 4 && w.scalar_type() == at::kFloat && w.is_contiguous() &&
                  w.size(0) % K == 0 && w.size(2) == w.size(3),
              "conv_pool: weight must be a contiguous float32 (K*OC, C, KS, KS) tensor");
  if (idx) {
    TORCH_CHECK(idx->dim() == 2 && idx->size(0) == K && idx->scalar_type() == at::kLong &&
                    idx->is_contiguous(), "conv_pool: idx must be a contiguous int64 (K, B) tensor");
    TORCH_CHECK(w.size(1) == x.size(1), "conv_pool: weight has ", w.size(1),
                " input channels, inputs ", x.size(1));
  } else {
    TORCH_CHECK(w.size(1) * K == x.size(1), "conv_pool: weight has ", w.size(1),
                " input channels per member, inputs ", x.size(1), " for ", K, " members");
  }
  Geo g = geometry(K, x, w);
  TORCH_CHECK(g.PH >= 1 && g.PW >= 1, "conv_pool: images smaller than the kernel");
  TORCH_CHECK(g.W <= 64, "conv_pool: images wider than 64 columns");
  return g;
}

Source source(int64_t K, const at::Tensor& x, const std::optional<at::Tensor>& idx,
              const Geo& g) {
  Source src{x.data_ptr<float>(), nullptr, K, 0, int64_t(g.C) * g.H * g.W};
  if (idx) {
    src.idx = idx->data_ptr<int64_t>();
    src.B = idx->size(1);
    for (int64_t q = 0; q < K * src.B; ++q)
      TORCH_CHECK(src.idx[q] >= 0 && src.idx[q] < x.size(0), "conv_pool: index ",
                  src.idx[q], " out of range");
  } else {
    src.B = x.size(0);
  }
  return src;
}

}  // namespace

// Member k's conv (weight[k*OC : (k+1)*OC], bias) + 2x2 max-pool of its images (see
// Source) -> pooled (B, K*OC, PH, PW) and argmax (B, K*OC, PH, PW) uint8 (0..3, row-major
// in the window).
std::vector<at::Tensor> conv_pool_forward(const at::Tensor& x, const std::optional<at::Tensor>& idx,
                                          int64_t K, const at::Tensor& weight,
                                          const at::Tensor& bias) {
  const Geo g = checked_geometry(K, x, idx, weight);
  TORCH_CHECK(bias.is_contiguous() && bias.scalar_type() == at::kFloat &&
                  bias.numel() == weight.size(0), "conv_pool: bias must be float32 (K*OC)");
  const Source src = source(K, x, idx, g);
  const int64_t B = src.B;
  auto out = at::empty({B, K * g.OC, g.PH, g.PW}, x.options());
  auto arg = at::empty({B, K * g.OC, g.PH, g.PW}, x.options().dtype(at::kByte));
  // weight tables of every member: taps (column vectors) or channels last (OCV)
  const int taps = g.C * (g.KS + 1) * g.KS, wst = g.OC * g.C * g.KS * g.KS;
  const int tsize = g.OCV ? wst : g.OC * taps * 2;
  std::vector<int> off(taps);
  std::vector<float> wt(K * tsize);
  for (int64_t k = 0; k < K; ++k) {
    const float* w = weight.data_ptr<float>() + k * wst;
    if (g.OCV) channels_last_weights(w, wt.data() + k * tsize, g);
    else tap_tables(w, off.data(), wt.data() + k * tsize, g);
  }
  const float* bp = bias.data_ptr<float>();
  float* op = out.data_ptr<float>();
  uint8_t* ap = arg.data_ptr<uint8_t>();
  const int64_t ost = g.OC * g.PH * g.PW;
  dispatch_nv(g.NV, [&](auto nv) {
    at::parallel_for(0, K * B, 1, [&](int64_t begin, int64_t end) {
      std::vector<vf> bufv((g.C * g.H * g.WP + L - 1) / L);  // 64-byte aligned
      float* buf = reinterpret_cast<float*>(bufv.data());
      for (int64_t t = begin; t < end; ++t) {
        const int64_t k = t / B, b = t % B, o = (b * K + k) * ost;
        const float* w = wt.data() + k * tsize;
        if (t + 1 < end) prefetch_image(src.image((t + 1) / B, (t + 1) % B), g);
        pad_image(src.image(k, b), buf, g);
        if (!g.OCV)
          forward_image<decltype(nv)::value>(buf, off.data(), w, bp + k * g.OC, op + o, ap + o, g);
        else if (g.KS == 5)
          forward_image_ocv<5>(buf, w, bp + k * g.OC, op + o, ap + o, g);
        else
          forward_image_ocv<3>(buf, w, bp + k * g.OC, op + o, ap + o, g);
      }
    });
  });
  return {out, arg};
}

// grad (B, K*OC, PH, PW) of the pooled output -> grad_weight (K*OC, C, KS, KS), grad_bias
// (K*OC) and, when input_grad, the gradient of x (an activation; undefined otherwise).
std::vector<at::Tensor> conv_pool_backward(const at::Tensor& grad, const at::Tensor& arg,
                                           const at::Tensor& x,
                                           const std::optional<at::Tensor>& idx, int64_t K,
                                           const at::Tensor& weight, bool input_grad) {
  const Geo g = checked_geometry(K, x, idx, weight);
  const Source src = source(K, x, idx, g);
  const int64_t B = src.B;
  TORCH_CHECK(grad.is_contiguous() && grad.scalar_type() == at::kFloat &&
                  grad.sizes() == arg.sizes() && grad.size(0) == B &&
                  grad.size(1) == K * g.OC && grad.size(2) == g.PH && grad.size(3) == g.PW,
              "conv_pool: grad must be contiguous float32 shaped like the output");
  TORCH_CHECK(!input_grad || !idx, "conv_pool: no input gradient of gathered records");
  const int64_t wst = g.OC * g.C * g.KS * g.KS;
  // Each member's batch is cut into S slices so that all threads have work when K is small
  // (a pack of one); slices keep partial sums, added in a fixed order.
  const int64_t S = std::min<int64_t>(B, (at::get_num_threads() + K - 1) / K);
  std::vector<vf> dwv(K * S * wst);
  std::vector<float> dbp(K * S * g.OC, 0.f), wx;
  at::Tensor gx;
  if (input_grad) {
    gx = at::empty_like(x);
    wx.resize(K * wst);
    for (int64_t k = 0; k < K; ++k)
      input_grad_table(weight.data_ptr<float>() + k * wst, wx.data() + k * wst, g);
  }
  float* gxp = input_grad ? gx.data_ptr<float>() : nullptr;
  const float* gp = grad.data_ptr<float>();
  const uint8_t* ap = arg.data_ptr<uint8_t>();
  const int64_t ost = g.OC * g.PH * g.PW;
  dispatch_nv(g.NV, [&](auto nv) {
    constexpr int NV = decltype(nv)::value;
    at::parallel_for(0, K * S, 1, [&](int64_t begin, int64_t end) {
      std::vector<vf> bufv((g.C * g.H * g.WP + L - 1) / L), Gv(g.GH * g.OC * g.GW / L),
          Gcv(g.OCV ? 4 * g.PH * g.PW * g.OC / L : 0);
      float* buf = reinterpret_cast<float*>(bufv.data());
      float* G = reinterpret_cast<float*>(Gv.data());
      float* Gc = reinterpret_cast<float*>(Gcv.data());
      for (int64_t task = begin; task < end; ++task) {
        const int64_t k = task / S, s = task % S;
        vf* dw = dwv.data() + task * wst;
        std::fill(dw, dw + wst, vf{});
        for (int64_t b = s * B / S; b < (s + 1) * B / S; ++b) {
          if (b + 1 < (s + 1) * B / S) prefetch_image(src.image(k, b + 1), g);
          pad_image(src.image(k, b), buf, g);
          const int64_t o = (b * K + k) * ost;
          float* db = dbp.data() + task * g.OC;
          const float* w = input_grad ? wx.data() + k * wst : nullptr;
          float* dx = input_grad ? gxp + (b * K + k) * src.img : nullptr;
          if (!g.OCV) grad_image<NV>(buf, gp + o, ap + o, dw, db, G, w, dx, g);
          else if (g.KS == 5) grad_image_ocv<5>(buf, gp + o, ap + o, dw, db, G, Gc, w, dx, g);
          else grad_image_ocv<3>(buf, gp + o, ap + o, dw, db, G, Gc, w, dx, g);
        }
      }
    });
  });
  auto gw = at::empty_like(weight);
  auto gb = at::empty({K * g.OC}, weight.options());
  float* gwp = gw.data_ptr<float>();
  float* gbp = gb.data_ptr<float>();
  for (int64_t k = 0; k < K; ++k) {
    if (g.OCV) {  // dwv: (C*KS*KS, OC/16) vectors whose lanes are output channels
      const int taps = g.C * g.KS * g.KS, nb = g.OC / L;
      for (int q = 0; q < taps; ++q)
        for (int ob = 0; ob < nb; ++ob) {
          vf s{};
          for (int64_t t = 0; t < S; ++t) s += dwv[(k * S + t) * wst + q * nb + ob];
          for (int u = 0; u < L; ++u) gwp[k * wst + (ob * L + u) * taps + q] = s[u];
        }
    } else {  // dwv: one vector of partial sums per weight
      for (int64_t q = 0; q < wst; ++q) {
        vf s{};
        for (int64_t t = 0; t < S; ++t) s += dwv[(k * S + t) * wst + q];
        float total = 0.f;
        for (int u = 0; u < L; ++u) total += s[u];
        gwp[k * wst + q] = total;
      }
    }
    for (int o = 0; o < g.OC; ++o) {
      float total = 0.f;
      for (int64_t t = 0; t < S; ++t) total += dbp[(k * S + t) * g.OC + o];
      gbp[k * g.OC + o] = total;
    }
  }
  return {gw, gb, gx};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  // The GIL is released: packs train side by side in threads (NUM_WORKERS).
  m.def("forward", &conv_pool_forward, "conv + 2x2 max-pool of a pack (float32, CPU)",
        py::call_guard<py::gil_scoped_release>());
  m.def("backward", &conv_pool_backward, "gradients of forward",
        py::call_guard<py::gil_scoped_release>());
}
