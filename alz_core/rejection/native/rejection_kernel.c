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
 * The operator definitions match alz_core/graph/ops.py (eps = 1e-12):
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

/* 3x3 max (sign = 1) or min (sign = -1) pooling, stride 1, same size, of rows [r0, r1) of one
 * H x W x C image; idx receives base + the flat position of the chosen element: the first
 * extreme in the window's row-major scan, NaN winning, as torch's max_pool2d does (min pooling
 * is computed as -maxpool(-x), so its ties break the same way).
 *
 * Separable: a max over each row's 3 horizontal neighbours (first of equals kept), then over 3
 * rows of those (first row of equals kept), which picks the same element as the row-major scan
 * of the 3x3 window. Both passes run over the W*C values of a row as flat, vectorisable loops;
 * the horizontal results of the 3 rows in use are kept in a ring. */
#define TAKE(v, j)                       \
  do {                                   \
    const float v_ = (v);                \
    const int t_ = v_ > best || v_ != v_; \
    best = t_ ? v_ : best;               \
    at = t_ ? (j) : at;                  \
  } while (0)

static void pool_row_h(const float *a, float *hv, int32_t *hi, int W, int C, float sign,
                       int32_t base) {
  const long L = (long)W * C;
  if (W == 1) {
    for (long i = 0; i < L; i++) {
      float best = -__builtin_inff();
      int32_t at = base + (int32_t)i;
      TAKE(sign * a[i], base + (int32_t)i);
      hv[i] = best;
      hi[i] = at;
    }
    return;
  }
  for (long i = 0; i < C; i++) { /* w = 0: the window is columns 0, 1 */
    float best = -__builtin_inff();
    int32_t at = base + (int32_t)i;
    TAKE(sign * a[i], base + (int32_t)i);
    TAKE(sign * a[i + C], base + (int32_t)(i + C));
    hv[i] = best;
    hi[i] = at;
  }
  for (long i = C; i < L - C; i++) {
    float best = -__builtin_inff();
    int32_t at = base + (int32_t)(i - C);
    TAKE(sign * a[i - C], base + (int32_t)(i - C));
    TAKE(sign * a[i], base + (int32_t)i);
    TAKE(sign * a[i + C], base + (int32_t)(i + C));
    hv[i] = best;
    hi[i] = at;
  }
  for (long i = L - C; i < L; i++) { /* w = W - 1: columns W - 2, W - 1 */
    float best = -__builtin_inff();
    int32_t at = base + (int32_t)(i - C);
    TAKE(sign * a[i - C], base + (int32_t)(i - C));
    TAKE(sign * a[i], base + (int32_t)i);
    hv[i] = best;
    hi[i] = at;
  }
}

static void pool3_rows(const float *a, float *o, int32_t *idx, int H, int W, int C, int r0, int r1,
                       float sign, int32_t base) {
  if (r1 <= r0) return;
  const long L = (long)W * C;
  float hv[3][L];
  int32_t hi[3][L];
  const int first = r0 > 0 ? r0 - 1 : 0, last = r1 < H ? r1 : H - 1; /* rows to pool across */
  for (int rr = first; rr <= (r0 < last ? r0 : last); rr++)
    pool_row_h(a + rr * L, hv[rr % 3], hi[rr % 3], W, C, sign, base + (int32_t)(rr * L));
  for (int h = r0; h < r1; h++) {
    if (h + 1 <= last)
      pool_row_h(a + (h + 1) * L, hv[(h + 1) % 3], hi[(h + 1) % 3], W, C, sign,
                 base + (int32_t)((h + 1) * L));
    const int h0 = h > 0 ? h - 1 : 0, h1 = h < H - 1 ? h + 1 : H - 1;
    float *oh = o + h * L;
    int32_t *ih = idx + h * L;
    const float *v0 = hv[h0 % 3], *v1 = hv[(h0 + 1) % 3], *v2 = hv[h1 % 3];
    const int32_t *i0 = hi[h0 % 3], *i1 = hi[(h0 + 1) % 3], *i2 = hi[h1 % 3];
    if (h1 - h0 == 2) {
      for (long i = 0; i < L; i++) {
        float best = -__builtin_inff();
        int32_t at = i0[i];
        TAKE(v0[i], i0[i]);
        TAKE(v1[i], i1[i]);
        TAKE(v2[i], i2[i]);
        oh[i] = sign * best;
        ih[i] = at;
      }
    } else if (h1 - h0 == 1) {
      for (long i = 0; i < L; i++) {
        float best = -__builtin_inff();
        int32_t at = i0[i];
        TAKE(v0[i], i0[i]);
        TAKE(v1[i], i1[i]);
        oh[i] = sign * best;
        ih[i] = at;
      }
    } else {
      for (long i = 0; i < L; i++) {
        float best = -__builtin_inff();
        int32_t at = i0[i];
        TAKE(v0[i], i0[i]);
        oh[i] = sign * best;
        ih[i] = at;
      }
    }
  }
}

/* pooling of N whole images (idx: flat positions in the N x H x W x C block) */
static void pool3(const float *a, float *o, int32_t *idx, int N, int H, int W, int C, float sign) {
  const long image = (long)H * W * C;
  for (int n = 0; n < N; n++)
    pool3_rows(a + n * image, o + n * image, idx + n * image, H, W, C, 0, H, sign,
               (int32_t)(n * image));
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

/* Forward of one element-wise instruction (or mean_c) over elements [lo, hi) (multiples of C
 * for mean_c); a or b NULL means the constant ca or cb. */
static inline void fwd_elem(int op, float *o, const float *a, float ca, const float *b, float cb,
                            long lo, long hi, int C) {
  switch (op) {
    case OP_ADD:
      if (a && b) for (long i = lo; i < hi; i++) o[i] = a[i] + b[i];
      else if (a) for (long i = lo; i < hi; i++) o[i] = a[i] + cb;
      else for (long i = lo; i < hi; i++) o[i] = ca + b[i];
      break;
    case OP_MUL:
      if (a && b) for (long i = lo; i < hi; i++) o[i] = a[i] * b[i];
      else if (a) for (long i = lo; i < hi; i++) o[i] = a[i] * cb;
      else for (long i = lo; i < hi; i++) o[i] = ca * b[i];
      break;
    case OP_NEG: for (long i = lo; i < hi; i++) o[i] = -a[i]; break;
    case OP_ABS: for (long i = lo; i < hi; i++) o[i] = fabsf(a[i]); break;
    case OP_INV:
      for (long i = lo; i < hi; i++) o[i] = 1.0f / (a[i] >= 0.0f ? a[i] + EPS : a[i] - EPS);
      break;
    case OP_LOG: for (long i = lo; i < hi; i++) o[i] = logf(fabsf(a[i]) + EPS); break;
    case OP_EXP: for (long i = lo; i < hi; i++) o[i] = expf(a[i]); break;
    case OP_TANH: for (long i = lo; i < hi; i++) o[i] = tanhf(a[i]); break;
    case OP_SQUARE: for (long i = lo; i < hi; i++) o[i] = a[i] * a[i]; break;
    case OP_SQRT: for (long i = lo; i < hi; i++) o[i] = sqrtf(fabsf(a[i]) + EPS); break;
    case OP_MEAN_C:
      for (long q = lo; q < hi; q += C) {
        float s = 0.0f;
        for (int c = 0; c < C; c++) s += a[q + c];
        s /= (float)C;
        for (int c = 0; c < C; c++) o[q + c] = s;
      }
      break;
  }
}

/* Backward of one element-wise instruction (or mean_c) over elements [lo, hi): accumulates the
 * adjoint g into ga / gb (NULL: no gradient wanted). */
static inline void bwd_elem(int op, const float *g, const float *o, const float *a, float ca,
                            const float *b, float cb, float *ga, float *gb, long lo, long hi,
                            int C) {
  switch (op) {
    case OP_ADD:
      if (ga) for (long i = lo; i < hi; i++) ga[i] += g[i];
      if (gb) for (long i = lo; i < hi; i++) gb[i] += g[i];
      return;
    case OP_MUL:
      if (ga) {
        if (b) for (long i = lo; i < hi; i++) ga[i] += g[i] * b[i];
        else for (long i = lo; i < hi; i++) ga[i] += g[i] * cb;
      }
      if (gb) {
        if (a) for (long i = lo; i < hi; i++) gb[i] += g[i] * a[i];
        else for (long i = lo; i < hi; i++) gb[i] += g[i] * ca;
      }
      return;
  }
  if (!ga) return;
  switch (op) {
    case OP_NEG: for (long i = lo; i < hi; i++) ga[i] -= g[i]; break;
    case OP_ABS:
      for (long i = lo; i < hi; i++)
        ga[i] += a[i] > 0.0f ? g[i] : (a[i] < 0.0f ? -g[i] : 0.0f * g[i]);
      break;
    case OP_INV: for (long i = lo; i < hi; i++) ga[i] -= g[i] * o[i] * o[i]; break;
    case OP_LOG:
      for (long i = lo; i < hi; i++) {
        const float s = a[i] > 0.0f ? 1.0f : (a[i] < 0.0f ? -1.0f : 0.0f);
        ga[i] += g[i] * s / (fabsf(a[i]) + EPS);
      }
      break;
    case OP_EXP: for (long i = lo; i < hi; i++) ga[i] += g[i] * o[i]; break;
    case OP_TANH: for (long i = lo; i < hi; i++) ga[i] += g[i] * (1.0f - o[i] * o[i]); break;
    case OP_SQUARE: for (long i = lo; i < hi; i++) ga[i] += g[i] * 2.0f * a[i]; break;
    case OP_SQRT:
      for (long i = lo; i < hi; i++) {
        const float s = a[i] > 0.0f ? 1.0f : (a[i] < 0.0f ? -1.0f : 0.0f);
        ga[i] += g[i] * s * 0.5f / o[i];
      }
      break;
    case OP_MEAN_C:
      for (long q = lo; q < hi; q += C) {
        float s = 0.0f;
        for (int c = 0; c < C; c++) s += g[q + c];
        s /= (float)C;
        for (int c = 0; c < C; c++) ga[q + c] += s;
      }
      break;
  }
}

/* softmax of the pixels of elements [lo, hi) (multiples of C): shift by the max, exp over the
 * whole range (vectorised), scale */
static inline void softmax_range(const float *z, float *p, long lo, long hi, int C) {
  for (long q = lo; q < hi; q += C) {
    float mx = z[q];
    for (int c = 1; c < C; c++) mx = z[q + c] > mx || z[q + c] != z[q + c] ? z[q + c] : mx;
    for (int c = 0; c < C; c++) p[q + c] = z[q + c] - mx;
  }
  for (long i = lo; i < hi; i++) p[i] = expf(p[i]);
  for (long q = lo; q < hi; q += C) {
    float s = 0.0f;
    for (int c = 0; c < C; c++) s += p[q + c];
    const float inv_s = 1.0f / s;
    for (int c = 0; c < C; c++) p[q + c] *= inv_s;
  }
}

/* softmax backward (in place in gp), the gradient check and the momentum-SGD update of
 * elements [lo, hi) */
static inline void update_range(const float *p, float *gp, float *z, float *buf, long lo,
                                long hi, int C, int first, float lr, float momentum,
                                int *bad, float *gmax) {
  for (long q = lo; q < hi; q += C) {
    float dot = 0.0f;
    for (int c = 0; c < C; c++) dot += p[q + c] * gp[q + c];
    for (int c = 0; c < C; c++) gp[q + c] = p[q + c] * (gp[q + c] - dot);
  }
  int bad_block = 0;
  float gmax_block = 0.0f;
  for (long i = lo; i < hi; i++) {
    const float a = fabsf(gp[i]);
    bad_block |= !(a <= 3.4028235e38f); /* NaN or inf */
    gmax_block = a > gmax_block ? a : gmax_block;
  }
  *bad |= bad_block;
  *gmax = gmax_block > *gmax ? gmax_block : *gmax;
  if (first)
    for (long i = lo; i < hi; i++) { buf[i] = gp[i]; z[i] -= lr * buf[i]; }
  else
    for (long i = lo; i < hi; i++) { buf[i] = momentum * buf[i] + gp[i]; z[i] -= lr * buf[i]; }
}

static inline int is_pool(int op) { return op == OP_MAXPOOL || op == OP_MINPOOL; }

/* Mode 1 (3x3 pooling, no mean over pixels): one iteration over one H x W x C image, streamed
 * in bands of ROWS rows so that each step's working set stays in the cache.
 *
 * Pooling makes a row of a node depend on the neighbouring rows of its input, so the nodes run
 * as a pipeline over rows: node k's forward lags lag[k] rows behind the softmax (its pooling
 * depth), its backward lags back[k] rows (enough for every consumer to have added its share to
 * the adjoint rows, pooling scattering one row up and down), and the softmax backward and the
 * SGD update of the logits lag back_y rows. Each row of each node is computed once, with the
 * same arithmetic as a whole-image pass; only the order in which a node with several consumers
 * sums their adjoint contributions can differ. The softmax of a row is taken before that row's
 * logits are updated, as in a whole-image pass. */
#define ROWS 2
static void banded_image(float *z, float *buf, int H, int W, int C, float *const *statics,
                         const float *consts, const instr_t *prog, int n_instr, long off,
                         float *p, float *gp, float **vals, float **adj, int32_t **pidx,
                         const int *lag, const int *back, int back_y, int first, float lr,
                         float momentum, double *loss, int *bad, float *gmax) {
  const long row = (long)W * C;
  int p_done = 0, upd_done = 0;
  int f_done[MAX_SLOTS], b_done[MAX_SLOTS];
  for (int k = 0; k < n_instr; k++) f_done[k] = b_done[k] = 0;
  const int out = n_instr - 1;
  for (int e = ROWS;; e += ROWS) {
    /* softmax (and zeroed yhat adjoint) of rows [p_done, e) */
    const int p_to = e < H ? e : H;
    if (p_to > p_done) {
      softmax_range(z, p, p_done * row, p_to * row, C);
      memset(gp + p_done * row, 0, sizeof(float) * (p_to - p_done) * row);
      p_done = p_to;
    }
    /* forward, each node lagging its pooling depth */
    for (int k = 0; k < n_instr; k++) {
      int to = e - lag[k];
      to = to < H ? to : H;
      if (to <= f_done[k]) continue;
      const instr_t I = prog[k];
      float ca = 0.0f, cb = 0.0f;
      const float *a = slot_ptr(I.a_kind, I.a_index, p, statics, vals, consts, off, &ca);
      const float *b = (I.op == OP_ADD || I.op == OP_MUL)
          ? slot_ptr(I.b_kind, I.b_index, p, statics, vals, consts, off, &cb) : NULL;
      const long lo = f_done[k] * row, hi = to * row;
      if (is_pool(I.op))
        pool3_rows(a, vals[k], pidx[k], H, W, C, f_done[k], to,
                   I.op == OP_MAXPOOL ? 1.0f : -1.0f, 0);
      else
        fwd_elem(I.op, vals[k], a, ca, b, cb, lo, hi, C);
      if (k == out) {
        for (long i = lo; i < hi; i++) *loss += vals[k][i];
        for (long i = lo; i < hi; i++) adj[k][i] = 1.0f;
      } else {
        memset(adj[k] + lo, 0, sizeof(float) * (hi - lo));
      }
      f_done[k] = to;
    }
    /* backward, in reverse program order, each node lagging its adjoint's completion */
    for (int k = n_instr - 1; k >= 0; k--) {
      int to = e - back[k];
      to = to < H ? to : H;
      if (to <= b_done[k]) continue;
      const instr_t I = prog[k];
      float ca = 0.0f, cb = 0.0f;
      const float *a = slot_ptr(I.a_kind, I.a_index, p, statics, vals, consts, off, &ca);
      float *ga = I.a_kind == SLOT_NODE ? adj[I.a_index] : I.a_kind == SLOT_YHAT ? gp : NULL;
      const long lo = b_done[k] * row, hi = to * row;
      if (is_pool(I.op)) {
        if (ga) {
          const float *g = adj[k];
          const int32_t *ix = pidx[k];
          for (long i = lo; i < hi; i++) ga[ix[i]] += g[i];
        }
      } else {
        const float *b = NULL;
        float *gb = NULL;
        if (I.op == OP_ADD || I.op == OP_MUL) {
          b = slot_ptr(I.b_kind, I.b_index, p, statics, vals, consts, off, &cb);
          gb = I.b_kind == SLOT_NODE ? adj[I.b_index] : I.b_kind == SLOT_YHAT ? gp : NULL;
        }
        bwd_elem(I.op, adj[k], vals[k], a, ca, b, cb, ga, gb, lo, hi, C);
      }
      b_done[k] = to;
    }
    /* softmax backward and update of the rows whose yhat adjoint is complete */
    int to = e - back_y;
    to = to < H ? to : H;
    if (to > upd_done) {
      update_range(p, gp, z, buf, upd_done * row, to * row, C, first, lr, momentum, bad, gmax);
      upd_done = to;
    }
    if (upd_done >= H) break;
  }
}

/* Returns the number of iterations run. status: 0 completed, 1 non-finite, 2 zero gradient at
 * the start. */
int alz_reject_run(float *z, float *buf, int N, int H, int W, int C, float *const *statics,
                   const float *consts, const instr_t *prog, int n_instr, int iterations,
                   float lr, float momentum, int mode, int *status) {
  /* mode 0: per-pixel program, small blocks of pixels; 1: 3x3 pooling mixes neighbouring rows,
   * each image streamed in bands of rows; 2: mean over N, H, W mixes everything, the whole
   * tensor is one block */
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
    pidx[k] = is_pool(prog[k].op) ? malloc(sizeof(int32_t) * n) : NULL;
  }
  /* mode 1's pipeline lags: lag[k] = pooling depth of node k; back[k] = rows its adjoint
   * trails the softmax (every consumer's back, plus one behind a pooling consumer) */
  int lag[MAX_SLOTS] = {0}, back[MAX_SLOTS], back_y = 0;
  for (int k = 0; k < n_instr; k++) {
    const instr_t I = prog[k];
    int l = I.a_kind == SLOT_NODE ? lag[I.a_index] : 0;
    if ((I.op == OP_ADD || I.op == OP_MUL) && I.b_kind == SLOT_NODE && lag[I.b_index] > l)
      l = lag[I.b_index];
    lag[k] = l + is_pool(I.op);
    back[k] = -1;
  }
  back[n_instr - 1] = lag[n_instr - 1];
  for (int k = n_instr - 1; k >= 0; k--) {
    const instr_t I = prog[k];
    if (back[k] < 0) back[k] = lag[n_instr - 1]; /* unused value: its adjoint stays zero */
    const int need = back[k] + is_pool(I.op);
    const int kinds[2] = {I.a_kind, (I.op == OP_ADD || I.op == OP_MUL) ? I.b_kind : -1};
    const int index[2] = {I.a_index, I.b_index};
    for (int s = 0; s < 2; s++) {
      if (kinds[s] == SLOT_NODE && back[index[s]] < need) back[index[s]] = need;
      if (kinds[s] == SLOT_YHAT && back_y < need) back_y = need;
    }
  }
  *status = 0;
  int it;
  for (it = 0; it < iterations; it++) {
    double loss = 0.0;
    float gmax = 0.0f;
    int bad = 0;
    if (mode == 1) {
      const long image = (long)H * W * C;
      for (int img = 0; img < N; img++)
        banded_image(z + img * image, buf + img * image, H, W, C, statics, consts, prog,
                     n_instr, img * image, p, gp, vals, adj, pidx, lag, back, back_y, it == 0,
                     lr, momentum, &loss, &bad, &gmax);
    } else {
      for (long px0 = 0; px0 < P; px0 += block) {
        const long npx = (P - px0) < block ? (P - px0) : block;
        const long m = npx * C, off = px0 * C;
        softmax_range(z + off, p, 0, m, C);
        /* forward */
        for (int k = 0; k < n_instr; k++) {
          const instr_t I = prog[k];
          float ca = 0.0f, cb = 0.0f;
          const float *a = slot_ptr(I.a_kind, I.a_index, p, statics, vals, consts, off, &ca);
          const float *b = (I.op == OP_ADD || I.op == OP_MUL)
              ? slot_ptr(I.b_kind, I.b_index, p, statics, vals, consts, off, &cb) : NULL;
          float *o = vals[k];
          if (I.op == OP_MEAN_NHW) {
            double sum[C];
            float mean[C];
            for (int c = 0; c < C; c++) sum[c] = 0.0;
            for (long q = 0; q < npx; q++)
              for (int c = 0; c < C; c++) sum[c] += a[q * C + c];
            for (int c = 0; c < C; c++) mean[c] = (float)(sum[c] / (double)npx);
            for (long q = 0; q < npx; q++)
              for (int c = 0; c < C; c++) o[q * C + c] = mean[c];
          } else if (is_pool(I.op)) {
            pool3(a, o, pidx[k], block_images, H, W, C, I.op == OP_MAXPOOL ? 1.0f : -1.0f);
          } else {
            fwd_elem(I.op, o, a, ca, b, cb, 0, m, C);
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
          const float *g = adj[k];
          float ca = 0.0f, cb = 0.0f;
          const float *a = slot_ptr(I.a_kind, I.a_index, p, statics, vals, consts, off, &ca);
          float *ga = I.a_kind == SLOT_NODE ? adj[I.a_index] : I.a_kind == SLOT_YHAT ? gp : NULL;
          if (I.op == OP_MEAN_NHW) {
            if (!ga) continue;
            double sum[C];
            float share[C];
            for (int c = 0; c < C; c++) sum[c] = 0.0;
            for (long q = 0; q < npx; q++)
              for (int c = 0; c < C; c++) sum[c] += g[q * C + c];
            for (int c = 0; c < C; c++) share[c] = (float)(sum[c] / (double)npx);
            for (long q = 0; q < npx; q++)
              for (int c = 0; c < C; c++) ga[q * C + c] += share[c];
          } else if (is_pool(I.op)) {
            if (!ga) continue;
            const int32_t *ix = pidx[k];
            for (long i = 0; i < m; i++) ga[ix[i]] += g[i];
          } else {
            const float *b = NULL;
            float *gb = NULL;
            if (I.op == OP_ADD || I.op == OP_MUL) {
              b = slot_ptr(I.b_kind, I.b_index, p, statics, vals, consts, off, &cb);
              gb = I.b_kind == SLOT_NODE ? adj[I.b_index] : I.b_kind == SLOT_YHAT ? gp : NULL;
            }
            bwd_elem(I.op, g, vals[k], a, ca, b, cb, ga, gb, 0, m, C);
          }
        }
        update_range(p, gp, z + off, buf + off, 0, m, C, it == 0, lr, momentum, &bad, &gmax);
      }
    }
    if (!(fabs(loss) <= 3.4028234663852886e38) || bad) { *status = 1; it++; break; }
    if (it == 0 && gmax == 0.0f) { *status = 2; it++; break; }
  }
  for (int k = 0; k < n_instr; k++) { free(vals[k]); free(adj[k]); free(pidx[k]); }
  free(p);
  free(gp);
  return it;
}
