/* Fused loss-rejection kernel: the whole SGD run of one candidate in one call.
 *
 * The tensors are channels-last: P pixels x C classes, contiguous. Per iteration, for each
 * block of pixels (small enough to stay in the L1/L2 cache) it computes the softmax, the
 * loss graph forward, its reverse-mode gradient, the softmax backward and the momentum-SGD
 * update, so every iteration reads and writes the logits and the momentum buffer once instead
 * of once per operator as an operator-at-a-time framework does.
 *
 * The graph arrives as a program over slots. Slot kinds: 0 = the prediction yhat (softmax),
 * 1 = a static array (P x C, something that depends only on the target), 2 = a scalar constant,
 * 3 = the value of an earlier instruction. When the program pools or averages over pixels the
 * block is the whole tensor (the operators still run fused per iteration, without allocation).
 *
 * The operator definitions match alz_core/ops.py (eps = 1e-12):
 *   log(x) = log(|x| + eps), sqrt(x) = sqrt(|x| + eps), inv(x) = 1 / (x +/- eps) (sign of x).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* libm with SIMD variants (glibc's libmvec): declared here because math.h declares them only
 * under -ffinite-math-only, and NaN/inf must keep their meaning (they are a verdict). */
extern float expf(float) __attribute__((__simd__("notinbranch")));
extern float logf(float) __attribute__((__simd__("notinbranch")));
extern float tanhf(float) __attribute__((__simd__("notinbranch")));
#define fabsf __builtin_fabsf
#define fabs __builtin_fabs
#define sqrtf __builtin_sqrtf

#define EPS 1e-12f
#define BLOCK_PIXELS 32
#define MAX_SLOTS 64

enum { OP_ADD, OP_MUL, OP_NEG, OP_ABS, OP_INV, OP_LOG, OP_EXP, OP_TANH, OP_SQUARE, OP_SQRT,
       OP_MEAN_C, OP_MEAN_NHW, OP_MAXPOOL, OP_MINPOOL };

/* 3x3 max (sign = 1) or min (sign = -1) pooling, stride 1, same size, over an N x H x W x C
 * array; idx receives the flat position of the chosen element (the first extreme in the
 * window's row-major scan, NaN winning, as torch's max_pool2d does; min pooling is computed
 * as -maxpool(-x), so its ties break the same way). */
static void pool3(const float *a, float *o, int32_t *idx, int N, int H, int W, int C, float sign) {
  float best[C];
  for (int n = 0; n < N; n++)
    for (int h = 0; h < H; h++)
      for (int w = 0; w < W; w++) {
        const int h0 = h > 0 ? h - 1 : 0, w0 = w > 0 ? w - 1 : 0;
        const int h1 = h < H - 1 ? h + 1 : H - 1, w1 = w < W - 1 ? w + 1 : W - 1;
        const long i0 = ((long)(n * H + h) * W + w) * C;
        int32_t *ix = idx + i0;
        const int32_t first = ((n * H + h0) * W + w0) * C;
        for (int c = 0; c < C; c++) { best[c] = -__builtin_inff(); ix[c] = first + c; }
        /* the window in row-major order; the inner loop over classes is contiguous */
        for (int hh = h0; hh <= h1; hh++)
          for (int ww = w0; ww <= w1; ww++) {
            const int32_t j0 = ((n * H + hh) * W + ww) * C;
            const float *aj = a + j0;
            for (int c = 0; c < C; c++) {
              const float v = sign * aj[c];
              const int take = v > best[c] || v != v;
              best[c] = take ? v : best[c];
              ix[c] = take ? j0 + c : ix[c];
            }
          }
        for (int c = 0; c < C; c++) o[i0 + c] = sign * best[c];
      }
}

enum { SLOT_YHAT, SLOT_STATIC, SLOT_CONST, SLOT_NODE };

typedef struct {
  int32_t op, a_kind, a_index, b_kind, b_index;
} instr_t;

/* Pointer to the block of a slot's values, or NULL for a constant (value in *c). */
static inline const float *slot_ptr(int kind, int index, const float *p, float *const *statics,
                                    float *const *vals, const float *consts, long off,
                                    float *c) {
  switch (kind) {
    case SLOT_YHAT: return p;
    case SLOT_STATIC: return statics[index] + off;
    case SLOT_CONST: *c = consts[index]; return NULL;
    default: return vals[index];
  }
}

/* Returns the number of iterations run. status: 0 completed, 1 non-finite, 2 zero gradient at
 * the start. */
int alz_reject_run(float *z, float *buf, int N, int H, int W, int C, float *const *statics,
                   const float *consts, const instr_t *prog, int n_instr, int iterations,
                   float lr, float momentum, int mode, int *status) {
  /* mode 0: per-pixel program, small blocks of pixels; 1: 3x3 pooling mixes neighbours, one
   * image per block; 2: mean over N, H, W mixes everything, the whole tensor is one block */
  const long P = (long)N * H * W;
  const long block = mode == 2 ? P : mode == 1 ? (long)H * W : BLOCK_PIXELS;
  const int block_images = mode == 2 ? N : 1;
  const long n = block * C;
  float *p = malloc(sizeof(float) * n);
  float *gp = malloc(sizeof(float) * n);
  float *vals[MAX_SLOTS], *adj[MAX_SLOTS];
  int32_t *pidx[MAX_SLOTS];
  for (int k = 0; k < n_instr; k++) {
    vals[k] = malloc(sizeof(float) * n);
    adj[k] = malloc(sizeof(float) * n);
    pidx[k] = (prog[k].op == OP_MAXPOOL || prog[k].op == OP_MINPOOL)
                  ? malloc(sizeof(int32_t) * n) : NULL;
  }
  *status = 0;
  int it;
  for (it = 0; it < iterations; it++) {
    double loss = 0.0;
    float gmax = 0.0f;
    int bad = 0;
    for (long px0 = 0; px0 < P; px0 += block) {
      const long npx = (P - px0) < block ? (P - px0) : block;
      const long m = npx * C, off = px0 * C;
      float *zb = z + off, *bb = buf + off;
      /* softmax per pixel: shift by the max, exp over the whole block (vectorised), scale */
      for (long q = 0; q < npx; q++) {
        const float *zq = zb + q * C;
        float *pq = p + q * C;
        float mx = zq[0];
        for (int c = 1; c < C; c++) mx = zq[c] > mx || zq[c] != zq[c] ? zq[c] : mx;
        for (int c = 0; c < C; c++) pq[c] = zq[c] - mx;
      }
      for (long i = 0; i < m; i++) p[i] = expf(p[i]);
      for (long q = 0; q < npx; q++) {
        float *pq = p + q * C;
        float s = 0.0f;
        for (int c = 0; c < C; c++) s += pq[c];
        const float inv_s = 1.0f / s;
        for (int c = 0; c < C; c++) pq[c] *= inv_s;
      }
      /* forward */
      for (int k = 0; k < n_instr; k++) {
        const instr_t I = prog[k];
        float ca = 0.0f, cb = 0.0f;
        const float *a = slot_ptr(I.a_kind, I.a_index, p, statics, vals, consts, off, &ca);
        float *o = vals[k];
        switch (I.op) {
          case OP_ADD: case OP_MUL: {
            const float *b = slot_ptr(I.b_kind, I.b_index, p, statics, vals, consts, off, &cb);
            if (I.op == OP_ADD) {
              if (a && b) for (long i = 0; i < m; i++) o[i] = a[i] + b[i];
              else if (a) for (long i = 0; i < m; i++) o[i] = a[i] + cb;
              else for (long i = 0; i < m; i++) o[i] = ca + b[i];
            } else {
              if (a && b) for (long i = 0; i < m; i++) o[i] = a[i] * b[i];
              else if (a) for (long i = 0; i < m; i++) o[i] = a[i] * cb;
              else for (long i = 0; i < m; i++) o[i] = ca * b[i];
            }
            break;
          }
          case OP_NEG: for (long i = 0; i < m; i++) o[i] = -a[i]; break;
          case OP_ABS: for (long i = 0; i < m; i++) o[i] = fabsf(a[i]); break;
          case OP_INV:
            for (long i = 0; i < m; i++) o[i] = 1.0f / (a[i] >= 0.0f ? a[i] + EPS : a[i] - EPS);
            break;
          case OP_LOG: for (long i = 0; i < m; i++) o[i] = logf(fabsf(a[i]) + EPS); break;
          case OP_EXP: for (long i = 0; i < m; i++) o[i] = expf(a[i]); break;
          case OP_TANH: for (long i = 0; i < m; i++) o[i] = tanhf(a[i]); break;
          case OP_SQUARE: for (long i = 0; i < m; i++) o[i] = a[i] * a[i]; break;
          case OP_SQRT: for (long i = 0; i < m; i++) o[i] = sqrtf(fabsf(a[i]) + EPS); break;
          case OP_MEAN_C:
            for (long q = 0; q < npx; q++) {
              float s = 0.0f;
              for (int c = 0; c < C; c++) s += a[q * C + c];
              s /= (float)C;
              for (int c = 0; c < C; c++) o[q * C + c] = s;
            }
            break;
          case OP_MEAN_NHW: {
            double sum[C];
            float mean[C];
            for (int c = 0; c < C; c++) sum[c] = 0.0;
            for (long q = 0; q < npx; q++)
              for (int c = 0; c < C; c++) sum[c] += a[q * C + c];
            for (int c = 0; c < C; c++) mean[c] = (float)(sum[c] / (double)npx);
            for (long q = 0; q < npx; q++)
              for (int c = 0; c < C; c++) o[q * C + c] = mean[c];
            break;
          }
          case OP_MAXPOOL: pool3(a, o, pidx[k], block_images, H, W, C, 1.0f); break;
          case OP_MINPOOL: pool3(a, o, pidx[k], block_images, H, W, C, -1.0f); break;
        }
      }
      /* loss and backward */
      const float *out = vals[n_instr - 1];
      for (long i = 0; i < m; i++) loss += out[i];
      for (int k = 0; k < n_instr; k++) memset(adj[k], 0, sizeof(float) * m);
      memset(gp, 0, sizeof(float) * m);
      for (long i = 0; i < m; i++) adj[n_instr - 1][i] = 1.0f;
      for (int k = n_instr - 1; k >= 0; k--) {
        const instr_t I = prog[k];
        const float *g = adj[k], *o = vals[k];
        float ca = 0.0f, cb = 0.0f;
        const float *a = slot_ptr(I.a_kind, I.a_index, p, statics, vals, consts, off, &ca);
        float *ga = I.a_kind == SLOT_NODE ? adj[I.a_index] : I.a_kind == SLOT_YHAT ? gp : NULL;
        if (I.op == OP_ADD || I.op == OP_MUL) {
          const float *b = slot_ptr(I.b_kind, I.b_index, p, statics, vals, consts, off, &cb);
          float *gb = I.b_kind == SLOT_NODE ? adj[I.b_index] : I.b_kind == SLOT_YHAT ? gp : NULL;
          if (I.op == OP_ADD) {
            if (ga) for (long i = 0; i < m; i++) ga[i] += g[i];
            if (gb) for (long i = 0; i < m; i++) gb[i] += g[i];
          } else {
            if (ga) {
              if (b) for (long i = 0; i < m; i++) ga[i] += g[i] * b[i];
              else for (long i = 0; i < m; i++) ga[i] += g[i] * cb;
            }
            if (gb) {
              if (a) for (long i = 0; i < m; i++) gb[i] += g[i] * a[i];
              else for (long i = 0; i < m; i++) gb[i] += g[i] * ca;
            }
          }
          continue;
        }
        if (!ga) continue;
        switch (I.op) {
          case OP_NEG: for (long i = 0; i < m; i++) ga[i] -= g[i]; break;
          case OP_ABS:
            for (long i = 0; i < m; i++)
              ga[i] += a[i] > 0.0f ? g[i] : (a[i] < 0.0f ? -g[i] : 0.0f * g[i]);
            break;
          case OP_INV: for (long i = 0; i < m; i++) ga[i] -= g[i] * o[i] * o[i]; break;
          case OP_LOG:
            for (long i = 0; i < m; i++) {
              const float s = a[i] > 0.0f ? 1.0f : (a[i] < 0.0f ? -1.0f : 0.0f);
              ga[i] += g[i] * s / (fabsf(a[i]) + EPS);
            }
            break;
          case OP_EXP: for (long i = 0; i < m; i++) ga[i] += g[i] * o[i]; break;
          case OP_TANH: for (long i = 0; i < m; i++) ga[i] += g[i] * (1.0f - o[i] * o[i]); break;
          case OP_SQUARE: for (long i = 0; i < m; i++) ga[i] += g[i] * 2.0f * a[i]; break;
          case OP_SQRT:
            for (long i = 0; i < m; i++) {
              const float s = a[i] > 0.0f ? 1.0f : (a[i] < 0.0f ? -1.0f : 0.0f);
              ga[i] += g[i] * s * 0.5f / o[i];
            }
            break;
          case OP_MEAN_C:
            for (long q = 0; q < npx; q++) {
              float s = 0.0f;
              for (int c = 0; c < C; c++) s += g[q * C + c];
              s /= (float)C;
              for (int c = 0; c < C; c++) ga[q * C + c] += s;
            }
            break;
          case OP_MEAN_NHW: {
            double sum[C];
            float share[C];
            for (int c = 0; c < C; c++) sum[c] = 0.0;
            for (long q = 0; q < npx; q++)
              for (int c = 0; c < C; c++) sum[c] += g[q * C + c];
            for (int c = 0; c < C; c++) share[c] = (float)(sum[c] / (double)npx);
            for (long q = 0; q < npx; q++)
              for (int c = 0; c < C; c++) ga[q * C + c] += share[c];
            break;
          }
          case OP_MAXPOOL: case OP_MINPOOL: {
            const int32_t *ix = pidx[k];
            for (long i = 0; i < m; i++) ga[ix[i]] += g[i];
            break;
          }
        }
      }
      /* softmax backward (in place in gp), gradient check, momentum SGD: flat loops over the
       * block so that they vectorise */
      for (long q = 0; q < npx; q++) {
        const float *pq = p + q * C;
        float *gq = gp + q * C;
        float dot = 0.0f;
        for (int c = 0; c < C; c++) dot += pq[c] * gq[c];
        for (int c = 0; c < C; c++) gq[c] = pq[c] * (gq[c] - dot);
      }
      int bad_block = 0;
      float gmax_block = 0.0f;
      for (long i = 0; i < m; i++) {
        const float a = fabsf(gp[i]);
        bad_block |= !(a <= 3.4028235e38f); /* NaN or inf */
        gmax_block = a > gmax_block ? a : gmax_block;
      }
      bad |= bad_block;
      gmax = gmax_block > gmax ? gmax_block : gmax;
      if (it == 0)
        for (long i = 0; i < m; i++) { bb[i] = gp[i]; zb[i] -= lr * bb[i]; }
      else
        for (long i = 0; i < m; i++) { bb[i] = momentum * bb[i] + gp[i]; zb[i] -= lr * bb[i]; }
    }
    if (!(fabs(loss) <= 3.4028234663852886e38) || bad) { *status = 1; it++; break; }
    if (it == 0 && gmax == 0.0f) { *status = 2; it++; break; }
  }
  for (int k = 0; k < n_instr; k++) { free(vals[k]); free(adj[k]); free(pidx[k]); }
  free(p);
  free(gp);
  return it;
}
