/* A hand-written AVX-512 attention kernel for head_dim 32, fp32: a measured prototype, not part of bertkit.
 *
 * bench/attention_ceiling.py --c-kernel compiles it with gcc and times it against torch's flash SDPA kernel on
 * the model's fused-QKV layout (variable-length sequences packed as rows of a (N, 3H) matrix, no padding).
 * Per sequence and head: K is transposed once into (32, T); then for each block of 12 queries, the scores of
 * all T keys go to a (12, T) buffer (6 x 64 register tiles) with their row maxima kept on the way, one exp pass turns them into
 * unnormalised probabilities (exp by Cody-Waite range reduction and a degree-6 polynomial, about 1 ulp), and
 * the context is accumulated over the value rows and divided by the row sums. Denormals are flushed inside
 * the call only. Its accuracy against a float64 reference equals flash's (bench output).
 */
#include <immintrin.h>
#include <stdint.h>
#include <math.h>

#define D 32
#define R 12 /* query rows per block */
#define RQ 6 /* query rows per score tile (x 64 keys: 24 accumulators) */

static inline __m512 exp512(__m512 x) { /* x <= 0 */
    x = _mm512_max_ps(x, _mm512_set1_ps(-87.0f));
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693145751953125f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.428606765330187e-06f), r);
    __m512 p = _mm512_set1_ps(1.0f / 720);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, n);
}

static inline __mmask16 tail(long left) { return left >= 16 ? (__mmask16)0xFFFF : left > 0 ? (__mmask16)((1u << left) - 1) : 0; }

/* One head of one sequence: q, k, v are T rows of D floats with row stride ld; out gets T rows, stride ldo.
   work holds (D + R) * Tp floats, Tp = T rounded up to 64: K transposed, then one block's scores. */
static void head_attention(const float *q, const float *k, const float *v, long ld, float *out, long ldo,
                           long T, float scale, float *work) {
    long Tp = (T + 63) & ~63L;
    float *kt = work;
    float *s = work + D * Tp;
    const __m512i lane = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
    const __m512i step = _mm512_mullo_epi32(lane, _mm512_set1_epi32((int)ld));
    for (long j0 = 0; j0 < Tp; j0 += 16) {
        __mmask16 mk = tail(T - j0);
        for (int d = 0; d < D; d++)
            _mm512_storeu_ps(kt + d * Tp + j0, _mm512_mask_i32gather_ps(_mm512_setzero_ps(), mk, step, k + j0 * ld + d, 4));
    }
    float qs[R * D];
    const __m512 sc = _mm512_set1_ps(scale);
    const __m512 ninf = _mm512_set1_ps(-INFINITY);
    for (long i0 = 0; i0 < T; i0 += R) {
        int rows = T - i0 < R ? (int)(T - i0) : R;
        for (int r = 0; r < R; r++) {
            __m512 a = _mm512_setzero_ps(), b = _mm512_setzero_ps();
            if (r < rows) {
                a = _mm512_mul_ps(_mm512_loadu_ps(q + (i0 + r) * ld), sc);
                b = _mm512_mul_ps(_mm512_loadu_ps(q + (i0 + r) * ld + 16), sc);
            }
            _mm512_storeu_ps(qs + r * D, a);
            _mm512_storeu_ps(qs + r * D + 16, b);
        }
        __m512 mx[R];
        for (int r = 0; r < R; r++) mx[r] = ninf;
        for (int r0 = 0; r0 < R; r0 += RQ) {
            for (long j0 = 0; j0 < Tp; j0 += 64) {
                __m512 acc[RQ][4];
                for (int r = 0; r < RQ; r++) acc[r][0] = acc[r][1] = acc[r][2] = acc[r][3] = _mm512_setzero_ps();
                for (int d = 0; d < D; d++) {
                    const float *kd = kt + d * Tp + j0;
                    __m512 k0 = _mm512_loadu_ps(kd), k1 = _mm512_loadu_ps(kd + 16);
                    __m512 k2 = _mm512_loadu_ps(kd + 32), k3 = _mm512_loadu_ps(kd + 48);
                    for (int r = 0; r < RQ; r++) {
                        __m512 b = _mm512_set1_ps(qs[(r0 + r) * D + d]);
                        acc[r][0] = _mm512_fmadd_ps(b, k0, acc[r][0]);
                        acc[r][1] = _mm512_fmadd_ps(b, k1, acc[r][1]);
                        acc[r][2] = _mm512_fmadd_ps(b, k2, acc[r][2]);
                        acc[r][3] = _mm512_fmadd_ps(b, k3, acc[r][3]);
                    }
                }
                for (int c = 0; c < 4; c++) {
                    __mmask16 mc = tail(T - j0 - 16 * c);
                    for (int r = 0; r < RQ; r++) {
                        _mm512_storeu_ps(s + (r0 + r) * Tp + j0 + 16 * c, acc[r][c]);
                        mx[r0 + r] = _mm512_mask_max_ps(mx[r0 + r], mc, mx[r0 + r], acc[r][c]);
                    }
                }
            }
        }
        float inv[R];
        for (int r = 0; r < R; r++) {
            float *row = s + r * Tp;
            __m512 m = _mm512_set1_ps(_mm512_reduce_max_ps(mx[r]));
            __m512 sum = _mm512_setzero_ps();
            for (long j = 0; j < Tp; j += 16) {
                __m512 e = _mm512_maskz_mov_ps(tail(T - j), exp512(_mm512_sub_ps(_mm512_loadu_ps(row + j), m)));
                _mm512_storeu_ps(row + j, e);
                sum = _mm512_add_ps(sum, e);
            }
            inv[r] = 1.0f / _mm512_reduce_add_ps(sum);
        }
        __m512 o[R][2];
        for (int r = 0; r < R; r++) o[r][0] = o[r][1] = _mm512_setzero_ps();
        for (long j = 0; j < T; j++) {
            __m512 v0 = _mm512_loadu_ps(v + j * ld);
            __m512 v1 = _mm512_loadu_ps(v + j * ld + 16);
            for (int r = 0; r < R; r++) {
                __m512 p = _mm512_set1_ps(s[r * Tp + j]);
                o[r][0] = _mm512_fmadd_ps(p, v0, o[r][0]);
                o[r][1] = _mm512_fmadd_ps(p, v1, o[r][1]);
            }
        }
        for (int r = 0; r < rows; r++) {
            __m512 c = _mm512_set1_ps(inv[r]);
            _mm512_storeu_ps(out + (i0 + r) * ldo, _mm512_mul_ps(o[r][0], c));
            _mm512_storeu_ps(out + (i0 + r) * ldo + 16, _mm512_mul_ps(o[r][1], c));
        }
    }
}

/* qkv: (N, 3H) row-major, query | key | value per row; sequence b is rows starts[b] .. starts[b + 1] - 1.
   out: (N, H). work: see head_attention, for the longest sequence. */
int varlen_attention(const float *qkv, const int64_t *starts, long batch, long heads, float scale, float *out,
                     float *work) {
    unsigned int csr = _mm_getcsr();
    _mm_setcsr(csr | 0x8040); /* flush denormals to zero in this call only: tiny probabilities stay fast */
    long H = heads * D, ld = 3 * H;
    for (long b = 0; b < batch; b++) {
        long t0 = starts[b], T = starts[b + 1] - t0;
        for (long h = 0; h < heads && T > 0; h++) {
            const float *base = qkv + t0 * ld + h * D;
            head_attention(base, base + H, base + 2 * H, ld, out + t0 * H + h * D, H, T, scale, work);
        }
    }
    _mm_setcsr(csr);
    return 0;
}

/* Size of the work buffer, in floats, for sequences of at most max_len tokens. */
long attention_work_floats(long max_len) { return (D + R) * ((max_len + 63) & ~63L); }
