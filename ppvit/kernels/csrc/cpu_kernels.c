/* ppvit's CPU kernels: exact GELU and LayerNorm (forward and backward) on contiguous float32 arrays.
 *
 * Plain C (no Paddle or Python headers), compiled on the user's machine at first use by ppvit/kernels/native.py
 * and called through ctypes on the tensors' memory. Paddle's own CPU kernels for these ops are scalar loops
 * (its GELU backward calls erf and exp per element); these loops vectorise (the exp below is a polynomial, the
 * erf an erfc rational approximation with relative error < 1.2e-7) and split across OpenMP threads when built
 * with OpenMP (linked against the OpenMP runtime Paddle already loaded, so one thread pool).
 *
 * GELU is the exact (erf) form: gelu(x) = x * Phi(x), Phi(x) = erfc(-x / sqrt(2)) / 2.
 * LayerNorm normalises over a contiguous last axis ("rows", as nn.LayerNorm) or over the channel axis of a
 * [B, C, S] array ("channels first", LayerNorm2d), with the variance of the centred values (two passes).
 * Accuracy: the tests compare every function with Paddle's op, forward and gradients, to 1e-5.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>
#include <stdlib.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#define INV_SQRT2 0.70710678118654752f
#define INV_SQRT_2PI 0.39894228040143268f

/* exp(x) for x in float range, ~1 ulp (Cephes' expf polynomial); branch-free so that loops vectorise. */
static inline float exp_v(float x) {
    x = x < -87.0f ? -87.0f : x;  /* comparisons rather than fminf/fmaxf: they vectorise; NaN stays NaN */
    x = x > 88.0f ? 88.0f : x;
    float n = floorf(x * 1.44269504088896341f + 0.5f);
    float r = x - n * 0.693359375f + n * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    union { int32_t i; float f; } s;
    s.i = ((int32_t)n + 127) << 23;
    return p * s.f;
}

/* Phi(x) = P(N(0,1) <= x) and the normal density at x. erfc from Numerical Recipes' erfcc (relative error
 * < 1.2e-7 for every argument), so Phi keeps its relative accuracy in the left tail too. */
static inline void phi_v(float x, float *cdf, float *pdf) {
    float z = x * INV_SQRT2;
    float az = fabsf(z);
    float t = 1.0f / (1.0f + 0.5f * az);
    float poly = -1.26551223f + t * (1.00002368f + t * (0.37409196f + t * (0.09678418f + t * (-0.18628806f +
                 t * (0.27886807f + t * (-1.13520398f + t * (1.48851587f + t * (-0.82215223f + t * 0.17087277f))))))));
    float half_erfc = 0.5f * t * exp_v(-az * az + poly);  /* erfc(|z|) / 2 */
    *cdf = z >= 0.0f ? 1.0f - half_erfc : half_erfc;
    *pdf = INV_SQRT_2PI * exp_v(-0.5f * x * x);
}

/* dw[c] and db[c] (either may be NULL) from per-thread partials laid out [threads, 2, C] (dw's, then db's),
 * added in thread order. */
static void sum_partials(const float *partials, float *dw, float *db, int64_t C, int nthreads) {
    for (int k = 0; k < 2; ++k) {
        float *out = k == 0 ? dw : db;
        if (!out) continue;
        for (int64_t c = 0; c < C; ++c) out[c] = 0.0f;
        for (int t = 0; t < nthreads; ++t)
            for (int64_t c = 0; c < C; ++c) out[c] += partials[((size_t)t * 2 + k) * C + c];
    }
}

void ppvit_gelu_fwd(const float *x, float *y, int64_t n) {
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i) {
        float cdf, pdf;
        phi_v(x[i], &cdf, &pdf);
        y[i] = x[i] * cdf;
    }
}

/* dx = g * (Phi(x) + x * phi(x)) */
void ppvit_gelu_bwd(const float *x, const float *g, float *dx, int64_t n) {
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i) {
        float cdf, pdf;
        phi_v(x[i], &cdf, &pdf);
        dx[i] = g[i] * (cdf + x[i] * pdf);
    }
}

/* ---- LayerNorm over the last axis: x [rows, C] ---- */
void ppvit_ln_fwd(const float *x, const float *w, const float *b, float *y, float *mean, float *rstd,
                  int64_t rows, int64_t C, float eps) {
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
        const float *xr = x + r * C;
        float *yr = y + r * C;
        float s = 0.0f;
        for (int64_t c = 0; c < C; ++c) s += xr[c];
        float m = s / (float)C;
        float v = 0.0f;
        for (int64_t c = 0; c < C; ++c) { float d = xr[c] - m; v += d * d; }
        float rs = 1.0f / sqrtf(v / (float)C + eps);
        mean[r] = m;
        rstd[r] = rs;
        if (w && b) {
            for (int64_t c = 0; c < C; ++c) yr[c] = (xr[c] - m) * rs * w[c] + b[c];
        } else if (w) {
            for (int64_t c = 0; c < C; ++c) yr[c] = (xr[c] - m) * rs * w[c];
        } else {
            for (int64_t c = 0; c < C; ++c) yr[c] = (xr[c] - m) * rs;
        }
    }
}

/* dx = rstd * (gw - mean(gw) - xhat * mean(gw * xhat)), gw = g * w; dw = sum_rows g * xhat; db = sum_rows g.
 * dw/db (C floats each, may be NULL) are summed per thread in `work` ([threads, 2, C], zeroed here) and added
 * in a fixed order, so results do not depend on scheduling beyond the static partition. */
void ppvit_ln_bwd(const float *x, const float *g, const float *w, const float *mean, const float *rstd,
                  float *dx, float *dw, float *db, float *work, int64_t rows, int64_t C, int nthreads) {
    memset(work, 0, sizeof(float) * (size_t)nthreads * 2 * (size_t)C);
#pragma omp parallel num_threads(nthreads)
    {
        int tid = 0;
#ifdef _OPENMP
        tid = omp_get_thread_num();
#endif
        float *pdw = work + (size_t)tid * 2 * C;
        float *pdb = pdw + C;
#pragma omp for schedule(static)
        for (int64_t r = 0; r < rows; ++r) {
            const float *xr = x + r * C, *gr = g + r * C;
            float *dxr = dx + r * C;
            float m = mean[r], rs = rstd[r];
            float a = 0.0f, cc = 0.0f;
            for (int64_t c = 0; c < C; ++c) {
                float xh = (xr[c] - m) * rs;
                float gw = w ? gr[c] * w[c] : gr[c];
                a += gw;
                cc += gw * xh;
                pdw[c] += gr[c] * xh;
                pdb[c] += gr[c];
            }
            a /= (float)C;
            cc /= (float)C;
            for (int64_t c = 0; c < C; ++c) {
                float xh = (xr[c] - m) * rs;
                float gw = w ? gr[c] * w[c] : gr[c];
                dxr[c] = rs * (gw - a - xh * cc);
            }
        }
    }
    sum_partials(work, dw, db, C, nthreads);
}

/* ---- LayerNorm over the channels of x [B, C, S] (S = H*W; LayerNorm2d) ----
 * Each (b, s) is normalised over c; the loops run along s (contiguous) with per-position sums in `work`
 * ([threads, 2, S]). */
void ppvit_ln_cf_fwd(const float *x, const float *w, const float *b, float *y, float *mean, float *rstd,
                     float *work, int64_t B, int64_t C, int64_t S, float eps, int nthreads) {
#pragma omp parallel for schedule(static) num_threads(nthreads)
    for (int64_t bi = 0; bi < B; ++bi) {
        int tid = 0;
#ifdef _OPENMP
        tid = omp_get_thread_num();
#endif
        float *sum = work + (size_t)tid * 2 * S, *var = sum + S;
        const float *xb = x + bi * C * S;
        float *yb = y + bi * C * S, *mb = mean + bi * S, *rb = rstd + bi * S;
        for (int64_t s = 0; s < S; ++s) { sum[s] = 0.0f; var[s] = 0.0f; }
        for (int64_t c = 0; c < C; ++c)
            for (int64_t s = 0; s < S; ++s) sum[s] += xb[c * S + s];
        for (int64_t s = 0; s < S; ++s) mb[s] = sum[s] / (float)C;
        for (int64_t c = 0; c < C; ++c)
            for (int64_t s = 0; s < S; ++s) { float d = xb[c * S + s] - mb[s]; var[s] += d * d; }
        for (int64_t s = 0; s < S; ++s) rb[s] = 1.0f / sqrtf(var[s] / (float)C + eps);
        for (int64_t c = 0; c < C; ++c) {
            float wc = w ? w[c] : 1.0f, bc = b ? b[c] : 0.0f;
            for (int64_t s = 0; s < S; ++s) yb[c * S + s] = (xb[c * S + s] - mb[s]) * rb[s] * wc + bc;
        }
    }
}

/* work: [threads, 2, S] for the per-position sums, then [threads, 2, C] for dw/db. */
void ppvit_ln_cf_bwd(const float *x, const float *g, const float *w, const float *mean, const float *rstd,
                     float *dx, float *dw, float *db, float *work, int64_t B, int64_t C, int64_t S,
                     int nthreads) {
    float *wparam = work + (size_t)nthreads * 2 * S;
    memset(wparam, 0, sizeof(float) * (size_t)nthreads * 2 * (size_t)C);
#pragma omp parallel for schedule(static) num_threads(nthreads)
    for (int64_t bi = 0; bi < B; ++bi) {
        int tid = 0;
#ifdef _OPENMP
        tid = omp_get_thread_num();
#endif
        float *a = work + (size_t)tid * 2 * S, *cc = a + S;
        float *pdw = wparam + (size_t)tid * 2 * C, *pdb = pdw + C;
        const float *xb = x + bi * C * S, *gb = g + bi * C * S, *mb = mean + bi * S, *rb = rstd + bi * S;
        float *dxb = dx + bi * C * S;
        for (int64_t s = 0; s < S; ++s) { a[s] = 0.0f; cc[s] = 0.0f; }
        for (int64_t c = 0; c < C; ++c) {
            float wc = w ? w[c] : 1.0f;
            float sdw = 0.0f, sdb = 0.0f;
            for (int64_t s = 0; s < S; ++s) {
                float xh = (xb[c * S + s] - mb[s]) * rb[s];
                float gv = gb[c * S + s];
                a[s] += gv * wc;
                cc[s] += gv * wc * xh;
                sdw += gv * xh;
                sdb += gv;
            }
            pdw[c] += sdw;
            pdb[c] += sdb;
        }
        for (int64_t s = 0; s < S; ++s) { a[s] /= (float)C; cc[s] /= (float)C; }
        for (int64_t c = 0; c < C; ++c) {
            float wc = w ? w[c] : 1.0f;
            for (int64_t s = 0; s < S; ++s) {
                float xh = (xb[c * S + s] - mb[s]) * rb[s];
                dxb[c * S + s] = rb[s] * (gb[c * S + s] * wc - a[s] - xh * cc[s]);
            }
        }
    }
    sum_partials(wparam, dw, db, C, nthreads);
}

/* ---- a per-head convex mix: out[b, h, i] = (1 - w[h]) * a[b, h, i] + w[h] * q[qb, h, i] ----
 * a [B, H, L]; q [B, H, L] or [1, H, L] (q_batch 0: shared by every sample); ConViT's gated attention. */
void ppvit_mix_fwd(const float *a, const float *q, const float *w, float *out, int64_t B, int64_t H, int64_t L,
                   int q_batch) {
#pragma omp parallel for collapse(2) schedule(static)
    for (int64_t b = 0; b < B; ++b)
        for (int64_t h = 0; h < H; ++h) {
            const float *ab = a + (b * H + h) * L, *qb = q + ((q_batch ? b : 0) * H + h) * L;
            float *ob = out + (b * H + h) * L;
            float g = w[h], g1 = 1.0f - w[h];
            for (int64_t i = 0; i < L; ++i) ob[i] = g1 * ab[i] + g * qb[i];
        }
}

/* da = (1 - w) * d; dq = w * d (summed over b when q is shared); dw[h] = sum_{b,i} d * (q - a).
 * work: [B, H] partial sums for dw. */
void ppvit_mix_bwd(const float *d, const float *a, const float *q, const float *w, float *da, float *dq,
                   float *dw, float *work, int64_t B, int64_t H, int64_t L, int q_batch) {
#pragma omp parallel for collapse(2) schedule(static)
    for (int64_t b = 0; b < B; ++b)
        for (int64_t h = 0; h < H; ++h) {
            const float *db_ = d + (b * H + h) * L, *ab = a + (b * H + h) * L;
            const float *qb = q + ((q_batch ? b : 0) * H + h) * L;
            float g1 = 1.0f - w[h], s = 0.0f;
            float *dab = da ? da + (b * H + h) * L : NULL;
            for (int64_t i = 0; i < L; ++i) s += db_[i] * (qb[i] - ab[i]);
            if (dab)
                for (int64_t i = 0; i < L; ++i) dab[i] = g1 * db_[i];
            if (dq && q_batch) {
                float *dqb = dq + (b * H + h) * L;
                for (int64_t i = 0; i < L; ++i) dqb[i] = w[h] * db_[i];
            }
            work[b * H + h] = s;
        }
    if (dq && !q_batch) {  /* dq[h, i] = w[h] * sum_b d[b, h, i]: parallel over (h, i-chunks) */
#pragma omp parallel for schedule(static)
        for (int64_t h = 0; h < H; ++h) {
            float *dqh = dq + h * L;
            for (int64_t i = 0; i < L; ++i) dqh[i] = 0.0f;
            for (int64_t b = 0; b < B; ++b) {
                const float *db_ = d + (b * H + h) * L;
                for (int64_t i = 0; i < L; ++i) dqh[i] += db_[i];
            }
            for (int64_t i = 0; i < L; ++i) dqh[i] *= w[h];
        }
    }
    if (dw)
        for (int64_t h = 0; h < H; ++h) {
            float s = 0.0f;
            for (int64_t b = 0; b < B; ++b) s += work[b * H + h];
            dw[h] = s;
        }
}

/* ---- per-channel scale: y[b, c, s] = x[b, c, s] * gamma[c] (layer scale in NCHW) ---- */
/* y = x + bias per channel of a [B, C, S] array; its backward in one pass over g: dx = a copy of g (NULL: none)
 * and dbias[c] = the sum of g over B and S (NULL: none; each channel summed by one thread, in b-then-s order). */
void ppvit_bias_fwd(const float *x, const float *bias, float *y, int64_t B, int64_t C, int64_t S) {
#pragma omp parallel for collapse(2) schedule(static)
    for (int64_t b = 0; b < B; ++b)
        for (int64_t c = 0; c < C; ++c) {
            const float *xs = x + (b * C + c) * S;
            float *ys = y + (b * C + c) * S;
            float v = bias[c];
            for (int64_t s = 0; s < S; ++s) ys[s] = xs[s] + v;
        }
}

void ppvit_bias_bwd(const float *g, float *dx, float *dbias, int64_t B, int64_t C, int64_t S) {
#pragma omp parallel for schedule(static)
    for (int64_t c = 0; c < C; ++c) {
        double total = 0.0;
        for (int64_t b = 0; b < B; ++b) {
            const float *gs = g + (b * C + c) * S;
            if (dx) memcpy(dx + (b * C + c) * S, gs, (size_t)S * sizeof(float));
            if (!dbias) continue;
            float acc = 0.0f;
            for (int64_t s = 0; s < S; ++s) acc += gs[s];
            total += acc;
        }
        if (dbias) dbias[c] = (float)total;
    }
}

void ppvit_chscale_fwd(const float *x, const float *gamma, float *y, int64_t B, int64_t C, int64_t S) {
#pragma omp parallel for collapse(2) schedule(static)
    for (int64_t b = 0; b < B; ++b)
        for (int64_t c = 0; c < C; ++c) {
            const float *xs = x + (b * C + c) * S;
            float *ys = y + (b * C + c) * S;
            float g = gamma[c];
            for (int64_t s = 0; s < S; ++s) ys[s] = xs[s] * g;
        }
}

/* dx = d * gamma[c]; dgamma[c] = sum_{b,s} d * x (partials per (b, c) in work [B, C]) */
void ppvit_chscale_bwd(const float *d, const float *x, const float *gamma, float *dx, float *dgamma, float *work,
                       int64_t B, int64_t C, int64_t S) {
#pragma omp parallel for collapse(2) schedule(static)
    for (int64_t b = 0; b < B; ++b)
        for (int64_t c = 0; c < C; ++c) {
            const float *ds = d + (b * C + c) * S, *xs = x + (b * C + c) * S;
            float g = gamma[c], acc = 0.0f;
            if (dx) {
                float *dxs = dx + (b * C + c) * S;
                for (int64_t s = 0; s < S; ++s) dxs[s] = ds[s] * g;
            }
            for (int64_t s = 0; s < S; ++s) acc += ds[s] * xs[s];
            work[b * C + c] = acc;
        }
    if (dgamma)
        for (int64_t c = 0; c < C; ++c) {
            float acc = 0.0f;
            for (int64_t b = 0; b < B; ++b) acc += work[b * C + c];
            dgamma[c] = acc;
        }
}

/* ---- depthwise k x k correlation, stride 1, zero 'same' padding (p = k / 2), NCHW ----
 * y[b, c] = sum_{i,j} w[c, i, j] * x[b, c, h - p + i, w - p + j]; with `flip` the kernel is rotated by 180
 * degrees, which is the backward to the input (the gradient correlated with the flipped kernel). Row loops along
 * the width vectorise; planes (b, c) split across threads. */
void ppvit_dw_fwd(const float *x, const float *wt, float *y, int64_t BC, int64_t C, int64_t H, int64_t W,
                  int64_t k, int flip) {
    const int64_t p = k / 2;
#pragma omp parallel for schedule(static)
    for (int64_t bc = 0; bc < BC; ++bc) {
        const float *xp = x + bc * H * W, *wk = wt + (bc % C) * k * k;
        float *yp = y + bc * H * W;
        for (int64_t oh = 0; oh < H; ++oh) {
            float *yr = yp + oh * W;
            for (int64_t ow = 0; ow < W; ++ow) yr[ow] = 0.0f;
            for (int64_t i = 0; i < k; ++i) {
                int64_t ih = oh - p + i;
                if (ih < 0 || ih >= H) continue;
                const float *xr = xp + ih * W;
                for (int64_t j = 0; j < k; ++j) {
                    int64_t dj = j - p;
                    float wv = flip ? wk[(k - 1 - i) * k + (k - 1 - j)] : wk[i * k + j];
                    int64_t lo = dj < 0 ? -dj : 0, hi = dj > 0 ? W - dj : W;
                    const float *xs = xr + dj;
                    for (int64_t ow = lo; ow < hi; ++ow) yr[ow] += wv * xs[ow];
                }
            }
        }
    }
}

/* dw[c, i, j] = sum_b sum_{h,w} g[b, c, h, w] * x[b, c, h - p + i, w - p + j]; channels split across threads. */
void ppvit_dw_bwd_w(const float *g, const float *x, float *dw, int64_t B, int64_t C, int64_t H, int64_t W,
                    int64_t k) {
    const int64_t p = k / 2;
#pragma omp parallel for schedule(static)
    for (int64_t c = 0; c < C; ++c) {
        float *dk = dw + c * k * k;
        for (int64_t t = 0; t < k * k; ++t) dk[t] = 0.0f;
        for (int64_t b = 0; b < B; ++b) {
            const float *gp = g + (b * C + c) * H * W, *xp = x + (b * C + c) * H * W;
            for (int64_t i = 0; i < k; ++i) {
                int64_t h_lo = p - i > 0 ? p - i : 0, h_hi = H + p - i < H ? H + p - i : H;
                for (int64_t j = 0; j < k; ++j) {
                    int64_t dj = j - p;
                    int64_t lo = dj < 0 ? -dj : 0, hi = dj > 0 ? W - dj : W;
                    float acc = 0.0f;
                    for (int64_t oh = h_lo; oh < h_hi; ++oh) {
                        const float *gr = gp + oh * W, *xs = xp + (oh - p + i) * W + dj;
                        for (int64_t ow = lo; ow < hi; ++ow) acc += gr[ow] * xs[ow];
                    }
                    dk[i * k + j] += acc;
                }
            }
        }
    }
}

/* ---- BatchNorm in training, NCHW: statistics over (b, s) per channel ----
 * mean[c], var[c] (biased: what normalises, and what Paddle's running variance averages), invstd[c];
 * y = (x - mean) * invstd * w + b. Channels split across threads. */
void ppvit_bn_fwd(const float *x, const float *w, const float *bias, float *y, float *mean, float *var,
                  float *invstd, int64_t B, int64_t C, int64_t S, float eps) {
#pragma omp parallel for schedule(static)
    for (int64_t c = 0; c < C; ++c) {
        float s = 0.0f;
        for (int64_t b = 0; b < B; ++b) {
            const float *xs = x + (b * C + c) * S;
            float acc = 0.0f;
            for (int64_t i = 0; i < S; ++i) acc += xs[i];
            s += acc;
        }
        float m = s / (float)(B * S), v = 0.0f;
        for (int64_t b = 0; b < B; ++b) {
            const float *xs = x + (b * C + c) * S;
            float acc = 0.0f;
            for (int64_t i = 0; i < S; ++i) { float d = xs[i] - m; acc += d * d; }
            v += acc;
        }
        v /= (float)(B * S);
        float is = 1.0f / sqrtf(v + eps);
        mean[c] = m; var[c] = v; invstd[c] = is;
        float scale = (w ? w[c] : 1.0f) * is, shift = (bias ? bias[c] : 0.0f) - m * scale;
        for (int64_t b = 0; b < B; ++b) {
            const float *xs = x + (b * C + c) * S;
            float *ys = y + (b * C + c) * S;
            for (int64_t i = 0; i < S; ++i) ys[i] = xs[i] * scale + shift;
        }
    }
}

/* db = sum g; dw = sum g * xhat; dx = w * invstd * (g - db / N - xhat * dw / N), N = B * S. */
void ppvit_bn_bwd(const float *g, const float *x, const float *w, const float *mean, const float *invstd,
                  float *dx, float *dw, float *db, int64_t B, int64_t C, int64_t S) {
#pragma omp parallel for schedule(static)
    for (int64_t c = 0; c < C; ++c) {
        float m = mean[c], is = invstd[c], sg = 0.0f, sgx = 0.0f;
        for (int64_t b = 0; b < B; ++b) {
            const float *gs = g + (b * C + c) * S, *xs = x + (b * C + c) * S;
            float a1 = 0.0f, a2 = 0.0f;
            for (int64_t i = 0; i < S; ++i) { a1 += gs[i]; a2 += gs[i] * (xs[i] - m); }
            sg += a1; sgx += a2;
        }
        float sgxh = sgx * is;  /* sum g * xhat */
        if (db) db[c] = sg;
        if (dw) dw[c] = sgxh;
        if (dx) {
            float n = (float)(B * S), k = (w ? w[c] : 1.0f) * is;
            float mg = sg / n, mgx = sgxh / n;
            for (int64_t b = 0; b < B; ++b) {
                const float *gs = g + (b * C + c) * S, *xs = x + (b * C + c) * S;
                float *dxs = dx + (b * C + c) * S;
                for (int64_t i = 0; i < S; ++i) dxs[i] = k * (gs[i] - mg - (xs[i] - m) * is * mgx);
            }
        }
    }
}

/* ---- DilateFormer's sliding-window dilated attention on spatial-major [H, W, BH, hd] tensors ----
 * Query (h, w) attends to the ks*ks keys at (h + dil*(i - c), w + dil*(j - c)), c = (ks - 1) / 2; a key outside
 * the map is a zero vector (score 0, value 0), as the notebook's nn.Unfold with zero padding.
 * attn [H*W, BH, ks*ks] keeps the softmax weights for the backward. ks*ks <= 64. */
#define DIL_MAXK 64
void ppvit_dilate_fwd(const float *q, const float *k, const float *v, float *out, float *attn, int64_t H,
                      int64_t W, int64_t BH, int64_t hd, int64_t ks, int64_t dil, float scale) {
    const int64_t K = ks * ks, c = (ks - 1) / 2;
#pragma omp parallel for schedule(static)
    for (int64_t pos = 0; pos < H * W; ++pos) {
        int64_t h = pos / W, w = pos % W;
        for (int64_t bh = 0; bh < BH; ++bh) {
            const float *qv = q + (pos * BH + bh) * hd;
            float s[DIL_MAXK], mx = -INFINITY, sum = 0.0f;
            int64_t nb[DIL_MAXK];
            for (int64_t t = 0; t < K; ++t) {
                int64_t hh = h + dil * (t / ks - c), ww = w + dil * (t % ks - c);
                float sc = 0.0f;
                nb[t] = -1;
                if (hh >= 0 && hh < H && ww >= 0 && ww < W) {
                    nb[t] = hh * W + ww;
                    const float *kv = k + (nb[t] * BH + bh) * hd;
                    for (int64_t e = 0; e < hd; ++e) sc += qv[e] * kv[e];
                    sc *= scale;
                }
                s[t] = sc;
                mx = sc > mx ? sc : mx;
            }
            for (int64_t t = 0; t < K; ++t) { s[t] = expf(s[t] - mx); sum += s[t]; }
            float *ov = out + (pos * BH + bh) * hd, *av = attn + (pos * BH + bh) * K;
            for (int64_t e = 0; e < hd; ++e) ov[e] = 0.0f;
            for (int64_t t = 0; t < K; ++t) {
                float a = s[t] / sum;
                av[t] = a;
                if (nb[t] < 0) continue;
                const float *vv = v + (nb[t] * BH + bh) * hd;
                for (int64_t e = 0; e < hd; ++e) ov[e] += a * vv[e];
            }
        }
    }
}

/* Gradients of dilate_fwd; columns bh split across threads (every write of a thread is in its own columns). */
void ppvit_dilate_bwd(const float *q, const float *k, const float *v, const float *attn, const float *dout,
                      float *dq, float *dk, float *dv, int64_t H, int64_t W, int64_t BH, int64_t hd, int64_t ks,
                      int64_t dil, float scale) {
    const int64_t K = ks * ks, c = (ks - 1) / 2;
#pragma omp parallel for schedule(static)
    for (int64_t bh = 0; bh < BH; ++bh) {
        for (int64_t pos = 0; pos < H * W; ++pos) {
            float *dkv = dk + (pos * BH + bh) * hd, *dvv = dv + (pos * BH + bh) * hd;
            for (int64_t e = 0; e < hd; ++e) { dkv[e] = 0.0f; dvv[e] = 0.0f; }
        }
        for (int64_t pos = 0; pos < H * W; ++pos) {
            int64_t h = pos / W, w = pos % W;
            const float *qv = q + (pos * BH + bh) * hd, *gv = dout + (pos * BH + bh) * hd;
            const float *av = attn + (pos * BH + bh) * K;
            float da[DIL_MAXK], dot = 0.0f;
            int64_t nb[DIL_MAXK];
            for (int64_t t = 0; t < K; ++t) {
                int64_t hh = h + dil * (t / ks - c), ww = w + dil * (t % ks - c);
                float d = 0.0f;
                nb[t] = -1;
                if (hh >= 0 && hh < H && ww >= 0 && ww < W) {
                    nb[t] = hh * W + ww;
                    const float *vv = v + (nb[t] * BH + bh) * hd;
                    for (int64_t e = 0; e < hd; ++e) d += gv[e] * vv[e];
                }
                da[t] = d;
                dot += av[t] * d;
            }
            float *dqv = dq + (pos * BH + bh) * hd;
            for (int64_t e = 0; e < hd; ++e) dqv[e] = 0.0f;
            for (int64_t t = 0; t < K; ++t) {
                if (nb[t] < 0) continue;
                float ds = av[t] * (da[t] - dot) * scale;
                const float *kv = k + (nb[t] * BH + bh) * hd;
                float *dkn = dk + (nb[t] * BH + bh) * hd, *dvn = dv + (nb[t] * BH + bh) * hd;
                for (int64_t e = 0; e < hd; ++e) {
                    dqv[e] += ds * kv[e];
                    dkn[e] += ds * qv[e];
                    dvn[e] += av[t] * gv[e];
                }
            }
        }
    }
}

/* y (contiguous, shape[0..ndim)) = the strided view of x: y[i0, ..., i_{n-1}] = x[sum_k i_k * strides[k]] (strides
 * in elements, any sign-free layout: a transpose, a slice, an unbind's part). The caller merges dimensions that
 * are contiguous together, so ndim is small. Three loops: rows copied whole when the last stride is 1; 32 x 32
 * tiles when the last two dimensions are a transpose (the second-to-last stride is 1); an element gather
 * otherwise. Pure data movement: y holds x's values bit for bit. */
#define PERMUTE_TILE 32
#ifdef __AVX__
#include <immintrin.h>
/* dst[j * ds + i] = src[i * ss + j] for i, j < 8: the classic 8 x 8 transpose in AVX registers. */
static inline void transpose8x8(const float *src, int64_t ss, float *dst, int64_t ds) {
    __m256 r0 = _mm256_loadu_ps(src), r1 = _mm256_loadu_ps(src + ss), r2 = _mm256_loadu_ps(src + 2 * ss),
           r3 = _mm256_loadu_ps(src + 3 * ss), r4 = _mm256_loadu_ps(src + 4 * ss), r5 = _mm256_loadu_ps(src + 5 * ss),
           r6 = _mm256_loadu_ps(src + 6 * ss), r7 = _mm256_loadu_ps(src + 7 * ss);
    __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1), t2 = _mm256_unpacklo_ps(r2, r3),
           t3 = _mm256_unpackhi_ps(r2, r3), t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5),
           t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);
    __m256 u0 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(1, 0, 1, 0)), u1 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(3, 2, 3, 2)),
           u2 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(1, 0, 1, 0)), u3 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(3, 2, 3, 2)),
           u4 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(1, 0, 1, 0)), u5 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(3, 2, 3, 2)),
           u6 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(1, 0, 1, 0)), u7 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(3, 2, 3, 2));
    _mm256_storeu_ps(dst, _mm256_permute2f128_ps(u0, u4, 0x20));
    _mm256_storeu_ps(dst + ds, _mm256_permute2f128_ps(u1, u5, 0x20));
    _mm256_storeu_ps(dst + 2 * ds, _mm256_permute2f128_ps(u2, u6, 0x20));
    _mm256_storeu_ps(dst + 3 * ds, _mm256_permute2f128_ps(u3, u7, 0x20));
    _mm256_storeu_ps(dst + 4 * ds, _mm256_permute2f128_ps(u0, u4, 0x31));
    _mm256_storeu_ps(dst + 5 * ds, _mm256_permute2f128_ps(u1, u5, 0x31));
    _mm256_storeu_ps(dst + 6 * ds, _mm256_permute2f128_ps(u2, u6, 0x31));
    _mm256_storeu_ps(dst + 7 * ds, _mm256_permute2f128_ps(u3, u7, 0x31));
}
#endif
static inline int64_t strided_offset(int64_t o, int nd, const int64_t *shape, const int64_t *strides) {
    int64_t off = 0;
    for (int d = nd - 1; d >= 0; --d) {
        int64_t i = o % shape[d];
        o /= shape[d];
        off += i * strides[d];
    }
    return off;
}

void ppvit_strided_copy(const float *x, float *y, int ndim, const int64_t *shape, const int64_t *strides) {
    if (ndim == 0) { y[0] = x[0]; return; }
    int64_t n_last = shape[ndim - 1], s_last = strides[ndim - 1];
    if (ndim >= 2 && s_last != 1 && strides[ndim - 2] == 1) {
        int64_t R = shape[ndim - 2], C = n_last, outer = 1;
        for (int d = 0; d < ndim - 2; ++d) outer *= shape[d];
        int64_t tr = (R + PERMUTE_TILE - 1) / PERMUTE_TILE, tc = (C + PERMUTE_TILE - 1) / PERMUTE_TILE;
#pragma omp parallel for schedule(static)
        for (int64_t t = 0; t < outer * tr * tc; ++t) {
            int64_t o = t / (tr * tc), r0 = (t / tc) % tr * PERMUTE_TILE, c0 = t % tc * PERMUTE_TILE;
            const float *xo = x + strided_offset(o, ndim - 2, shape, strides);
            float *yo = y + o * R * C;
            int64_t r1 = r0 + PERMUTE_TILE < R ? r0 + PERMUTE_TILE : R, c1 = c0 + PERMUTE_TILE < C ? c0 + PERMUTE_TILE : C;
            int64_t r8 = r0, c8 = c0;
#ifdef __AVX__
            r8 = r0 + (r1 - r0) / 8 * 8;
            c8 = c0 + (c1 - c0) / 8 * 8;
            for (int64_t r = r0; r < r8; r += 8)
                for (int64_t c = c0; c < c8; c += 8) transpose8x8(xo + r + c * s_last, s_last, yo + r * C + c, C);
            for (int64_t r = r0; r < r8; ++r)  /* the columns past the last full 8 */
                for (int64_t c = c8; c < c1; ++c) yo[r * C + c] = xo[r + c * s_last];
#endif
            for (int64_t r = r8; r < r1; ++r)  /* the rows past the last full 8 (all rows without AVX) */
                for (int64_t c = c0; c < c1; ++c) yo[r * C + c] = xo[r + c * s_last];
        }
        return;
    }
    int64_t rows = 1;
    for (int d = 0; d < ndim - 1; ++d) rows *= shape[d];
#pragma omp parallel for schedule(static) if (rows * n_last > 16384)
    for (int64_t o = 0; o < rows; ++o) {
        const float *xo = x + strided_offset(o, ndim - 1, shape, strides);
        float *yo = y + o * n_last;
        if (s_last == 1) memcpy(yo, xo, (size_t)n_last * sizeof(float));
        else for (int64_t j = 0; j < n_last; ++j) yo[j] = xo[j * s_last];
    }
}

/* threads a parallel region may use (OMP_NUM_THREADS / omp_set_num_threads, as Paddle's MKL); 1 without OpenMP */
int ppvit_max_threads(void) {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

int ppvit_abi_version(void) { return 3; }
