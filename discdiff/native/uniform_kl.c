/* The uniform process's rate KL (continuous-time ELBO integrand) and its gradient, fused:
 * one read of the logits and, when a gradient is wanted, one write of it, every other pass on
 * a row that sits in cache. The maths and the names are those of discdiff/processes/rates.py
 * (_UniformRateKL), which is the reference this kernel is tested against: per row, p =
 * softmax(l), the classes outside M = {z, x0} contribute n phi(Br) + Bd A' others +
 * (A' others - sum log1p(A' p)), the at most two classes in M are float64 scalars, and the
 * gradient of the row's value is ca p + cb p / (1 + A' p) outside M.
 *
 * Built by discdiff.native with the system C compiler; on x86-64 glibc the exp loop calls
 * libmvec's vector expf (declared below) and the log1p loop its own branch-free log1p_pos, so
 * both run 16 floats at a time with AVX-512.
 */
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <string.h>

#if defined(__x86_64__) && defined(__GLIBC__)
float expf(float) __attribute__((simd("notinbranch")));
#endif

/* log1p(u) for u >= 0, given w = 1 + u (rounded) and rw = 1 / w: log(w) by exponent and
 * mantissa (m in [sqrt(1/2), sqrt(2)), Cephes' single-precision polynomial for log(1 + f)),
 * plus (u - (w - 1)) / w, the rounding of 1 + u. About 2 ulp from float64 log1p on [0, 1e8]
 * (the test allows 2.5), branch-free so that the loop vectorises, and reusing the division the gradient
 * needs anyway: about 1.6x faster than libmvec's log1pf and a division here. */
static inline float log1p_pos(float u, float w, float rw) {
    int32_t bits, mb;
    memcpy(&bits, &w, 4);
    const int32_t t = bits - 0x3f3504f3; /* bits of sqrt(1/2) */
    const float fe = (float)(t >> 23);
    mb = (t & 0x007fffff) + 0x3f3504f3;
    float m;
    memcpy(&m, &mb, 4);
    const float f = m - 1.0f, z = f * f;
    float p = 7.0376836292e-2f;
    p = p * f - 1.1514610310e-1f;
    p = p * f + 1.1676998740e-1f;
    p = p * f - 1.2420140846e-1f;
    p = p * f + 1.4249322787e-1f;
    p = p * f - 1.6668057665e-1f;
    p = p * f + 2.0000714765e-1f;
    p = p * f - 2.4999993993e-1f;
    p = p * f + 3.3333331174e-1f;
    const float y = f * z * p - 2.12194440e-4f * fe - 0.5f * z; /* ln 2 = 0.693359375 - 2.12e-4 */
    return (f + y + 0.693359375f * fe) + (u - (w - 1.0f)) * rw;
}

#define BLK 256 /* classes per float partial sum */

static double phi(double d, double r) {
    /* r - 1 - log r from d = r - 1 and r, a series where it cancels (as in rates.phi) */
    if (fabs(d) < 1e-2) return d * d * (0.5 - d * (1.0 / 3 - d * (0.25 - d * 0.2)));
    return (r - 1.0) - log(r);
}

/* One row. l: logits (K); e: K floats of scratch, or the row of the gradient (want_grad),
 * written with the gradient of this row's value (upstream 1); q: K floats of scratch (holds
 * p / (1 + A' p) between the last two passes); returns the row's value. */
static double row(const float *restrict l, float *restrict e, float *restrict q, int64_t K,
                  int64_t z, int64_t x0, double a, double c0, double c1, int want_grad) {
    float mx = -INFINITY;
#pragma omp simd reduction(max : mx)
    for (int64_t i = 0; i < K; i++) mx = l[i] > mx ? l[i] : mx;
    /* sums: float lanes over blocks of BLK classes, the blocks' sums in float64 (as accurate as
     * a cascade sum, and the float lanes run twice as wide as float64 ones) */
    double S = 0.0;
    for (int64_t i0 = 0; i0 < K; i0 += BLK) {
        const int64_t i1 = i0 + BLK < K ? i0 + BLK : K;
        float fs = 0.0f;
#pragma omp simd reduction(+ : fs)
        for (int64_t i = i0; i < i1; i++) {
            const float v = expf(l[i] - mx);
            e[i] = v;
            fs += v;
        }
        S += fs;
    }
    const int same = z == x0;
    const double inv = 1.0 / S;
    const double pz = e[z] * inv, px0 = e[x0] * inv;
    e[z] = 0.0f;
    e[x0] = 0.0f;
    double so = 0.0;
    for (int64_t i0 = 0; i0 < K; i0 += BLK) {
        const int64_t i1 = i0 + BLK < K ? i0 + BLK : K;
        float fs = 0.0f;
#pragma omp simd reduction(+ : fs)
        for (int64_t i = i0; i < i1; i++) fs += e[i];
        so += fs;
    }
    const double others = so * inv; /* no cancellation as p(z) -> 1 */
    const double rest_z = others + (same ? 0.0 : px0), rest_x0 = others + (same ? 0.0 : pz);
    const double A = same ? a * c1 / (c0 * c0) : a / c0;
    const double Bd = same ? a * rest_z / c0 : -a * pz / c1;
    const double Br = same ? 1.0 + Bd : (c0 + a * rest_z) / c1;
    const double d_x0 = -a * (rest_x0 / c1 + pz * c0 / (c1 * c1));
    const double r_x0 = a * px0 / c1 + c0 * (c0 + a * rest_z) / (c1 * c1);
    const double n = same ? (double)(K - 1) : (double)(K - 2);
    const double A1 = A / Br;
    const float u1 = (float)(A1 * inv); /* A' p(y) = u1 e(y) */
    const float fi = (float)inv;
    double log_sum = 0.0, r2 = 0.0;
    for (int64_t i0 = 0; i0 < K; i0 += BLK) {
        const int64_t i1 = i0 + BLK < K ? i0 + BLK : K;
        float fl = 0.0f, fr = 0.0f;
        if (want_grad) {
#pragma omp simd reduction(+ : fl, fr)
            for (int64_t i = i0; i < i1; i++) {
                const float u = u1 * e[i], w = 1.0f + u, rw = 1.0f / w, pw = fi * e[i] * rw;
                fl += log1p_pos(u, w, rw);
                q[i] = pw;
                fr += pw;
            }
        } else {
#pragma omp simd reduction(+ : fl)
            for (int64_t i = i0; i < i1; i++) {
                const float u = u1 * e[i], w = 1.0f + u;
                fl += log1p_pos(u, w, 1.0f / w);
            }
        }
        log_sum += fl;
        r2 += fr;
    }
    const double A1o = A1 * others;
    double tail = A1o - log_sum;
    if (tail < 0.0) tail = 0.0; /* each term of the sum is >= 0: rounding may not make it < 0 */
    double body = n * phi(Bd, Br) + Bd * A1o + tail;
    if (body < 0.0) body = 0.0;
    const double total = same ? c0 / c1 * body : body + c1 / c0 * phi(d_x0, r_x0);
    if (!want_grad) return total;

    const double slope = a / c0;
    const double hp_x0 = same ? 0.0 : d_x0 / r_x0;
    const double g_x0 = slope * hp_x0;
    const double gz0 = -(a / c1) * (n * Bd / Br + hp_x0);
    const double gz1 = -(a / c1) * A1 / Br;
    const double m0 = slope * others + pz * gz0 + (same ? 0.0 : px0 * g_x0);
    const double m1 = -slope / Br + pz * gz1;
    const double mean = m0 + m1 * r2;
    const float ca = (float)((slope - m0 - m1 * r2) * inv), cb = (float)(-slope / Br);
#pragma omp simd
    for (int64_t i = 0; i < K; i++) e[i] = ca * e[i] + cb * q[i];
    if (!same) e[x0] = (float)(px0 * (g_x0 - mean));
    e[z] = (float)(pz * (gz0 + gz1 * r2 - mean));
    return total;
}

/* Rows [0, N) of (N, K) logits on `threads` OpenMP threads (torch's own runtime: the library
 * links libgomp.so.1, which the loader resolves to the copy torch has loaded, so the two share
 * one pool and never compete for cores). x_t, x0: class ids; a, c0, c1 (float64) and scale
 * (float32): one value per group of `per` consecutive rows; out: each row's value times its
 * scale; grad: (N, K) floats or, when want_grad is 0, (threads, K) floats of scratch;
 * scratch: (threads, K) floats. A row whose ids fall outside [0, K) is not read: its value is
 * NaN and it is counted in the return value. */
int64_t uniform_rate_kl(const float *logits, const int64_t *x_t, const int64_t *x0,
                        const double *a, const double *c0, const double *c1,
                        const float *scale, int64_t per, float *out, float *grad,
                        float *scratch, int64_t N, int64_t K, int want_grad, int threads) {
    int64_t bad = 0;
#pragma omp parallel num_threads(threads) reduction(+ : bad)
    {
        const int me = omp_get_thread_num();
        float *q = scratch + (int64_t)me * K;
#pragma omp for schedule(static)
        for (int64_t r = 0; r < N; r++) {
            const int64_t b = r / per, z = x_t[r], y = x0[r];
            if (z < 0 || z >= K || y < 0 || y >= K) {
                out[r] = NAN;
                bad++;
                continue;
            }
            float *e = want_grad ? grad + r * K : grad + (int64_t)me * K;
            const double v = row(logits + r * K, e, q, K, z, y, a[b], c0[b], c1[b], want_grad);
            out[r] = (float)(v * (double)scale[b]);
        }
    }
    return bad;
}

/* log1p_pos over an array (u >= 0): exported for the accuracy test. */
void log1p_pos_array(const float *u, float *out, int64_t n) {
#pragma omp simd
    for (int64_t i = 0; i < n; i++) {
        const float w = 1.0f + u[i];
        out[i] = log1p_pos(u[i], w, 1.0f / w);
    }
}
