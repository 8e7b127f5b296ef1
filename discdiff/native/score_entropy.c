/* SEDD's score entropy integrand of a mixing process and its gradient, fused: one read of the
 * log scores and, when a gradient is wanted, one write of it. The maths and the names are those
 * of discdiff/processes/scores.py (_fast_rows, the reference this kernel is tested against): per
 * row, off x0 the true ratio is r_y = A m(y) (or 0 for an absorbing limit), at x0 it is
 * r_v = A m(v) + Bc, and the row's value is w sum_{y != z} r_y (e^u - 1 - u), u = ls - log r
 * (e^ls where r = 0), its gradient w r_y expm1(u) (w e^ls where r = 0); the x0 column in
 * float64. A row where some u passes 20 or some log score passes the cap is flagged and redone
 * by the caller's general path (which continues exp there).
 *
 * Built with uniform_kl.c by discdiff.native; on x86-64 glibc expf is libmvec's vector one.
 */
#include <math.h>
#include <omp.h>
#include <stdint.h>

#if defined(__x86_64__) && defined(__GLIBC__)
float expf(float) __attribute__((simd("notinbranch")));
#endif

#define SE_BLK 256 /* classes per float partial sum */

/* e^u - 1 - u and e^u - 1 without cancellation: a series for |u| < 1/2 (relative error under
 * 1e-7 there), e^u - 1 from expf elsewhere (no cancellation once |u| >= 1/2); u is clamped
 * at 20 for expf (a row past it is redone by the caller). */
static inline void em_terms(float u, float *d, float *em) {
    const float e = expf(u > 20.0f ? 20.0f : u);
    const float s = u * u *
        (0.5f + u * (1.0f / 6 + u * (1.0f / 24 + u * (1.0f / 120 + u * (1.0f / 720 +
        u * (1.0f / 5040 + u * (1.0f / 40320)))))));
    const int small = fabsf(u) < 0.5f;
    *em = small ? u + s : e - 1.0f;
    *d = small ? s : (e - 1.0f) - u;
}

/* Rows [0, N) on `threads` OpenMP threads. ls: (N, K) log scores; A, Bc, w: per row; v, z: x0
 * and x_t ids (z may be K, an absorbing mask state: no column); m, log_m: the limit over the K
 * classes; kind: 0 a flat limit (m one number), 1 mass on every class, 2 none (absorbing); cap:
 * the log score past which exp is not exact. out: the rows' values (weighted); grad: (N, K)
 * or NULL; redo: 1 where the row must be done on the general path. */
void score_entropy_rows(const float *ls, const float *A, const float *Bc, const float *w,
                        const int64_t *v, const int64_t *z, const float *m, const float *log_m,
                        int kind, float cap, float *out, float *grad, uint8_t *redo, int64_t N,
                        int64_t K, int threads) {
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t r = 0; r < N; r++) {
        const float *l = ls + r * K;
        float *g = grad ? grad + r * K : 0;
        const int64_t vi = v[r], zi = z[r];
        const float wr = w[r];
        redo[r] = 0;
        if (!(wr > 0.0f)) {
            out[r] = 0.0f;
            if (g)
                for (int64_t i = 0; i < K; i++) g[i] = 0.0f;
            continue;
        }
        double total = 0.0;
        int bad = 0;
        if (kind == 2) { /* r = 0 off x0: e^ls */
            for (int64_t i0 = 0; i0 < K; i0 += SE_BLK) {
                const int64_t i1 = i0 + SE_BLK < K ? i0 + SE_BLK : K;
                float fs = 0.0f;
                int b = 0;
#pragma omp simd reduction(+ : fs) reduction(| : b)
                for (int64_t i = i0; i < i1; i++) {
                    const int keep = (i != vi) & (i != zi);
                    b |= keep & (l[i] > cap);
                    const float e = expf(l[i] > cap ? cap : l[i]);
                    fs += keep ? e : 0.0f;
                    if (g) g[i] = keep ? wr * e : 0.0f;
                }
                total += fs;
                bad |= b;
            }
        } else { /* r = A m(y) off x0 */
            const float la = logf(A[r]), ar = A[r];
            for (int64_t i0 = 0; i0 < K; i0 += SE_BLK) {
                const int64_t i1 = i0 + SE_BLK < K ? i0 + SE_BLK : K;
                const float ga = wr * ar;
                float fs = 0.0f;
                int b = 0;
                if (kind == 0) { /* a flat limit: m(y) one number */
                    const float mi = m[0], shift = la + log_m[0];
#pragma omp simd reduction(+ : fs) reduction(| : b)
                    for (int64_t i = i0; i < i1; i++) {
                        float d, em;
                        const int keep = (i != vi) & (i != zi);
                        const float u = l[i] - shift;
                        b |= keep & ((u > 20.0f) | (l[i] > cap));
                        em_terms(u, &d, &em);
                        fs += keep ? d : 0.0f;
                        if (g) g[i] = keep ? ga * mi * em : 0.0f;
                    }
                    fs *= mi;
                } else {
#pragma omp simd reduction(+ : fs) reduction(| : b)
                    for (int64_t i = i0; i < i1; i++) {
                        float d, em;
                        const int keep = (i != vi) & (i != zi);
                        const float u = l[i] - la - log_m[i];
                        b |= keep & ((u > 20.0f) | (l[i] > cap));
                        em_terms(u, &d, &em);
                        fs += keep ? m[i] * d : 0.0f;
                        if (g) g[i] = keep ? ga * m[i] * em : 0.0f;
                    }
                }
                total += fs;
                bad |= b;
            }
            total *= (double)ar;
        }
        if (vi != zi) { /* the x0 column, in float64: r_v = A m(v) + Bc */
            const double lv = l[vi];
            const double rv = (double)A[r] * (double)m[kind == 0 ? 0 : vi] + (double)Bc[r];
            double val, gv;
            if (kind == 2) {
                const double rv2 = (double)Bc[r];
                const double u = lv - log(rv2 > 0.0 ? rv2 : 1.0), e1 = expm1(u);
                val = rv2 > 0.0 ? rv2 * (e1 - u) : exp(lv);
                gv = rv2 > 0.0 ? rv2 * e1 : exp(lv);
            } else {
                const double u = lv - log(rv), e1 = expm1(u);
                val = rv * (e1 - u);
                gv = rv * e1;
            }
            bad |= lv > cap;
            total += val;
            if (g) g[vi] = (float)((double)wr * gv);
        }
        out[r] = (float)((double)wr * total);
        redo[r] = (uint8_t)(bad != 0);
    }
}
