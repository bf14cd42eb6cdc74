// Rasterise-interpolate-score-loss for NeMo's and NTDM's render-and-compare steps, with their analytic
// gradients (NTDM's: texture_score and surface_loss, below). Same rules as render.py's torch backend: pixel
// centres (c + 0.5, r + 0.5), strictly positive perspective-correct barycentrics, nearest face wins (lowest
// index on ties), faces with a vertex at depth <= 1e-8 or zero area skipped. NeMo, per image b:
//   screen = project(R_b v + t_b), score_p = sum_k bary_k sim[b, v_k, p],
//   loss_b = 1 - (mean_p max(score_p, clut_p) - mean_p clut_p)   (or 1 - mean_p score_p without clutter)
// and d loss_b / d R_b, d loss_b / d t_b. Doubles inside; sim and clut are read as float32.
#include <torch/extension.h>
#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <vector>

// GCC vector types: 16 and 8 lanes, each operation on all of them at once.
typedef float Lanes16 __attribute__((vector_size(64)));
typedef int32_t Ints16 __attribute__((vector_size(64)));
typedef float Lanes8 __attribute__((vector_size(32)));
typedef double Doubles8 __attribute__((vector_size(64)));
typedef int64_t Longs8 __attribute__((vector_size(64)));

// d loss / d bary (3) of pixel (x, y) in face vi -> d loss / d its screen vertices (x, y, depth), added to gscr
// (V, 3): bary_k = u_k / S with u_k = w_k / depth_k and w_k the edge functions E_k over their sum A.
static inline void barycentric_backward(const double gbary[3], const double bary[3], const double w[3],
                                        const double* const q[3], double S, double A, double x, double y,
                                        const int64_t* vi, double* gscr) {
  double gb = 0, gu[3], gw[3], gws = 0;
  for (int k = 0; k < 3; ++k) gb += gbary[k] * bary[k];
  for (int k = 0; k < 3; ++k) {
    gu[k] = (gbary[k] - gb) / S;
    gscr[vi[k] * 3 + 2] -= gu[k] * w[k] / (q[k][2] * q[k][2]);
    gw[k] = gu[k] / q[k][2];
    gws += gw[k] * w[k];
  }
  for (int m = 0; m < 3; ++m) {
    const double gE = (gw[m] - gws) / A;
    const int j = (m + 1) % 3, k = (m + 2) % 3;
    const double *a = q[j], *c = q[k];
    gscr[vi[j] * 3] += gE * (c[1] - y);
    gscr[vi[k] * 3 + 1] += gE * (a[0] - x);
    gscr[vi[j] * 3 + 1] -= gE * (c[0] - x);
    gscr[vi[k] * 3] -= gE * (a[1] - y);
  }
}

// Camera coordinates cam = R v + t (3) of a CAD-frame vertex v and its screen (x, y, depth) (3):
// x = px + f cam_x / D, y = py - f cam_y / D, D = -cam_z.
template <typename T>
static inline void project_vertex(const double* R, const double* t, double px, double py, double f, const T* v,
                                  double* cam, double* scr) {
  for (int i = 0; i < 3; ++i) cam[i] = R[i * 3] * v[0] + R[i * 3 + 1] * v[1] + R[i * 3 + 2] * v[2] + t[i];
  const double D = -cam[2];
  scr[0] = px + f * cam[0] / D;
  scr[1] = py - f * cam[1] / D;
  scr[2] = D;
}

// d loss / d cam (gc, 3) of one vertex from d loss / d its screen (x, y, depth) (g, 3): project_vertex's backward.
static inline void project_vertex_backward(const double* g, const double* cam, const double* scr, double f, double* gc) {
  const double D = scr[2];
  gc[0] = g[0] * f / D;
  gc[1] = -g[1] * f / D;
  gc[2] = g[0] * f * cam[0] / (D * D) - g[1] * f * cam[1] / (D * D) - g[2];
}

std::vector<torch::Tensor> render_score_loss(torch::Tensor verts, torch::Tensor faces, torch::Tensor R,
                                             torch::Tensor t, torch::Tensor principal, torch::Tensor focal,
                                             torch::Tensor sim, torch::Tensor clut, int64_t H, int64_t W) {
  verts = verts.to(torch::kDouble).contiguous();
  faces = faces.to(torch::kLong).contiguous();
  R = R.to(torch::kDouble).contiguous();
  t = t.to(torch::kDouble).contiguous();
  principal = principal.to(torch::kDouble).contiguous();
  focal = focal.to(torch::kDouble).contiguous();
  sim = sim.to(torch::kFloat).contiguous();
  const bool use_clutter = clut.numel() > 0;
  if (use_clutter) clut = clut.to(torch::kFloat).contiguous();
  const int64_t B = R.size(0), V = verts.size(0), F = faces.size(0), P = H * W;
  TORCH_CHECK(sim.size(0) == B && sim.size(1) == V && sim.size(2) == P, "sim must be (B, V, H*W)");
  auto dopt = torch::TensorOptions().dtype(torch::kDouble);
  torch::Tensor loss = torch::zeros({B}, dopt), gR = torch::zeros({B, 3, 3}, dopt), gt = torch::zeros({B, 3}, dopt);
  const double* vp = verts.data_ptr<double>();
  const int64_t* fp = faces.data_ptr<int64_t>();
  std::vector<double> scr(V * 3), cam(V * 3), gs(V * 3);
  std::vector<double> zbuf(P);
  std::vector<int64_t> win(P);
  for (int64_t b = 0; b < B; ++b) {
    const double* Rb = R.data_ptr<double>() + b * 9;
    const double* tb = t.data_ptr<double>() + b * 3;
    const double px = principal.data_ptr<double>()[b * 2], py = principal.data_ptr<double>()[b * 2 + 1];
    const double f = focal.data_ptr<double>()[b];
    const float* sb = sim.data_ptr<float>() + b * V * P;
    const float* cb = use_clutter ? clut.data_ptr<float>() + b * P : nullptr;
    for (int64_t v = 0; v < V; ++v) project_vertex(Rb, tb, px, py, f, vp + v * 3, &cam[v * 3], &scr[v * 3]);
    std::fill(zbuf.begin(), zbuf.end(), std::numeric_limits<double>::infinity());
    std::fill(win.begin(), win.end(), -1);
    for (int64_t fi = 0; fi < F; ++fi) {
      const double *p0 = &scr[fp[fi * 3] * 3], *p1 = &scr[fp[fi * 3 + 1] * 3], *p2 = &scr[fp[fi * 3 + 2] * 3];
      if (std::min({p0[2], p1[2], p2[2]}) <= 1e-8) continue;
      const double area = (p1[0] - p0[0]) * (p2[1] - p0[1]) - (p1[1] - p0[1]) * (p2[0] - p0[0]);
      if (area == 0) continue;
      const int64_t c0 = std::max<int64_t>(0, (int64_t)std::ceil(std::min({p0[0], p1[0], p2[0]}) - 0.5));
      const int64_t c1 = std::min<int64_t>(W - 1, (int64_t)std::floor(std::max({p0[0], p1[0], p2[0]}) - 0.5));
      const int64_t r0 = std::max<int64_t>(0, (int64_t)std::ceil(std::min({p0[1], p1[1], p2[1]}) - 0.5));
      const int64_t r1 = std::min<int64_t>(H - 1, (int64_t)std::floor(std::max({p0[1], p1[1], p2[1]}) - 0.5));
      for (int64_t r = r0; r <= r1; ++r) {
        const double y = r + 0.5;
        for (int64_t c = c0; c <= c1; ++c) {
          const double x = c + 0.5;
          const double w0 = ((p1[0] - x) * (p2[1] - y) - (p1[1] - y) * (p2[0] - x)) / area;
          const double w1 = ((p2[0] - x) * (p0[1] - y) - (p2[1] - y) * (p0[0] - x)) / area;
          const double w2 = ((p0[0] - x) * (p1[1] - y) - (p0[1] - y) * (p1[0] - x)) / area;
          if (!(w0 > 0 && w1 > 0 && w2 > 0)) continue;
          const double z = 1.0 / (w0 / p0[2] + w1 / p1[2] + w2 / p2[2]);
          const int64_t pix = r * W + c;
          if (z < zbuf[pix]) { zbuf[pix] = z; win[pix] = fi; }
        }
      }
    }
    std::fill(gs.begin(), gs.end(), 0.0);
    double acc = 0;
    for (int64_t pix = 0; pix < P; ++pix) {
      const int64_t fi = win[pix];
      double score = 0, u[3], w[3], bary[3], sv[3], S = 0, A = 0;
      const int64_t* vi = fp + (fi < 0 ? 0 : fi * 3);
      const double* q[3];
      if (fi >= 0) {
        const double x = pix % W + 0.5, y = pix / W + 0.5;
        for (int k = 0; k < 3; ++k) q[k] = &scr[vi[k] * 3];
        for (int m = 0; m < 3; ++m) {
          const double *a = q[(m + 1) % 3], *c = q[(m + 2) % 3];
          w[m] = (a[0] - x) * (c[1] - y) - (a[1] - y) * (c[0] - x);  // edge function E_m
          A += w[m];
        }
        for (int k = 0; k < 3; ++k) { w[k] /= A; u[k] = w[k] / q[k][2]; S += u[k]; }
        for (int k = 0; k < 3; ++k) {
          bary[k] = u[k] / S;
          sv[k] = sb[vi[k] * P + pix];
          score += bary[k] * sv[k];
        }
      }
      double G;  // d loss / d score at this pixel
      if (use_clutter) {
        const double cl = cb[pix];
        acc += std::max(score, cl) - cl;
        G = score > cl ? -1.0 / P : (score == cl ? -0.5 / P : 0.0);
      } else {
        acc += score;
        G = -1.0 / P;
      }
      if (fi < 0 || G == 0) continue;
      const double gbary[3] = {G * sv[0], G * sv[1], G * sv[2]};
      barycentric_backward(gbary, bary, w, q, S, A, pix % W + 0.5, pix / W + 0.5, vi, gs.data());
    }
    loss.data_ptr<double>()[b] = 1.0 - acc / P;
    double* gRb = gR.data_ptr<double>() + b * 9;
    double* gtb = gt.data_ptr<double>() + b * 3;
    for (int64_t v = 0; v < V; ++v) {
      if (gs[v * 3] == 0 && gs[v * 3 + 1] == 0 && gs[v * 3 + 2] == 0) continue;
      double gc[3];
      project_vertex_backward(&gs[v * 3], &cam[v * 3], &scr[v * 3], f, gc);
      for (int i = 0; i < 3; ++i) {
        gtb[i] += gc[i];
        for (int j = 0; j < 3; ++j) gRb[i * 3 + j] += gc[i] * vp[v * 3 + j];
      }
    }
  }
  return {loss, gR, gt};
}

// Winning face per pixel (-1: none) of screen-space meshes (B, V, 3), with render.py's torch-backend
// arithmetic in the screen dtype (same operation order), so both give the same faces; no gradients. Compiled per
// instruction set (rounding instructions instead of ceil / floor calls), with no fused multiply-adds (they would
// round the edge functions differently from torch).
template <typename T>
__attribute__((target_clones("avx512f", "avx2", "default"), optimize("fp-contract=off")))
static void winners(const T* scr, const int64_t* fp, int64_t B, int64_t V, int64_t F, int64_t H, int64_t W,
                    int64_t* out) {
  std::vector<T> zbuf(H * W);
  for (int64_t b = 0; b < B; ++b) {
    const T* s = scr + b * V * 3;
    int64_t* win = out + b * H * W;
    std::fill(zbuf.begin(), zbuf.end(), std::numeric_limits<T>::infinity());
    for (int64_t fi = 0; fi < F; ++fi) {
      const T *p0 = &s[fp[fi * 3] * 3], *p1 = &s[fp[fi * 3 + 1] * 3], *p2 = &s[fp[fi * 3 + 2] * 3];
      if (std::min({p0[2], p1[2], p2[2]}) <= T(1e-8)) continue;
      const T area = (p1[0] - p0[0]) * (p2[1] - p0[1]) - (p1[1] - p0[1]) * (p2[0] - p0[0]);
      if (area == 0) continue;
      const int64_t c0 = std::max<int64_t>(0, (int64_t)std::ceil(std::min({p0[0], p1[0], p2[0]}) - T(0.5)));
      const int64_t c1 = std::min<int64_t>(W - 1, (int64_t)std::floor(std::max({p0[0], p1[0], p2[0]}) - T(0.5)));
      const int64_t r0 = std::max<int64_t>(0, (int64_t)std::ceil(std::min({p0[1], p1[1], p2[1]}) - T(0.5)));
      const int64_t r1 = std::min<int64_t>(H - 1, (int64_t)std::floor(std::max({p0[1], p1[1], p2[1]}) - T(0.5)));
      for (int64_t r = r0; r <= r1; ++r) {
        const T y = T(r) + T(0.5);
        for (int64_t c = c0; c <= c1; ++c) {
          const T x = T(c) + T(0.5);
          // a pixel with an edge function of the wrong sign (or zero) fails the test below whatever z is: skipped
          // before the divisions (w_k = E_k / area has E_k * area's sign, u_k = w_k / depth_k with depth_k > 0)
          const T E0 = (p1[0] - x) * (p2[1] - y) - (p1[1] - y) * (p2[0] - x);
          const T E1 = (p2[0] - x) * (p0[1] - y) - (p2[1] - y) * (p0[0] - x);
          const T E2 = (p0[0] - x) * (p1[1] - y) - (p0[1] - y) * (p1[0] - x);
          if (area > 0 ? !(E0 > 0 && E1 > 0 && E2 > 0) : !(E0 < 0 && E1 < 0 && E2 < 0)) continue;
          const T w0 = E0 / area, w1 = E1 / area, w2 = E2 / area;
          const T u0 = w0 / p0[2], u1 = w1 / p1[2], u2 = w2 / p2[2];
          const T z = T(1) / (u0 + u1 + u2);
          if (!(u0 * z > 0 && u1 * z > 0 && u2 * z > 0 && z >= 0)) continue;
          const int64_t pix = r * W + c;
          if (z < zbuf[pix]) { zbuf[pix] = z; win[pix] = fi; }
        }
      }
    }
  }
}

torch::Tensor pix_to_face(torch::Tensor screen, torch::Tensor faces, int64_t H, int64_t W) {
  screen = screen.contiguous();
  faces = faces.to(torch::kLong).contiguous();
  const int64_t B = screen.size(0), V = screen.size(1), F = faces.size(0);
  torch::Tensor out = torch::full({B, H, W}, -1, torch::TensorOptions().dtype(torch::kLong));
  AT_DISPATCH_FLOATING_TYPES(screen.scalar_type(), "pix_to_face", [&] {
    winners<scalar_t>(screen.data_ptr<scalar_t>(), faces.data_ptr<int64_t>(), B, V, F, H, W, out.data_ptr<int64_t>());
  });
  return out;
}

// A camera at centre c (CAD frame) looking at the origin with in-plane rotation theta, as camera.py's rotation_matrix
// at position_to_angles(c): R = Rz(theta) [row1; row3 x row1; row3], row3 = c / |c|, row1 = (-cy, cx, 0) / rho,
// t = (0, 0, -|c|).
struct CentrePose {
  double R[9], rows[9];  // rows: row1, row2, row3 before the in-plane rotation
  double d, rho, ct, st;
};

static CentrePose centre_pose(const double* c, double theta) {
  CentrePose P;
  P.rho = std::sqrt(c[0] * c[0] + c[1] * c[1]);
  P.d = std::sqrt(P.rho * P.rho + c[2] * c[2]);
  double *r1 = P.rows, *r2 = P.rows + 3, *r3 = P.rows + 6;
  r1[0] = -c[1] / P.rho; r1[1] = c[0] / P.rho; r1[2] = 0;
  for (int i = 0; i < 3; ++i) r3[i] = c[i] / P.d;
  r2[0] = r3[1] * r1[2] - r3[2] * r1[1]; r2[1] = r3[2] * r1[0] - r3[0] * r1[2]; r2[2] = r3[0] * r1[1] - r3[1] * r1[0];
  P.ct = std::cos(theta); P.st = std::sin(theta);
  for (int j = 0; j < 3; ++j) {
    P.R[j] = P.ct * r1[j] - P.st * r2[j]; P.R[3 + j] = P.st * r1[j] + P.ct * r2[j]; P.R[6 + j] = r3[j];
  }
  return P;
}

// d loss / d c and d loss / d theta (written to gc, gtheta) from d loss / d R (gR, 3 x 3) and d loss / d |c| (gd).
static void centre_pose_backward(const CentrePose& P, const double* c, const double* gR, double gd, double* gc,
                                 double* gtheta) {
  const double *r1 = P.rows, *r3 = P.rows + 6;
  double g1[3], g2[3], g3[3], gt_ = 0;
  for (int j = 0; j < 3; ++j) {
    gt_ += -gR[j] * P.R[3 + j] + gR[3 + j] * P.R[j];
    g1[j] = P.ct * gR[j] + P.st * gR[3 + j];
    g2[j] = -P.st * gR[j] + P.ct * gR[3 + j];
    g3[j] = gR[6 + j];
  }
  *gtheta = gt_;
  // row2 = row3 x row1: g3 += row1 x g2, g1 += g2 x row3
  g3[0] += r1[1] * g2[2] - r1[2] * g2[1]; g3[1] += r1[2] * g2[0] - r1[0] * g2[2]; g3[2] += r1[0] * g2[1] - r1[1] * g2[0];
  g1[0] += g2[1] * r3[2] - g2[2] * r3[1]; g1[1] += g2[2] * r3[0] - g2[0] * r3[2]; g1[2] += g2[0] * r3[1] - g2[1] * r3[0];
  const double rho = P.rho, d = P.d;
  const double g1n = -g1[0] * c[1] + g1[1] * c[0], g3c = g3[0] * c[0] + g3[1] * c[1] + g3[2] * c[2];
  gc[0] = g1[1] / rho - g1n * c[0] / (rho * rho * rho);
  gc[1] = -g1[0] / rho - g1n * c[1] / (rho * rho * rho);
  gc[2] = 0;
  for (int i = 0; i < 3; ++i) gc[i] += g3[i] / d - c[i] * g3c / (d * d * d) + gd * c[i] / d;
}

// The same loss for cameras given as NeMo's optimisation variables: centre C (B, 3) and in-plane theta (B,)
// (centre_pose); returns loss, dloss/dC, dloss/dtheta.
std::vector<torch::Tensor> pose_score_loss(torch::Tensor C, torch::Tensor theta, torch::Tensor verts, torch::Tensor faces,
                                           torch::Tensor principal, torch::Tensor focal, torch::Tensor sim,
                                           torch::Tensor clut, int64_t H, int64_t W) {
  C = C.to(torch::kDouble).contiguous();
  theta = theta.to(torch::kDouble).contiguous();
  const int64_t B = C.size(0);
  auto dopt = torch::TensorOptions().dtype(torch::kDouble);
  torch::Tensor R = torch::empty({B, 3, 3}, dopt), t = torch::zeros({B, 3}, dopt);
  torch::Tensor gC = torch::zeros({B, 3}, dopt), gth = torch::zeros({B}, dopt);
  std::vector<CentrePose> poses;
  for (int64_t b = 0; b < B; ++b) {
    poses.push_back(centre_pose(C.data_ptr<double>() + b * 3, theta.data_ptr<double>()[b]));
    std::copy(poses[b].R, poses[b].R + 9, R.data_ptr<double>() + b * 9);
    t.data_ptr<double>()[b * 3 + 2] = -poses[b].d;
  }
  auto out = render_score_loss(verts, faces, R, t, principal, focal, sim, clut, H, W);
  for (int64_t b = 0; b < B; ++b)
    centre_pose_backward(poses[b], C.data_ptr<double>() + b * 3, out[1].data_ptr<double>() + b * 9,
                         -out[2].data_ptr<double>()[b * 3 + 2], gC.data_ptr<double>() + b * 3,
                         gth.data_ptr<double>() + b);
  return {out[0], gC, gth};
}

// NTDM's object score at M surface points: s = <normalize(sum_b alpha_b T_b(uv)), f>, with T_b(uv) bilinear in
// bin b of a q x q texture (texel (r, c) centred at u = (c + 0.5) / q, v = 1 - (r + 0.5) / q; periodic in u,
// clamped in v: NeuralTexture.lookup's rules), f row rows[m] of feats. With with_grad, also ds/duv (M, 2) and
// ds/dalpha (M, nb), as autograd would give through grid_sample (zero v-gradient where v is clamped).
// texels (q, q, NB, d) texel-major; alpha (M, nb) with nb <= NB uses the first nb bins.
struct Texture {
  const float* tex;  // (q, q, NB, d)
  int64_t q, NB, d;
  float* gram = nullptr;  // (q * q, 4 NB, 32) Gram matrices of the cells' texels, filled on first use ...
  int32_t* gram_state = nullptr;  // (q * q,) ... 0: empty, 1: being written, 2: ready
};

// The bilinear footprint of UV (u, v): the 4 corner texels (ra, ca), (ra, cb), (rb, ca), (rb, cb), their weights,
// and the cell (ra, ca) that names them.
struct Footprint {
  double fx, fy, yr;
  int64_t cell;
  float w[4];
  const float* T[4];
};

// The fractional texel position of UV (u, v) in a q x q texture: x (periodic) and y (clamped) in texel units from the
// first texel centre, and the bilinear weights of the 4 corners.
struct Bilinear {
  double x, y, yr, fx, fy;
  float w[4];
};

static inline __attribute__((always_inline)) Bilinear bilinear(int64_t q, double u, double v) {
  Bilinear B;
  B.x = (u - std::floor(u)) * q - 0.5;
  B.fx = B.x - std::floor(B.x);
  B.yr = (1.0 - v) * q - 0.5;
  B.y = std::min(std::max(B.yr, 0.0), double(q - 1));
  B.fy = B.y - std::floor(B.y);
  const double fx = B.fx, fy = B.fy;
  B.w[0] = float((1 - fx) * (1 - fy)); B.w[1] = float(fx * (1 - fy)); B.w[2] = float((1 - fx) * fy); B.w[3] = float(fx * fy);
  return B;
}

static inline __attribute__((always_inline)) Footprint footprint(const Texture& X, double u, double v) {
  const int64_t q = X.q, NB = X.NB, d = X.d;
  const Bilinear B = bilinear(q, u, v);
  Footprint P;
  P.fx = B.fx; P.fy = B.fy; P.yr = B.yr;
  const int64_t ca = (((int64_t)std::floor(B.x) % q) + q) % q, cb = (ca + 1) % q;
  const int64_t ra = (int64_t)std::floor(B.y), rb = std::min<int64_t>(ra + 1, q - 1);
  P.cell = ra * q + ca;
  P.T[0] = X.tex + (ra * q + ca) * NB * d; P.T[1] = X.tex + (ra * q + cb) * NB * d;
  P.T[2] = X.tex + (rb * q + ca) * NB * d; P.T[3] = X.tex + (rb * q + cb) * NB * d;
  std::copy(B.w, B.w + 4, P.w);
  return P;
}

// d s / d uv from d s / d w_c, as autograd through grid_sample gives it (zero v-gradient where v is clamped).
static inline void uv_gradient(const Footprint& P, int64_t q, const double gw[4], float* guv) {
  const double gfx = (1 - P.fy) * (gw[1] - gw[0]) + P.fy * (gw[3] - gw[2]);
  const double gfy = (1 - P.fx) * (gw[2] - gw[0]) + P.fx * (gw[3] - gw[1]);
  guv[0] = float(q * gfx);
  guv[1] = (P.yr > 0 && P.yr < q - 1) ? float(-q * gfy) : 0.f;
}

struct Scratch {
  std::vector<float> tb, vec, g, corner;
  Scratch(int64_t nb, int64_t d) : tb(nb * d), vec(d), g(d), corner(4 * d) {}
};

// One point's score; with grad (non-null guv) also ds/duv (2) and ds/dalpha (nb).
static inline __attribute__((always_inline)) float blend_score(const Texture& X, double u, double v, const float* a,
                                                               int64_t nb, const float* f, float* guv, float* galpha,
                                                               Scratch& S) {
  const int64_t d = X.d;
  const Footprint P = footprint(X, u, v);
  const float* const* T = P.T;
  const float* w = P.w;
  float *tb = S.tb.data(), *vec = S.vec.data(), *g = S.g.data();
  // vec = sum_b alpha_b t_b with t_b the bilinear sample of bin b; for the gradient also each corner's
  // alpha-blend U_c = sum_b alpha_b T_c[b], so the backward does not read the texels again
  const bool grad = guv != nullptr;
  float* U = S.corner.data();
  std::fill(vec, vec + d, 0.f);
  if (grad) std::fill(U, U + 4 * d, 0.f);
  for (int64_t b = 0; b < nb; ++b) {
    float* t = tb + b * d;
    const int64_t o = b * d;
    const float ab = a[b];
    const float *T0 = T[0] + o, *T1 = T[1] + o, *T2 = T[2] + o, *T3 = T[3] + o;
    if (grad) {
      float *U0 = U, *U1 = U + d, *U2 = U + 2 * d, *U3 = U + 3 * d;
#pragma omp simd
      for (int64_t k = 0; k < d; ++k) {
        t[k] = w[0] * T0[k] + w[1] * T1[k] + w[2] * T2[k] + w[3] * T3[k];
        vec[k] += ab * t[k];
        U0[k] += ab * T0[k]; U1[k] += ab * T1[k]; U2[k] += ab * T2[k]; U3[k] += ab * T3[k];
      }
    } else {
#pragma omp simd
      for (int64_t k = 0; k < d; ++k) {
        t[k] = w[0] * T0[k] + w[1] * T1[k] + w[2] * T2[k] + w[3] * T3[k];
        vec[k] += ab * t[k];
      }
    }
  }
  float nsqf = 0, dotf = 0;
#pragma omp simd reduction(+ : nsqf, dotf)
  for (int64_t k = 0; k < d; ++k) { nsqf += vec[k] * vec[k]; dotf += vec[k] * f[k]; }
  const double n = std::sqrt(double(nsqf)), s = dotf / std::max(n, 1e-12);
  if (guv == nullptr) return float(s);
  // d s / d vec: (f - s vec / n) / n (F.normalize's gradient; f / eps below its eps)
  const float inv = float(1.0 / std::max(n, 1e-12)), sn = n > 1e-12 ? float(s / n) : 0.f;
#pragma omp simd
  for (int64_t k = 0; k < d; ++k) g[k] = (f[k] - sn * vec[k]) * inv;
  for (int64_t b = 0; b < nb; ++b) {  // d s / d alpha_b = g . t_b
    const float* t = tb + b * d;
    float ga = 0;
#pragma omp simd reduction(+ : ga)
    for (int64_t k = 0; k < d; ++k) ga += g[k] * t[k];
    galpha[b] = ga;
  }
  double gw[4];  // d s / d w_c = g . U_c
  for (int c = 0; c < 4; ++c) {
    float gc = 0;
#pragma omp simd reduction(+ : gc)
    for (int64_t k = 0; k < d; ++k) gc += g[k] * U[c * d + k];
    gw[c] = gc;
  }
  uv_gradient(P, X.q, gw, guv);
  return float(s);
}

// A cell's 4 NB <= 28 (corner, bin) pairs, padded to one fixed width so that the small products below are two
// AVX-512 vectors with no remainder loop.
constexpr int64_t KP = 32;

// The Gram matrix G[c b][c' b'] = <T_c[b], T_c'[b']> (4 NB rows of KP, zero-padded) of a cell's corner texels:
// image-independent, so it is computed once per texture cell and kept in X.gram. A thread that finds the cell being
// written by another computes its own copy into `scratch`.
static inline __attribute__((always_inline)) const float* cell_gram(const Texture& X, const Footprint& P,
                                                                     float* scratch) {
  const int64_t K = 4 * X.NB, d = X.d;
  float* slot = X.gram + P.cell * K * KP;
  int32_t* state = X.gram_state + P.cell;
  if (__atomic_load_n(state, __ATOMIC_ACQUIRE) == 2) return slot;
  int32_t empty = 0;
  const bool mine = __atomic_compare_exchange_n(state, &empty, 1, false, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
  float* G = mine ? slot : scratch;
  std::fill(G, G + K * KP, 0.f);
  for (int64_t i = 0; i < K; ++i) {
    const float* ti = P.T[i / X.NB] + (i % X.NB) * d;
    for (int64_t j = i; j < K; ++j) {
      const float* tj = P.T[j / X.NB] + (j % X.NB) * d;
      float acc = 0;
#pragma omp simd reduction(+ : acc)
      for (int64_t k = 0; k < d; ++k) acc += ti[k] * tj[k];
      G[i * KP + j] = G[j * KP + i] = acc;
    }
  }
  if (mine) __atomic_store_n(state, 2, __ATOMIC_RELEASE);
  return G;
}

// The sums of the 16 lanes of each of 8 vectors, by halving: x[i] + x[i + 8], then h[i] + h[i + 4], then
// (h[0] + h[2]) + (h[1] + h[3]), so 4 dependent adds, not 16; each step adds the halves of two vectors at once.
static inline __attribute__((always_inline)) Lanes8 lane_sums(const Lanes16 x[8]) {
  Lanes16 h8[4], h4[2];
  for (int i = 0; i < 4; ++i)  // (x[i] + x[i + 8]) of two vectors side by side
    h8[i] = __builtin_shufflevector(x[2 * i], x[2 * i + 1], 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23)
            + __builtin_shufflevector(x[2 * i], x[2 * i + 1], 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30,
                                      31);
  for (int i = 0; i < 2; ++i)  // (h8[i] + h8[i + 4]) of four
    h4[i] = __builtin_shufflevector(h8[2 * i], h8[2 * i + 1], 0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25, 26, 27)
            + __builtin_shufflevector(h8[2 * i], h8[2 * i + 1], 4, 5, 6, 7, 12, 13, 14, 15, 20, 21, 22, 23, 28, 29, 30,
                                      31);
  const Lanes16 h2 =  // (h4[0] + h4[2], h4[1] + h4[3]) of eight
      __builtin_shufflevector(h4[0], h4[1], 0, 1, 4, 5, 8, 9, 12, 13, 16, 17, 20, 21, 24, 25, 28, 29)
      + __builtin_shufflevector(h4[0], h4[1], 2, 3, 6, 7, 10, 11, 14, 15, 18, 19, 22, 23, 26, 27, 30, 31);
  return __builtin_shufflevector(h2, h2, 0, 2, 4, 6, 8, 10, 12, 14) + __builtin_shufflevector(h2, h2, 1, 3, 5, 7, 9, 11,
                                                                                            13, 15);
}

// out[p][b] = <t[b], f[p]> for the first `nb` of a texel's NB <= 8 bins t (NB, d) and NP pixel features f[p]: all
// bins advance together, 16 lanes at a time in vector registers, so the running sums are independent (one dot product
// at a time waits on its own adds), and each bin's values are read once for the NP pixels.
template <int NB, int NP, bool pin = false>
static inline __attribute__((always_inline)) void texel_dots_shared(const float* t, const float* const* f, int64_t d,
                                                                    int64_t nb, float* const* out) {
  static_assert(NB <= 8, "lane_sums adds up 8 vectors");
  Lanes16 acc[NP][8];
#pragma GCC unroll 4
  for (int p = 0; p < NP; ++p)
#pragma GCC unroll 8
    for (int b = 0; b < 8; ++b) acc[p][b] = Lanes16{};
  int64_t k = 0;
  for (; k + 16 <= d; k += 16) {
    Lanes16 fv[NP];
#pragma GCC unroll 4
    for (int p = 0; p < NP; ++p) std::memcpy(&fv[p], f[p] + k, sizeof(Lanes16));
#pragma GCC unroll 8
    for (int b = 0; b < NB; ++b) {
      Lanes16 tv;
      std::memcpy(&tv, t + b * d + k, sizeof tv);
      if constexpr (pin) __asm__("" : "+v"(tv));  // a register (AVX-512 only), not a load folded into each use
#pragma GCC unroll 4
      for (int p = 0; p < NP; ++p) acc[p][b] += tv * fv[p];
    }
  }
#pragma GCC unroll 4
  for (int p = 0; p < NP; ++p) {
    const Lanes8 sums = lane_sums(acc[p]);
    for (int64_t b = 0; b < nb; ++b) {
      float sum = sums[b];
      for (int64_t r = k; r < d; ++r) sum += t[b * d + r] * f[p][r];
      out[p][b] = sum;
    }
  }
}

template <int NB>
static inline __attribute__((always_inline)) void texel_dots(const float* t, const float* f, int64_t d, int64_t nb,
                                                             float* out) {
  texel_dots_shared<NB, 1>(t, &f, d, nb, &out);
}

// texel_dots for any number of bins NB.
static inline __attribute__((always_inline)) void bin_dots(const float* t, const float* f, int64_t NB, int64_t d,
                                                           int64_t nb, float* out) {
  if (NB == 7) return texel_dots<7>(t, f, d, nb, out);
  for (int64_t b = 0; b < nb; ++b) {
    float acc = 0;
#pragma omp simd reduction(+ : acc)
    for (int64_t k = 0; k < d; ++k) acc += t[b * d + k] * f[k];
    out[b] = acc;
  }
}

// blend_score's number and gradients from dot products instead of the blended vector: with a_cb = w_c alpha_b,
// s = sum a_cb D_cb / n, D_cb = <T_c[b], f>, n^2 = a' G a (cell_gram). D of a pixel's cell is kept in `dots`
// (KP floats, zero past 4 NB) while the pixel stays in that cell (`cached_cell`), so a step computes 4 nb dot
// products of d only where a pixel moved to another cell, and reads G's 4 NB x KP floats instead of the 4 nb d
// texel values. The gradients (guv non-null) are only taken for a score s >= grad_from: below it the caller's loss
// is flat in s (the clutter score wins, or an invalid pixel), and most pixels are there.
static inline __attribute__((always_inline)) float gram_score(const Texture& X, double u, double v, const float* alpha,
                                                              int64_t nb, const float* f, int32_t* cached_cell, float* dots,
                                                              float grad_from, float* guv, float* galpha, float* scratch) {
  const int64_t NB = X.NB, K = 4 * NB, d = X.d;
  const Footprint P = footprint(X, u, v);
  if (*cached_cell != P.cell) {
    for (int c = 0; c < 4; ++c) bin_dots(P.T[c], f, NB, d, nb, dots + c * NB);
    *cached_cell = int32_t(P.cell);
  }
  const float* G = cell_gram(X, P, scratch);
  float a[KP] = {0}, Ga[KP] = {0};
  for (int c = 0; c < 4; ++c)
    for (int64_t b = 0; b < nb; ++b) a[c * NB + b] = P.w[c] * alpha[b];
  {  // Ga = G a, column by column (G is symmetric), in 4 running sums (K = 4 NB) so that the adds do not wait on
     // each other
    Lanes16 acc[4][2] = {};
    for (int64_t j = 0; j < K; j += 4)
      for (int r = 0; r < 4; ++r)
        for (int h = 0; h < 2; ++h) {
          Lanes16 c;
          std::memcpy(&c, G + (j + r) * KP + 16 * h, sizeof c);
          acc[r][h] += c * a[j + r];
        }
    for (int h = 0; h < 2; ++h) {
      const Lanes16 sum = (acc[0][h] + acc[1][h]) + (acc[2][h] + acc[3][h]);
      std::memcpy(Ga + 16 * h, &sum, sizeof sum);
    }
  }
  float dotf = 0, nsqf = 0;
#pragma omp simd reduction(+ : dotf, nsqf)
  for (int64_t i = 0; i < KP; ++i) { dotf += a[i] * dots[i]; nsqf += a[i] * Ga[i]; }
  const double n = std::sqrt(std::max(double(nsqf), 0.0)), s = dotf / std::max(n, 1e-12);
  if (guv == nullptr || !(float(s) >= grad_from)) return float(s);
  // d s / d a_cb = <g, T_c[b]> = e_cb with g = (f - s vec / n) / n (F.normalize's gradient; f / eps below its eps)
  const float sn = n > 1e-12 ? float(s / n) : 0.f, inv = float(1.0 / std::max(n, 1e-12));
  float e[KP];
#pragma omp simd
  for (int64_t i = 0; i < KP; ++i) e[i] = (dots[i] - sn * Ga[i]) * inv;
  double gw[4] = {0, 0, 0, 0};
  for (int64_t b = 0; b < nb; ++b) galpha[b] = 0;
  for (int c = 0; c < 4; ++c)
    for (int64_t b = 0; b < nb; ++b) {
      galpha[b] += P.w[c] * e[c * NB + b];
      gw[c] += alpha[b] * e[c * NB + b];
    }
  uv_gradient(P, X.q, gw, guv);
  return float(s);
}

struct TextureScoreArgs {
  Texture X;
  const float *uv, *alpha, *feats;
  const int64_t* rows;
  int64_t nb;
  bool with_grad;
  float *score, *guv, *galpha;
};

// Points [lo, hi); compiled for AVX-512, AVX2 and baseline x86-64, the best one picked at load time (the
// 128-wide float loops are most of NTDM's step).
__attribute__((target_clones("avx512f", "avx2", "default")))
static void texture_score_range(const TextureScoreArgs& A, int64_t lo, int64_t hi) {
  Scratch S(A.nb, A.X.d);
  for (int64_t m = lo; m < hi; ++m)
    A.score[m] = blend_score(A.X, A.uv[m * 2], A.uv[m * 2 + 1], A.alpha + m * A.nb, A.nb, A.feats + A.rows[m] * A.X.d,
                             A.with_grad ? A.guv + m * 2 : nullptr, A.galpha + m * A.nb, S);
}

std::vector<torch::Tensor> texture_score(torch::Tensor texels, torch::Tensor uv, torch::Tensor alpha,
                                         torch::Tensor feats, torch::Tensor rows, bool with_grad, int64_t threads) {
  texels = texels.to(torch::kFloat).contiguous();
  uv = uv.to(torch::kFloat).contiguous();
  alpha = alpha.to(torch::kFloat).contiguous();
  feats = feats.to(torch::kFloat).contiguous();
  rows = rows.to(torch::kLong).contiguous();
  const int64_t q = texels.size(0), NB = texels.size(2), d = texels.size(3), M = uv.size(0), nb = alpha.size(1);
  TORCH_CHECK(texels.size(1) == q && nb <= NB && feats.size(1) == d && rows.size(0) == M && alpha.size(0) == M,
              "texture_score: texels (q, q, NB, d), uv (M, 2), alpha (M, nb <= NB), feats (R, d), rows (M,)");
  auto fopt = torch::TensorOptions().dtype(torch::kFloat);
  torch::Tensor score = torch::empty({M}, fopt);
  torch::Tensor guv = torch::zeros({with_grad ? M : 0, 2}, fopt), galpha = torch::zeros({with_grad ? M : 0, nb}, fopt);
  const TextureScoreArgs args{{texels.data_ptr<float>(), q, NB, d}, uv.data_ptr<float>(), alpha.data_ptr<float>(),
                              feats.data_ptr<float>(), rows.data_ptr<int64_t>(), nb, with_grad,
                              score.data_ptr<float>(), guv.data_ptr<float>(), galpha.data_ptr<float>()};
  // blocks handed out as threads free up: with another process on the machine, a thread that loses its core
  // holds up one block, not half of the points (at::parallel_for splits the range evenly)
  constexpr int64_t block = 256;
#pragma omp parallel for schedule(dynamic, 1) num_threads(std::max<int64_t>(1, threads))
  for (int64_t lo = 0; lo < M; lo += block) texture_score_range(args, lo, std::min(M, lo + block));
  return {score, guv, galpha};
}

// The init search scores ~10^6 start points against each image, but only ~1/5 as many distinct (pixel, texel)
// pairs occur among their bilinear corners: start_pairs lists each point's 4 corner texels and blend norm
// (image-independent, kept with the starts), start_scores then takes the nb texel-feature dot products once per
// distinct pair, and each point's score is s = sum_c w_c sum_b alpha_b <T_c[b], f> / |sum_b alpha_b T_b(uv)|:
// blend_score's number.

// Per point (M): its 4 corner texels' indices q r + c (M, 4) int32 (footprint's order) and the norm of its blended
// texel vector (M,).
std::vector<torch::Tensor> start_pairs(torch::Tensor texels, torch::Tensor uv, torch::Tensor alpha, int64_t threads) {
  texels = texels.to(torch::kFloat).contiguous();
  uv = uv.to(torch::kFloat).contiguous();
  alpha = alpha.to(torch::kFloat).contiguous();
  const int64_t q = texels.size(0), NB = texels.size(2), d = texels.size(3), M = uv.size(0), nb = alpha.size(1);
  TORCH_CHECK(nb <= NB && alpha.size(0) == M, "start_pairs: texels (q, q, NB, d), uv (M, 2), alpha (M, nb <= NB)");
  torch::Tensor corners = torch::empty({M, 4}, torch::TensorOptions().dtype(torch::kInt));
  torch::Tensor norm = torch::empty({M}, torch::TensorOptions().dtype(torch::kFloat));
  const Texture X{texels.data_ptr<float>(), q, NB, d};
  const float *uvp = uv.data_ptr<float>(), *ap = alpha.data_ptr<float>();
  int32_t* cp = corners.data_ptr<int32_t>();
  float* np_ = norm.data_ptr<float>();
  const std::vector<float> zero(d, 0.f);
#pragma omp parallel num_threads(std::max<int64_t>(1, threads))
  {
    Scratch S(nb, d);
#pragma omp for schedule(static)
    for (int64_t m = 0; m < M; ++m) {
      const Footprint P = footprint(X, uvp[m * 2], uvp[m * 2 + 1]);
      for (int c = 0; c < 4; ++c) cp[m * 4 + c] = int32_t((P.T[c] - X.tex) / (NB * d));
      blend_score(X, uvp[m * 2], uvp[m * 2 + 1], ap + m * nb, nb, zero.data(), nullptr, nullptr, S);
      float nsq = 0;
      for (int64_t k = 0; k < d; ++k) nsq += S.vec[k] * S.vec[k];
      np_[m] = float(std::max(std::sqrt(double(nsq)), 1e-12));
    }
  }
  return {corners, norm};
}

struct StartScoreArgs {
  Texture X;
  const float *uv, *alpha, *norm, *feats;
  const int32_t *corner_pair, *pair_pixel, *pair_texel, *target;
  int64_t nb, U, M;
  float* dots;  // (U, nb)
  float* score;  // the map the points' scores go to, at `target`
};

// One pair's dot products at a time.
__attribute__((target_clones("avx2", "default")))
static void pair_dots_each(const StartScoreArgs& A, int64_t lo, int64_t hi) {
  const int64_t NB = A.X.NB, d = A.X.d;
  for (int64_t u = lo; u < hi; ++u)
    bin_dots(A.X.tex + int64_t(A.pair_texel[u]) * NB * d, A.feats + int64_t(A.pair_pixel[u]) * d, NB, d, A.nb,
             A.dots + u * A.nb);
}

// The pairs are texel-major: a run of pairs with one texel takes its dot products 3 pixels at a time, each bin's
// values loaded once into a register for the 3 (else GCC folds the load into each multiply-add, 3 loads). That
// register holds 16 floats only with AVX-512: pair_dots_range takes this path where the CPU has it.
__attribute__((target("avx512f")))
static void pair_dots_shared(const StartScoreArgs& A, int64_t lo, int64_t hi) {
  const int64_t NB = A.X.NB, d = A.X.d;
  constexpr int NP = 3;
  for (int64_t u = lo; u < hi;) {
    const float* t = A.X.tex + int64_t(A.pair_texel[u]) * NB * d;
    if (u + NP > hi || A.pair_texel[u] != A.pair_texel[u + NP - 1]) {  // a run ends among them: this pair alone
      texel_dots<7>(t, A.feats + int64_t(A.pair_pixel[u]) * d, d, A.nb, A.dots + u * A.nb);
      ++u;
      continue;
    }
    const float* f[NP];
    float* out[NP];
    for (int p = 0; p < NP; ++p) {
      f[p] = A.feats + int64_t(A.pair_pixel[u + p]) * d;
      out[p] = A.dots + (u + p) * A.nb;
    }
    texel_dots_shared<7, NP, true>(t, f, d, A.nb, out);
    u += NP;
  }
}

static void pair_dots_range(const StartScoreArgs& A, int64_t lo, int64_t hi) {
  if (A.X.NB == 7 && __builtin_cpu_supports("avx512f")) return pair_dots_shared(A, lo, hi);
  pair_dots_each(A, lo, hi);
}

// Each point's score from its 4 corners' pairs, NB > 0 bins known when compiled (the loops unrolled), else A.nb.
template <int NB>
static inline __attribute__((always_inline)) void point_scores(const StartScoreArgs& A, int64_t lo, int64_t hi) {
  const int64_t nb = NB > 0 ? NB : A.nb;
  constexpr int64_t ahead = 16;  // the pairs' dot products are tens of MB, read in point order: fetched ahead
  for (int64_t m = lo; m < hi; ++m) {
    if (m + ahead < hi)
      for (int c = 0; c < 4; ++c) __builtin_prefetch(A.dots + int64_t(A.corner_pair[(m + ahead) * 4 + c]) * nb);
    const Bilinear P = bilinear(A.X.q, A.uv[m * 2], A.uv[m * 2 + 1]);
    const float* alpha = A.alpha + m * nb;
    float s = 0;
    for (int c = 0; c < 4; ++c) {
      const float* D = A.dots + int64_t(A.corner_pair[m * 4 + c]) * nb;
      float blended = 0;
      for (int64_t b = 0; b < nb; ++b) blended += alpha[b] * D[b];
      s += P.w[c] * blended;
    }
    A.score[A.target[m]] = s / A.norm[m];
  }
}

// Compiled per instruction set for bilinear's floors (rounding instructions), with fp-contract off so that every
// multiply and add rounds as in the baseline build.
__attribute__((target_clones("avx512f", "avx2", "default"), optimize("fp-contract=off")))
static void point_scores_range(const StartScoreArgs& A, int64_t lo, int64_t hi) {
  if (A.nb == 7) return point_scores<7>(A, lo, hi);
  point_scores<0>(A, lo, hi);
}

// The map (size,) of the points' scores against image rows `feats` (h w, d), point m's at target[m] and zero where
// no point is: corner_pair (M, 4) indexes the distinct pairs (pair_pixel, pair_texel) (U,) that start_pairs' corners
// form with the points' pixels.
torch::Tensor start_scores(torch::Tensor texels, torch::Tensor uv, torch::Tensor alpha, torch::Tensor norm,
                           torch::Tensor corner_pair, torch::Tensor pair_pixel, torch::Tensor pair_texel,
                           torch::Tensor target, int64_t size, torch::Tensor feats, int64_t threads) {
  texels = texels.to(torch::kFloat).contiguous();
  feats = feats.to(torch::kFloat).contiguous();
  const int64_t q = texels.size(0), NB = texels.size(2), d = texels.size(3), M = uv.size(0), nb = alpha.size(1);
  const int64_t U = pair_pixel.size(0);
  TORCH_CHECK(uv.is_contiguous() && alpha.is_contiguous() && norm.is_contiguous() && corner_pair.is_contiguous()
              && pair_pixel.is_contiguous() && pair_texel.is_contiguous() && target.is_contiguous()
              && corner_pair.dtype() == torch::kInt && pair_pixel.dtype() == torch::kInt
              && pair_texel.dtype() == torch::kInt && target.dtype() == torch::kInt && feats.size(1) == d && nb <= NB
              && corner_pair.size(0) == M && pair_texel.size(0) == U && target.size(0) == M,
              "start_scores: start_pairs' outputs and the distinct pairs (int32, contiguous)");
  // the pairs' dot products: tens of MB, so kept between calls (fresh pages would cost more than the dots)
  static thread_local std::vector<float> dots;
  dots.resize(std::max<size_t>(dots.size(), size_t(U * nb)));
  torch::Tensor score = torch::zeros({size}, torch::TensorOptions().dtype(torch::kFloat));
  const StartScoreArgs A{{texels.data_ptr<float>(), q, NB, d}, uv.data_ptr<float>(), alpha.data_ptr<float>(),
                         norm.data_ptr<float>(), feats.data_ptr<float>(), corner_pair.data_ptr<int32_t>(),
                         pair_pixel.data_ptr<int32_t>(), pair_texel.data_ptr<int32_t>(), target.data_ptr<int32_t>(),
                         nb, U, M, dots.data(),
                         score.data_ptr<float>()};
  constexpr int64_t block = 1024;  // dynamic blocks, as texture_score's
#pragma omp parallel num_threads(std::max<int64_t>(1, threads))
  {
#pragma omp for schedule(dynamic, 1)
    for (int64_t lo = 0; lo < U; lo += block) pair_dots_range(A, lo, std::min(U, lo + block));
#pragma omp for schedule(dynamic, 1)
    for (int64_t lo = 0; lo < M; lo += block) point_scores_range(A, lo, std::min(M, lo + block));
  }
  return score;
}

// NTDM's render-and-compare loss of N deformed meshes sharing faces and corner UVs, and its gradient: per item n,
// project vertices[n] with camera n (surface_mesh), rasterise (the winner search in the vertices' dtype, as render.py's
// torch backend), interpolate the unit vertex normals and positions (vertex_attributes) and the corner UVs (F, 3, 2)
// with perspective-correct barycentrics, then as textures.py: n = normalize(normal), d = normalize(C[n] - position),
// alpha = softmax_b(T (R_b n) . d), s = gram_score (blend_score's number) with the texture of model item_model[n], and
// render_compare.loss_fg_bg (loss_fg_only without clutter) over the valid pixels. Returns loss (N,), and with
// with_grad d loss / d C, theta, vertices.
struct SurfaceArgs {
  const int64_t* faces;
  const double* cuv;  // (F, 3, 2)
  const double* rot;  // (nb, 3, 3)
  double temperature;
  int64_t V, F, H, W, nb;
  std::vector<Texture> textures;
  const int64_t *item_model, *image;
  const float *feats, *clut, *valid;
  int32_t* cached_cell;  // (N, P) the cell whose dot products `dots` (N, P, 4 NB) hold, per item and pixel
  float* dots;
  bool with_grad;
};

// exp of 8 doubles x <= 0 at once (about 1 ulp; x clamped at -708, where exp is 3e-308): Cody-Waite reduction x = n ln 2 + r, |r| <= ln 2 / 2,
// and exp(r) by its Taylor series to r^13 / 13! (the next term is below 1e-17). One glibc exp call per bin cost a
// third of a pixel's view coefficients.
static inline __attribute__((always_inline)) Doubles8 exp_nonpositive(Doubles8 x) {
  const Doubles8 zero{};
  x = x < -708.0 ? zero - 708.0 : x;
  const Doubles8 shift = zero + 6755399441055744.0;  // 1.5 2^52: adding it rounds to an integer
  const Doubles8 n = (x * 1.4426950408889634 + shift) - shift;
  const Doubles8 r = (x - n * 0.693145751953125) - n * 1.42860682030941723212e-6;
  Doubles8 p = zero + 1.0 / 6227020800.0;
  const double inv_factorial[13] = {1.0 / 479001600.0, 1.0 / 39916800.0, 1.0 / 3628800.0, 1.0 / 362880.0,
                                    1.0 / 40320.0, 1.0 / 5040.0, 1.0 / 720.0, 1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0,
                                    0.5, 1.0, 1.0};
  for (double c : inv_factorial) p = p * r + c;
  const Longs8 bits = (__builtin_convertvector(n, Longs8) + 1023) << 52;
  Doubles8 scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return p * scale;
}

template <typename T>
__attribute__((target_clones("avx512f", "avx2", "default")))
static void surface_item(const SurfaceArgs& A, int64_t n, const T* screen, const double* scr, const double* vattr,
                         const double* centre, double* loss, double* gscr, double* gvattr, double* gcentre) {
  const int64_t V = A.V, H = A.H, W = A.W, P = H * W, nb = A.nb;
  const Texture& X = A.textures[A.item_model[n]];
  const int64_t d = X.d;
  std::vector<int64_t> win(P, -1);
  winners<T>(screen, A.faces, 1, V, A.F, H, W, win.data());
  std::vector<double> invz(V);
  for (int64_t v = 0; v < V; ++v) invz[v] = 1.0 / scr[v * 3 + 2];
  const float* clut = A.clut ? A.clut + n * P : nullptr;
  const float* valid = A.valid + n * P;
  const float* frows = A.feats + A.image[n] * P * d;
  double nv = 0, acc = 0;
  for (int64_t p = 0; p < P; ++p) nv += valid[p];
  nv = std::max(nv, 1.0);
  int32_t* cached_cell = A.cached_cell + n * P;
  float* dots = A.dots + n * P * KP;
  std::vector<float> scratch(4 * X.NB * KP);
  // A block of pixels at a time, in three passes: the covered pixels' views up to their coefficients alpha, 8
  // pixels per vector lane-wise (the same operations per pixel as one at a time); their scores; then in pixel order
  // the loss and the backward (the same sums in the same order as one pass).
  constexpr int64_t block = 32;
  struct PixelView {
    int64_t pix;
    double w[3], bary[3], Sum, Ar, uv[2], nh[3], dh[3], nl, dl, Rn[7][3];
    float alpha[7], s, guv[2], galpha[7];
  };
  PixelView views[block];
  int64_t covered[block];
  const bool grad = A.with_grad;
  const Doubles8 zero{};
  for (int64_t b0 = 0; b0 < P; b0 += block) {
    const int64_t b1 = std::min(P, b0 + block);
    int64_t count = 0;
    for (int64_t pix = b0; pix < b1; ++pix)
      if (win[pix] >= 0) covered[count++] = pix;
    for (int64_t g = 0; g < count; g += 8) {
      const int64_t lanes = std::min<int64_t>(8, count - g);
      Doubles8 x, y, qx[3], qy[3], iz[3], va[3][6], cu[3][2];
      for (int l = 0; l < 8; ++l) {  // lanes past the pixels repeat the last one
        const int64_t pix = covered[g + std::min<int64_t>(l, lanes - 1)], fi = win[pix];
        const int64_t* vi = A.faces + fi * 3;
        x[l] = pix % W + 0.5;
        y[l] = pix / W + 0.5;
        for (int k = 0; k < 3; ++k) {
          qx[k][l] = scr[vi[k] * 3];
          qy[k][l] = scr[vi[k] * 3 + 1];
          iz[k][l] = invz[vi[k]];
          for (int i = 0; i < 6; ++i) va[k][i][l] = vattr[vi[k] * 6 + i];
          for (int i = 0; i < 2; ++i) cu[k][i][l] = A.cuv[(fi * 3 + k) * 2 + i];
        }
      }
      Doubles8 w[3], u[3], bary[3], Sum = zero, Ar = zero;
      for (int m = 0; m < 3; ++m) {
        const int a = (m + 1) % 3, c = (m + 2) % 3;
        w[m] = (qx[a] - x) * (qy[c] - y) - (qy[a] - y) * (qx[c] - x);
        Ar += w[m];
      }
      const Doubles8 invA = 1.0 / Ar;
      for (int k = 0; k < 3; ++k) { w[k] *= invA; u[k] = w[k] * iz[k]; Sum += u[k]; }
      const Doubles8 invS = 1.0 / Sum;
      Doubles8 attr[6] = {}, uv[2] = {};
      for (int k = 0; k < 3; ++k) {
        bary[k] = u[k] * invS;
        for (int i = 0; i < 6; ++i) attr[i] += bary[k] * va[k][i];
        for (int i = 0; i < 2; ++i) uv[i] += bary[k] * cu[k][i];
      }
      Doubles8 nl = attr[0] * attr[0] + attr[1] * attr[1] + attr[2] * attr[2], dv[3];
      for (int i = 0; i < 3; ++i) dv[i] = centre[i] - attr[3 + i];
      Doubles8 dl = dv[0] * dv[0] + dv[1] * dv[1] + dv[2] * dv[2];
      for (int l = 0; l < 8; ++l) { nl[l] = std::sqrt(nl[l]); dl[l] = std::sqrt(dl[l]); }
      const Doubles8 nln = nl < 1e-12 ? zero + 1e-12 : nl, dln = dl < 1e-12 ? zero + 1e-12 : dl;
      const Doubles8 inl = 1.0 / nln, idl = 1.0 / dln;
      Doubles8 nh[3], dh[3], Rn[7][3], logit[7], logit_max = zero - std::numeric_limits<double>::infinity();
      for (int i = 0; i < 3; ++i) { nh[i] = attr[i] * inl; dh[i] = dv[i] * idl; }
      for (int64_t b = 0; b < nb; ++b) {
        const double* R = A.rot + b * 9;
        Doubles8 l = zero;
        for (int i = 0; i < 3; ++i) {
          Rn[b][i] = R[i * 3] * nh[0] + R[i * 3 + 1] * nh[1] + R[i * 3 + 2] * nh[2];
          l += Rn[b][i] * dh[i];
        }
        logit[b] = A.temperature * l;
        logit_max = logit_max < logit[b] ? logit[b] : logit_max;
      }
      Doubles8 esum = zero;
      for (int64_t b = 0; b < nb; ++b) { logit[b] = exp_nonpositive(logit[b] - logit_max); esum += logit[b]; }
      for (int64_t j = 0; j < lanes; ++j) {
        PixelView& pv = views[g + j];
        pv.pix = covered[g + j];
        for (int k = 0; k < 3; ++k) { pv.w[k] = w[k][j]; pv.bary[k] = bary[k][j]; pv.nh[k] = nh[k][j]; pv.dh[k] = dh[k][j]; }
        pv.Sum = Sum[j];
        pv.Ar = Ar[j];
        pv.uv[0] = uv[0][j];
        pv.uv[1] = uv[1][j];
        pv.nl = nl[j];
        pv.dl = dl[j];
        for (int64_t b = 0; b < nb; ++b) {
          for (int i = 0; i < 3; ++i) pv.Rn[b][i] = Rn[b][i][j];
          pv.alpha[b] = float(logit[b][j] / esum[j]);
        }
      }
    }
    for (int64_t k = 0; k < count; ++k) {
      PixelView& pv = views[k];
      const int64_t pix = pv.pix;
      // G below is 0 for s < cl (with clutter) and for an invalid pixel: no gradients needed there
      const float grad_from = valid[pix] == 0 ? std::numeric_limits<float>::infinity()
                                              : (clut ? clut[pix] : -std::numeric_limits<float>::infinity());
      pv.s = gram_score(X, pv.uv[0], pv.uv[1], pv.alpha, nb, frows + pix * d, cached_cell + pix, dots + pix * KP,
                        grad_from, grad ? pv.guv : nullptr, pv.galpha, scratch.data());
    }
    int64_t k = 0;
    for (int64_t pix = b0; pix < b1; ++pix) {
      const double cl = clut ? clut[pix] : 0.0;
      if (win[pix] < 0) {  // off the mesh the rendered feature is zero: score 0
        acc += valid[pix] * (clut ? std::max(0.0, cl) - cl : 0.0);
        continue;
      }
      const PixelView& pv = views[k++];
      const float s = pv.s;
      double G;  // d loss / d s
      if (clut) {
        acc += valid[pix] * (std::max(double(s), cl) - cl);
        G = -valid[pix] / nv * (s > cl ? 1.0 : (s == cl ? 0.5 : 0.0));
      } else {
        acc += valid[pix] * s;
        G = -valid[pix] / nv;
      }
      if (!grad || G == 0) continue;
      const int64_t fi = win[pix];
      const int64_t* vi = A.faces + fi * 3;
      const double* q[3];
      for (int j = 0; j < 3; ++j) q[j] = &scr[vi[j] * 3];
      const double x = pix % W + 0.5, y = pix / W + 0.5;
      const float *alpha = pv.alpha, *galpha = pv.galpha, *guv = pv.guv;
      const double *nh = pv.nh, *dh = pv.dh, *bary = pv.bary, nl = pv.nl, dl = pv.dl;
      // softmax, then T (R_b n) . d, then the two normalisations
      double ga_mean = 0, gn[3] = {0, 0, 0}, gd[3] = {0, 0, 0};
      for (int64_t b = 0; b < nb; ++b) ga_mean += alpha[b] * (G * galpha[b]);
      for (int64_t b = 0; b < nb; ++b) {  // d (R_b n . d) / d n = R_b^T d
        const double* R = A.rot + b * 9;
        const double gl = A.temperature * alpha[b] * (G * galpha[b] - ga_mean);
        for (int i = 0; i < 3; ++i) {
          const double Rtd = R[i] * dh[0] + R[3 + i] * dh[1] + R[6 + i] * dh[2];
          gn[i] += gl * Rtd;
          gd[i] += gl * pv.Rn[b][i];
        }
      }
      double ga6[6], gnd = 0, gdd = 0;  // d loss / d (interpolated normal, position)
      for (int i = 0; i < 3; ++i) { gnd += nh[i] * gn[i]; gdd += dh[i] * gd[i]; }
      for (int i = 0; i < 3; ++i) {
        ga6[i] = nl > 1e-12 ? (gn[i] - nh[i] * gnd) / nl : gn[i] / 1e-12;
        const double gdv = dl > 1e-12 ? (gd[i] - dh[i] * gdd) / dl : gd[i] / 1e-12;
        gcentre[i] += gdv;
        ga6[3 + i] = -gdv;
      }
      double gbary[3];
      for (int j = 0; j < 3; ++j) {
        gbary[j] = G * (guv[0] * A.cuv[(fi * 3 + j) * 2] + guv[1] * A.cuv[(fi * 3 + j) * 2 + 1]);
        for (int i = 0; i < 6; ++i) {
          gbary[j] += ga6[i] * vattr[vi[j] * 6 + i];
          gvattr[vi[j] * 6 + i] += bary[j] * ga6[i];
        }
      }
      barycentric_backward(gbary, bary, pv.w, q, pv.Sum, pv.Ar, x, y, vi, gscr);
    }
  }
  *loss = 1.0 - acc / nv;
}

// Per vertex (V, 6): the unit normal (meshes.vertex_normals: the sum of the adjacent faces' area-weighted normals
// cross(v1 - v0, v2 - v0), F.normalize'd) and the position. `raw` (V, 3) keeps the sums for the backward.
template <typename T>
static void vertex_attributes(const T* verts, const int64_t* faces, int64_t V, int64_t F, double* attr, double* raw) {
  std::fill(raw, raw + V * 3, 0.0);
  for (int64_t f = 0; f < F; ++f) {
    const int64_t* vi = faces + f * 3;
    double e1[3], e2[3];
    for (int i = 0; i < 3; ++i) {
      e1[i] = double(verts[vi[1] * 3 + i]) - verts[vi[0] * 3 + i];
      e2[i] = double(verts[vi[2] * 3 + i]) - verts[vi[0] * 3 + i];
    }
    const double n[3] = {e1[1] * e2[2] - e1[2] * e2[1], e1[2] * e2[0] - e1[0] * e2[2], e1[0] * e2[1] - e1[1] * e2[0]};
    for (int k = 0; k < 3; ++k)
      for (int i = 0; i < 3; ++i) raw[vi[k] * 3 + i] += n[i];
  }
  for (int64_t v = 0; v < V; ++v) {
    const double* r = raw + v * 3;
    const double inv = 1.0 / std::max(std::sqrt(r[0] * r[0] + r[1] * r[1] + r[2] * r[2]), 1e-12);
    for (int i = 0; i < 3; ++i) { attr[v * 6 + i] = r[i] * inv; attr[v * 6 + 3 + i] = verts[v * 3 + i]; }
  }
}

// d loss / d vertices (added to gverts, (V, 3)) from d loss / d vertex_attributes (gattr, (V, 6)).
template <typename T>
static void vertex_attributes_backward(const T* verts, const int64_t* faces, int64_t V, int64_t F, const double* raw,
                                       const double* gattr, double* gverts) {
  std::vector<double> graw(V * 3);
  for (int64_t v = 0; v < V; ++v) {  // through F.normalize, then the position's own gradient
    const double* r = raw + v * 3;
    const double* g = gattr + v * 6;
    const double len = std::sqrt(r[0] * r[0] + r[1] * r[1] + r[2] * r[2]);
    if (len > 1e-12) {
      const double gn = (r[0] * g[0] + r[1] * g[1] + r[2] * g[2]) / (len * len);
      for (int i = 0; i < 3; ++i) graw[v * 3 + i] = (g[i] - r[i] * gn) / len;
    } else {
      for (int i = 0; i < 3; ++i) graw[v * 3 + i] = g[i] / 1e-12;
    }
    for (int i = 0; i < 3; ++i) gverts[v * 3 + i] += g[3 + i];
  }
  for (int64_t f = 0; f < F; ++f) {  // n = e1 x e2: d/de1 = e2 x g, d/de2 = g x e1
    const int64_t* vi = faces + f * 3;
    double e1[3], e2[3], g[3];
    for (int i = 0; i < 3; ++i) {
      e1[i] = double(verts[vi[1] * 3 + i]) - verts[vi[0] * 3 + i];
      e2[i] = double(verts[vi[2] * 3 + i]) - verts[vi[0] * 3 + i];
      g[i] = graw[vi[0] * 3 + i] + graw[vi[1] * 3 + i] + graw[vi[2] * 3 + i];
    }
    const double g1[3] = {e2[1] * g[2] - e2[2] * g[1], e2[2] * g[0] - e2[0] * g[2], e2[0] * g[1] - e2[1] * g[0]};
    const double g2[3] = {g[1] * e1[2] - g[2] * e1[1], g[2] * e1[0] - g[0] * e1[2], g[0] * e1[1] - g[1] * e1[0]};
    for (int i = 0; i < 3; ++i) {
      gverts[vi[1] * 3 + i] += g1[i];
      gverts[vi[2] * 3 + i] += g2[i];
      gverts[vi[0] * 3 + i] -= g1[i] + g2[i];
    }
  }
}

// Item n's loss and (with A.with_grad) its gradient to its camera centre C (3), in-plane rotation theta and its
// vertices vn (gverts, (V, 3), added to). Its camera is centre_pose(C, theta) with principal point (px, py) and focal
// length f; the screen vertices are computed in double and searched for winners in T, the dtype of the vertices
// (render.py's torch backend rasterises in it).
template <typename T>
static void surface_mesh(const SurfaceArgs& A, int64_t n, const double* C, double theta, double px, double py, double f,
                         const T* vn, double* loss, double* gC, double* gtheta, double* gverts) {
  const int64_t V = A.V;
  const CentrePose pose = centre_pose(C, theta);
  std::vector<double> cam(V * 3), scr(V * 3), attr(V * 6), raw(V * 3), gattr(V * 6, 0.0), gscr(V * 3, 0.0);
  std::vector<T> screen(V * 3);
  const double t[3] = {0, 0, -pose.d};
  for (int64_t v = 0; v < V; ++v) {
    project_vertex(pose.R, t, px, py, f, vn + v * 3, &cam[v * 3], &scr[v * 3]);
    for (int i = 0; i < 3; ++i) screen[v * 3 + i] = T(scr[v * 3 + i]);
  }
  vertex_attributes(vn, A.faces, V, A.F, attr.data(), raw.data());
  double gcentre[3] = {0, 0, 0};
  surface_item<T>(A, n, screen.data(), scr.data(), attr.data(), C, loss, gscr.data(), gattr.data(), gcentre);
  if (!A.with_grad) return;
  vertex_attributes_backward(vn, A.faces, V, A.F, raw.data(), gattr.data(), gverts);
  double gR[9] = {0}, gd = 0;  // through the projection and R v + t, t = (0, 0, -|C|)
  for (int64_t v = 0; v < V; ++v) {
    if (gscr[v * 3] == 0 && gscr[v * 3 + 1] == 0 && gscr[v * 3 + 2] == 0) continue;
    double gc[3];
    project_vertex_backward(&gscr[v * 3], &cam[v * 3], &scr[v * 3], f, gc);
    gd -= gc[2];
    for (int i = 0; i < 3; ++i)
      for (int j = 0; j < 3; ++j) {
        gR[i * 3 + j] += gc[i] * vn[v * 3 + j];
        gverts[v * 3 + j] += pose.R[i * 3 + j] * gc[i];
      }
  }
  centre_pose_backward(pose, C, gR, gd, gC, gtheta);
  for (int i = 0; i < 3; ++i) gC[i] += gcentre[i];
}

// NTDM's deformation network (deformable.StackedMeshes) with fixed per-item weights, for item n:
// h = softplus(base[n] + latent[n]), h = softplus(h W_l[n] + b_l[n]) for each body layer, vertices =
// (template + h W_head[n] + b_head[n]) * scale[n] * instance_scale[n] (the head is the last of the L layers).
struct DeformNet {
  torch::Tensor base, template_, scale;
  std::vector<torch::Tensor> weights, biases;
  double beta, threshold;
};

// exp and log (u >= 1) of 16 floats: Cephes' single-precision range reductions and polynomials (about 1 ulp).
static inline __attribute__((always_inline)) Lanes16 exp_lanes(Lanes16 x) {
  const Lanes16 zero{}, one = zero + 1.f;
  const Lanes16 c = x < -87.f ? zero - 87.f : (x > 88.f ? zero + 88.f : x);
  const Lanes16 t = c * 1.44269504088896341f + 0.5f;  // n = floor(c log2(e) + 1/2)
  Lanes16 n = __builtin_convertvector(__builtin_convertvector(t, Ints16), Lanes16);
  n -= n > t ? one : zero;
  const Lanes16 r = c - n * 0.693359375f + n * 2.12194440e-4f;
  Lanes16 p = r * 1.9875691500e-4f + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * (r * r) + r + 1.f;
  const Ints16 bits = (__builtin_convertvector(n, Ints16) + 127) << 23;
  Lanes16 scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return x < -87.f ? zero : p * scale;
}

static inline __attribute__((always_inline)) Lanes16 log_lanes(Lanes16 u) {  // u >= 1
  Ints16 bits;
  std::memcpy(&bits, &u, sizeof bits);
  Lanes16 e = __builtin_convertvector((bits >> 23) - 126, Lanes16);
  const Ints16 mbits = (bits & 0x007fffff) | 0x3f000000;  // u = m 2^e, m in [0.5, 1)
  Lanes16 m;
  std::memcpy(&m, &mbits, sizeof m);
  const Lanes16 small = m < 0.707106781186547524f ? Lanes16{} + 1.f : Lanes16{};
  e -= small;
  m = m + m * small - 1.f;
  const Lanes16 z = m * m;
  Lanes16 y = m * 7.0376836292e-2f - 1.1514610310e-1f;
  y = y * m + 1.1676998740e-1f;
  y = y * m - 1.2420140846e-1f;
  y = y * m + 1.4249322787e-1f;
  y = y * m - 1.6668057665e-1f;
  y = y * m + 2.0000714765e-1f;
  y = y * m - 2.4999993993e-1f;
  y = y * m + 3.3333331174e-1f;
  y = y * m * z - e * 2.12194440e-4f - 0.5f * z;
  return m + y + e * 0.693359375f;
}

static inline __attribute__((always_inline)) void softplus_lanes(const float* x, float* y, float* sigma, float beta,
                                                                  float threshold) {
  Lanes16 v;
  std::memcpy(&v, x, sizeof v);
  const Lanes16 bx = v * beta, z = exp_lanes(bx), u = z + 1.f;
  const Lanes16 lg = u == 1.f ? z : log_lanes(u) * z / (u - 1.f);
  const Lanes16 out = bx > threshold ? v : lg / beta, sig = bx > threshold ? Lanes16{} + 1.f : z / u;
  std::memcpy(y, &out, sizeof out);
  std::memcpy(sigma, &sig, sizeof sig);
}

// softplus(x) = log1p(exp(beta x)) / beta (x itself where beta x > threshold) of n floats, and its derivative
// sigma = z / (1 + z), z = exp(beta x) (1 past the threshold), kept for the backward. torch's softplus takes Sleef's
// log1pf, which costs more than the network's matrix products, and its backward takes exp again; here log1p(z) =
// log(u) z / (u - 1), u = 1 + z (Kahan's formula), so the kernel's network differs from torch's by float roundings.
__attribute__((target_clones("avx512f", "avx2", "default")))
static void softplus_forward(const float* x, float* y, float* sigma, int64_t n, float beta, float threshold) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) softplus_lanes(x + i, y + i, sigma + i, beta, threshold);
  if (i == n) return;
  float xt[16] = {0}, yt[16], st[16];
  std::copy(x + i, x + n, xt);
  softplus_lanes(xt, yt, st, beta, threshold);
  std::copy(yt, yt + (n - i), y + i);
  std::copy(st, st + (n - i), sigma + i);
}

// One item's activations and gradients, allocated once per fit: the (V, H) tensors are past malloc's mmap threshold,
// so allocating them every step cost more in fresh zeroed pages than the network's arithmetic.
struct DeformBuffers {
  std::vector<torch::Tensor> pre, sigma;  // each layer's input pre-activation and softplus derivative (V, H)
  torch::Tensor act, head, shape, grad_a, grad_b;  // (V, H), (V, 3), (V, 3), (V, H), (V, H)
};

static DeformBuffers deform_buffers(const DeformNet& D) {
  const int64_t V = D.template_.size(0), H = D.base.size(2);
  auto opt = D.base.options();
  DeformBuffers B;
  for (size_t l = 0; l < D.weights.size(); ++l) {
    B.pre.push_back(torch::empty({V, H}, opt));
    B.sigma.push_back(torch::empty({V, H}, opt));
  }
  B.act = torch::empty({V, H}, opt);
  B.head = torch::empty({V, 3}, opt);
  B.shape = torch::empty({V, 3}, opt);
  B.grad_a = torch::empty({V, H}, opt);
  B.grad_b = torch::empty({V, H}, opt);
  return B;
}

// Item n's vertices (V, 3) for its latent term (H,) and instance scale (3,); B keeps each layer's input
// pre-activation and the unscaled vertices for the backward.
static torch::Tensor deform_item(const DeformNet& D, int64_t n, const torch::Tensor& latent,
                                 const torch::Tensor& instance_scale, DeformBuffers& B) {
  at::add_out(B.pre[0], D.base[n], latent);
  const size_t L = D.weights.size();
  for (size_t l = 0; l < L; ++l) {
    softplus_forward(B.pre[l].data_ptr<float>(), B.act.data_ptr<float>(), B.sigma[l].data_ptr<float>(),
                     B.act.numel(), float(D.beta), float(D.threshold));
    at::addmm_out(l + 1 < L ? B.pre[l + 1] : B.head, D.biases[l][n], B.act, D.weights[l][n]);
  }
  at::add_out(B.shape, D.template_, B.head);
  return B.shape * D.scale[n] * instance_scale;
}

// d loss / d latent (H,) and d loss / d instance scale (3,), written to grad_latent and grad_scale, from
// d loss / d item n's vertices g.
static void deform_item_backward(const DeformNet& D, int64_t n, const torch::Tensor& g, const torch::Tensor& instance_scale,
                                 DeformBuffers& B, torch::Tensor grad_latent, torch::Tensor grad_scale) {
  grad_scale.copy_((g * B.shape * D.scale[n]).sum(0));
  torch::Tensor gh = g * (D.scale[n] * instance_scale);
  for (int64_t l = int64_t(D.weights.size()) - 1; l >= 0; --l) {
    at::mm_out(B.grad_a, gh, D.weights[l][n].t());
    gh = at::mul_out(B.grad_b, B.grad_a, B.sigma[l]);
  }
  grad_latent.copy_(gh.sum(0));
}

// DeformNetwork.constants: base, template, scale, then the L weights and the L biases.
static DeformNet deform_net(const std::vector<torch::Tensor>& network, double beta, double threshold) {
  const size_t L = (network.size() - 3) / 2;
  return {network[0], network[1], network[2], {network.begin() + 3, network.begin() + 3 + L},
          {network.begin() + 3 + L, network.end()}, beta, threshold};
}

// The inputs of surface_loss as the kernel reads them (converted once, kept alive by `keep`).
static SurfaceArgs surface_args(std::vector<torch::Tensor>& keep, int64_t N, int64_t V, torch::Tensor faces,
                                torch::Tensor corner_uv, torch::Tensor rotations, double temperature,
                                std::vector<torch::Tensor> texels, std::vector<torch::Tensor> grams,
                                std::vector<torch::Tensor> gram_states, torch::Tensor item_model, torch::Tensor feats,
                                torch::Tensor image, torch::Tensor clut, torch::Tensor valid, torch::Tensor cached_cell,
                                torch::Tensor dots, int64_t H, int64_t W, bool with_grad) {
  faces = faces.to(torch::kLong).contiguous();
  corner_uv = corner_uv.to(torch::kDouble).contiguous();
  rotations = rotations.to(torch::kDouble).contiguous();
  for (auto& t : texels) t = t.to(torch::kFloat).contiguous();
  item_model = item_model.to(torch::kLong).contiguous();
  feats = feats.to(torch::kFloat).contiguous();
  image = image.to(torch::kLong).contiguous();
  const bool use_clutter = clut.numel() > 0;
  if (use_clutter) clut = clut.to(torch::kFloat).contiguous();
  valid = valid.to(torch::kFloat).contiguous();
  keep.insert(keep.end(), {faces, corner_uv, rotations, item_model, feats, image, clut, valid});
  keep.insert(keep.end(), texels.begin(), texels.end());
  const int64_t F = faces.size(0), nb = rotations.size(0);
  TORCH_CHECK(nb <= 7, "surface_loss: at most 7 bins");
  TORCH_CHECK(corner_uv.size(0) == F, "surface_loss: corner_uv (F, 3, 2)");
  SurfaceArgs A{faces.data_ptr<int64_t>(), corner_uv.data_ptr<double>(), rotations.data_ptr<double>(), temperature,
                V, F, H, W, nb, {}, item_model.data_ptr<int64_t>(), image.data_ptr<int64_t>(),
                feats.data_ptr<float>(), use_clutter ? clut.data_ptr<float>() : nullptr, valid.data_ptr<float>(),
                nullptr, nullptr, with_grad};
  const int64_t NB = texels.at(0).size(2);
  TORCH_CHECK(grams.size() == texels.size() && gram_states.size() == texels.size(),
              "surface_loss: one Gram cache per texture");
  for (size_t i = 0; i < texels.size(); ++i) {
    auto& t = texels[i];
    TORCH_CHECK(t.size(2) == NB && NB >= nb && NB <= 7 && t.size(3) == feats.size(1),
                "surface_loss: texels (q, q, NB >= nb, d)");
    TORCH_CHECK(grams[i].dtype() == torch::kFloat && grams[i].is_contiguous()
                && grams[i].numel() == t.size(0) * t.size(1) * 4 * NB * KP && gram_states[i].dtype() == torch::kInt
                && gram_states[i].is_contiguous() && gram_states[i].numel() == t.size(0) * t.size(1),
                "surface_loss: Gram cache (q * q, 4 NB, 32), state (q * q,)");
    A.textures.push_back({t.data_ptr<float>(), t.size(0), NB, t.size(3), grams[i].data_ptr<float>(),
                          gram_states[i].data_ptr<int32_t>()});
  }
  TORCH_CHECK(cached_cell.dtype() == torch::kInt && cached_cell.is_contiguous() && cached_cell.numel() == N * H * W
              && dots.dtype() == torch::kFloat && dots.is_contiguous() && dots.numel() == N * H * W * KP,
              "surface_loss: dot cache cell (N, h * w) int32, dots (N, h * w, 32) float32");
  A.cached_cell = cached_cell.data_ptr<int32_t>();
  A.dots = dots.data_ptr<float>();
  return A;
}

// surface_loss's per-mesh tasks (a function of its own: OpenMP pragmas cannot sit in AT_DISPATCH's macro argument).
template <typename T>
static void surface_meshes(const SurfaceArgs& A, const torch::Tensor& verts, const torch::Tensor& C,
                           const torch::Tensor& theta, const torch::Tensor& principal, const torch::Tensor& focal,
                           int64_t threads, torch::Tensor& loss, torch::Tensor& gC, torch::Tensor& gtheta,
                           torch::Tensor& gverts) {
  const int64_t N = C.size(0), V = A.V;
  const double *Cp = C.data_ptr<double>(), *thp = theta.data_ptr<double>(), *pp = principal.data_ptr<double>(),
               *fp = focal.data_ptr<double>();
  double *lp = loss.data_ptr<double>(), *gCp = gC.data_ptr<double>(), *gthp = gtheta.data_ptr<double>(),
         *gvp = gverts.data_ptr<double>();
  const T* vp = verts.data_ptr<T>();
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
  for (int64_t n = 0; n < N; ++n)
    surface_mesh<T>(A, n, Cp + n * 3, thp[n], pp[n * 2], pp[n * 2 + 1], fp[n], vp + n * V * 3, lp + n, gCp + n * 3,
                    gthp + n, gvp + n * V * 3);
}

// NTDM's loss of N meshes (N, V, 3): one parallel region, a whole mesh per task, on the caller's threads (not
// torch's: the loop around runs torch on fewer). Returns loss (N,), d loss / d C, theta and vertices.
std::vector<torch::Tensor> surface_loss(torch::Tensor C, torch::Tensor theta, torch::Tensor verts,
                                        torch::Tensor principal, torch::Tensor focal, torch::Tensor faces,
                                        torch::Tensor corner_uv, torch::Tensor rotations, double temperature,
                                        std::vector<torch::Tensor> texels, std::vector<torch::Tensor> grams,
                                        std::vector<torch::Tensor> gram_states, torch::Tensor item_model,
                                        torch::Tensor feats, torch::Tensor image, torch::Tensor clut,
                                        torch::Tensor valid, torch::Tensor cached_cell, torch::Tensor dots, int64_t H,
                                        int64_t W, bool with_grad, int64_t threads) {
  C = C.to(torch::kDouble).contiguous();
  theta = theta.to(torch::kDouble).contiguous();
  principal = principal.to(torch::kDouble).contiguous();
  focal = focal.to(torch::kDouble).contiguous();
  verts = verts.contiguous();
  const int64_t N = C.size(0), V = verts.size(1);
  TORCH_CHECK(theta.numel() == N && principal.size(0) == N && focal.numel() == N && verts.size(0) == N
              && verts.size(2) == 3, "surface_loss: C (N, 3), theta (N,), vertices (N, V, 3), principal (N, 2), focal (N,)");
  std::vector<torch::Tensor> keep;
  const SurfaceArgs A = surface_args(keep, N, V, faces, corner_uv, rotations, temperature, texels, grams, gram_states,
                                     item_model, feats, image, clut, valid, cached_cell, dots, H, W, with_grad);
  auto dopt = torch::TensorOptions().dtype(torch::kDouble);
  torch::Tensor loss = torch::zeros({N}, dopt), gC = torch::zeros({N, 3}, dopt), gtheta = torch::zeros({N}, dopt);
  torch::Tensor gverts = torch::zeros({N, V, 3}, dopt);
  AT_DISPATCH_FLOATING_TYPES(verts.scalar_type(), "surface_loss", [&] {
    surface_meshes<scalar_t>(A, verts, C, theta, principal, focal, std::max<int64_t>(1, std::min(threads, N)), loss,
                             gC, gtheta, gverts);
  });
  return {loss, gC, gtheta, gverts};
}

// NTDM's optimisation of pose, latent and instance scale (inference.fit_categories' torch loop with
// render_compare.PoseOptimizer): `steps` Adam steps with lr * gamma after every `every` steps, the latent z kept on
// the simplex (`simplex`) and log s' clamped to [-bound, bound] (bound 0: unbounded); `shape` false fixes z.
struct FitSettings {
  int64_t steps, every;
  double lr, beta1, beta2, eps, gamma, bound;
  bool shape, simplex;
};

// One float element's Adam update as torch's fused CPU Adam makes it for the elements past its last full vector (all
// of a tensor shorter than one): float arithmetic, exp_avg.lerp_(g, 1 - beta1) as a fused multiply-add (as its
// vectorised form). Per element, so an item's fit does not depend on how many items share the batch (torch's does,
// through which elements fall in a full vector). With the network's own softplus, a fit follows the torch loop to
// float roundings (test: to 1e-5 after 6 steps).
static inline void adam_update(float& p, float& m, float& v, float g, const FitSettings& S, float step_size,
                               float bc2_sqrt) {
  const float w = float(1 - S.beta1);
  m = std::abs(w) < 0.5f ? std::fma(w, g - m, m) : std::fma(w - 1.f, g - m, g);
  v = v * float(S.beta2) + float(1 - S.beta2) * g * g;
  p = p - step_size * m / (std::sqrt(v) / bc2_sqrt + float(S.eps));
}

// inference.project_simplex of one row z (K,) in its float arithmetic (torch's CPU cumsum accumulates in double).
static void project_simplex(float* z, int64_t K) {
  std::vector<float> u(z, z + K), css(K);
  std::sort(u.begin(), u.end(), std::greater<float>());
  double run = 0;
  int64_t rho = 0;
  for (int64_t i = 0; i < K; ++i) {
    run += u[i];
    css[i] = float(run) - 1.f;
    if (u[i] - css[i] / float(i + 1) > 0) rho = i;
  }
  const float shift = css[rho] / float(rho + 1);
  for (int64_t i = 0; i < K; ++i) z[i] = std::max(z[i] - shift, 0.f);
}

// Item n's whole optimisation, its parameters updated in place: C (3), theta, log s' (3) and z (K) with latent
// weights `weight` (K, H), then its loss at the final parameters. Each step is surface_loss for this item followed by
// what autograd and the optimiser do with it in torch: the gradients cast to float, through latent = z weight and
// s' = exp(log s'), then Adam, the simplex projection and the clamp.
static void fit_item(const SurfaceArgs& A, const SurfaceArgs& loss_only, const DeformNet& D, const FitSettings& S,
                     int64_t n, const torch::Tensor& weight, float* C, float* theta, float* log_scale, float* z,
                     double px, double py, double f, float* final_loss) {
  at::NoGradGuard no_autograd;  // grad mode is per thread: the Python caller's no_grad does not reach OpenMP's
  const int64_t K = weight.size(0), P = 7 + K;  // C, theta, log s', z
  auto fopt = torch::TensorOptions().dtype(torch::kFloat);
  const torch::Tensor zrow = torch::from_blob(z, {1, K}, fopt), log_s = torch::from_blob(log_scale, {3}, fopt);
  torch::Tensor gverts = torch::empty({A.V, 3}, torch::TensorOptions().dtype(torch::kDouble));
  torch::Tensor glatent = torch::empty({1, weight.size(1)}, fopt), gscale = torch::empty({3}, fopt);
  float* params[] = {C, C + 1, C + 2, theta, log_scale, log_scale + 1, log_scale + 2};
  std::vector<float> m(P, 0.f), v(P, 0.f), g(P);
  DeformBuffers net = deform_buffers(D);
  double lr = S.lr;
  for (int64_t step = 1;; ++step) {
    const bool last = step > S.steps;
    const torch::Tensor scale = at::exp(log_s);  // torch's exp (MKL's), not libm's: the same roundings
    const float* s = scale.data_ptr<float>();
    const torch::Tensor vn = deform_item(D, n, at::mm(zrow, weight)[0], scale, net).contiguous();
    const double Cd[3] = {C[0], C[1], C[2]};
    double loss = 0, gC[3] = {0, 0, 0}, gtheta = 0;
    gverts.zero_();
    surface_mesh<float>(last ? loss_only : A, n, Cd, *theta, px, py, f, vn.data_ptr<float>(), &loss, gC, &gtheta,
                        gverts.data_ptr<double>());
    if (last) {
      *final_loss = float(loss);
      return;
    }
    deform_item_backward(D, n, gverts.to(torch::kFloat), scale, net, glatent[0], gscale);
    for (int i = 0; i < 3; ++i) {
      g[i] = float(gC[i]);
      g[4 + i] = gscale.data_ptr<float>()[i] * s[i];
    }
    g[3] = float(gtheta);
    const int64_t updated = S.shape ? P : 7;
    if (S.shape) {
      const torch::Tensor gz = at::mm(glatent, weight.t());
      for (int64_t k = 0; k < K; ++k) g[7 + k] = gz.data_ptr<float>()[k];
    }
    const float step_size = float(lr / (1 - std::pow(S.beta1, double(step))));
    const float bc2_sqrt = float(std::sqrt(1 - std::pow(S.beta2, double(step))));
    for (int64_t i = 0; i < updated; ++i)
      adam_update(i < 7 ? *params[i] : z[i - 7], m[i], v[i], g[i], S, step_size, bc2_sqrt);
    if (S.shape && S.simplex) project_simplex(z, K);
    if (S.bound > 0)
      for (int i = 0; i < 3; ++i) log_scale[i] = std::min(std::max(log_scale[i], float(-S.bound)), float(S.bound));
    if (step % S.every == 0) lr *= S.gamma;
  }
}

static void fit_items(const SurfaceArgs& A, const DeformNet& D, const FitSettings& S,
                      const std::vector<torch::Tensor>& latent_weights, torch::Tensor& C, torch::Tensor& theta,
                      torch::Tensor& log_scale, torch::Tensor& z, const torch::Tensor& principal,
                      const torch::Tensor& focal, torch::Tensor& loss, int64_t threads) {
  SurfaceArgs loss_only = A;
  loss_only.with_grad = false;
  const int64_t N = C.size(0), Kmax = z.size(1);
  const double *pp = principal.data_ptr<double>(), *fp = focal.data_ptr<double>();
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
  for (int64_t n = 0; n < N; ++n)
    fit_item(A, loss_only, D, S, n, latent_weights[A.item_model[n]], C.data_ptr<float>() + n * 3,
                theta.data_ptr<float>() + n, log_scale.data_ptr<float>() + n * 3, z.data_ptr<float>() + n * Kmax,
                pp[n * 2], pp[n * 2 + 1], fp[n], loss.data_ptr<float>() + n);
}

// NTDM's whole optimisation of N items from their starts (C (N, 3), theta (N,), log s' (N, 3), z (N, Kmax), item n
// using the first K of latent_weights[item_model[n]] (K, H) columns), the other inputs as surface_loss's: one task
// per item for all its steps, so threads never wait for each other within a fit. Returns the final C, theta, log s',
// z and loss (N,), all float32.
std::vector<torch::Tensor> surface_fit(torch::Tensor C, torch::Tensor theta, torch::Tensor log_scale, torch::Tensor z,
                                       std::vector<torch::Tensor> latent_weights, torch::Tensor principal,
                                       torch::Tensor focal, std::vector<torch::Tensor> network, double beta,
                                       double threshold, torch::Tensor faces, torch::Tensor corner_uv,
                                       torch::Tensor rotations, double temperature, std::vector<torch::Tensor> texels,
                                       std::vector<torch::Tensor> grams, std::vector<torch::Tensor> gram_states,
                                       torch::Tensor item_model, torch::Tensor feats, torch::Tensor image,
                                       torch::Tensor clut, torch::Tensor valid, torch::Tensor cached_cell,
                                       torch::Tensor dots, int64_t H, int64_t W, int64_t steps, int64_t every,
                                       double lr, double beta1, double beta2, double gamma, double bound, bool shape,
                                       bool simplex, int64_t threads) {
  C = C.to(torch::kFloat).clone().contiguous();
  theta = theta.to(torch::kFloat).clone().contiguous();
  log_scale = log_scale.to(torch::kFloat).clone().contiguous();
  z = z.to(torch::kFloat).clone().contiguous();
  principal = principal.to(torch::kDouble).contiguous();
  focal = focal.to(torch::kDouble).contiguous();
  const DeformNet D = deform_net(network, beta, threshold);
  TORCH_CHECK(D.template_.scalar_type() == torch::kFloat, "surface_fit: float32 meshes");
  for (auto& w : latent_weights) w = w.to(torch::kFloat);  // its layout kept: the same matrix products as torch
  const int64_t N = C.size(0), V = D.template_.size(0);
  TORCH_CHECK(theta.numel() == N && log_scale.size(0) == N && z.size(0) == N && principal.size(0) == N
              && focal.numel() == N && every >= 1,
              "surface_fit: C (N, 3), theta (N,), log_scale (N, 3), z (N, K), principal (N, 2), focal (N,)");
  std::vector<torch::Tensor> keep;
  const SurfaceArgs A = surface_args(keep, N, V, faces, corner_uv, rotations, temperature, texels, grams, gram_states,
                                     item_model, feats, image, clut, valid, cached_cell, dots, H, W, true);
  for (int64_t n = 0; n < N; ++n)
    TORCH_CHECK(A.item_model[n] >= 0 && A.item_model[n] < int64_t(latent_weights.size())
                && latent_weights[A.item_model[n]].size(0) <= z.size(1), "surface_fit: one latent weight per model");
  const FitSettings S{steps, every, lr, beta1, beta2, 1e-8, gamma, bound, shape, simplex};
  torch::Tensor loss = torch::zeros({N}, torch::TensorOptions().dtype(torch::kFloat));
  pybind11::gil_scoped_release free_python;  // a fit takes a second: other Python threads may run meanwhile
  fit_items(A, D, S, latent_weights, C, theta, log_scale, z, principal, focal, loss,
                   std::max<int64_t>(1, std::min(threads, N)));
  return {C, theta, log_scale, z, loss};
}

// softplus_forward of a float32 tensor: (softplus, derivative).
std::vector<torch::Tensor> softplus(torch::Tensor x, double beta, double threshold) {
  x = x.to(torch::kFloat).contiguous();
  torch::Tensor y = torch::empty_like(x), sigma = torch::empty_like(x);
  softplus_forward(x.data_ptr<float>(), y.data_ptr<float>(), sigma.data_ptr<float>(), x.numel(), float(beta),
                   float(threshold));
  return {y, sigma};
}

// exp_nonpositive of a float64 tensor, 8 at a time (the rest padded with 0).
torch::Tensor exp_softmax(torch::Tensor x) {
  x = x.to(torch::kDouble).contiguous();
  torch::Tensor y = torch::empty_like(x);
  const double* xp = x.data_ptr<double>();
  double* yp = y.data_ptr<double>();
  for (int64_t i = 0; i < x.numel(); i += 8) {
    Doubles8 v{};
    const int64_t m = std::min<int64_t>(8, x.numel() - i);
    std::copy(xp + i, xp + i + m, &v[0]);
    const Doubles8 e = exp_nonpositive(v);
    std::copy(&e[0], &e[0] + m, yp + i);
  }
  return y;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("softplus", &softplus, "the kernel network's softplus and its derivative (CPU)");
  m.def("exp_softmax", &exp_softmax, "the exp of NTDM's view-coefficient softmax, for x <= 0 (CPU)");
  m.def("pix_to_face", &pix_to_face, "winning face per pixel, as render.py's torch backend (CPU)");
  m.def("pose_score_loss", &pose_score_loss, "the same for a camera centre and theta");
  m.def("surface_fit", &surface_fit, "NTDM's whole optimisation of pose, latent and instance scale (CPU)");
  m.def("surface_loss", &surface_loss, "NTDM's render-and-compare loss of deformed meshes and its gradient (CPU)");
  m.def("start_pairs", &start_pairs, "the init search's image-independent point data (CPU)");
  m.def("start_scores", &start_scores, "the init search's point scores from distinct texel-feature pairs (CPU)");
  m.def("texture_score", &texture_score, "NTDM's blended neural-texture score at surface points and its gradient (CPU)");
  m.def("render_score_loss", &render_score_loss, "NeMo loss of a rasterised mesh and its gradient (CPU)");
}
