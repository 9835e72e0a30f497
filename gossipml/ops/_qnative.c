/* Fused single-pass b-bit block quantization for gossipml.ops.quantize (optional; torch is the
 * fallback). Same arithmetic as the torch path, element by element:
 *   lo = min(x_b), scale = (max(x_b) - lo) / levels, inv = nan_to_num(1 / scale) * SHRINK,
 *   bias = 0.5 - lo * inv, code = trunc(clamp(bias + x * inv, 0, levels)), 0 for NaN (what
 *   torch's float -> uint8 copy gives on x86-64);
 *   decode: lo + code * scale.
 * `fused` selects a single-rounding fmaf for the two "a + b * c" steps, matching torch builds
 * whose addcmul kernels contract to FMA (the Python side probes torch once and passes the flag).
 * Arguments are raw addresses (tensor.data_ptr()) and sizes; the caller guarantees that they
 * point to contiguous buffers of the stated lengths. The GIL is released around the loops.
 * Build with -O3 -ffp-contract=off -fno-trapping-math (plain C, any GCC/clang target): the code
 * and decode loops auto-vectorize; min/max uses generic 4-float vectors. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#define SHRINK_F (1.0f - 0x1p-20f)
#define ALWAYS_INLINE static inline __attribute__((always_inline))

ALWAYS_INLINE float mul_add(float a, float b, float c, int fused)
{
    return fused ? fmaf(a, b, c) : c + a * b;
}

/* Torch's float -> uint8 copy on x86-64: truncate to int32 (INT32_MIN when out of range or
 * NaN), keep the low byte. Written branch-free so it vectorizes. */
ALWAYS_INLINE uint8_t to_code(float w)
{
    int ok = (w > -2147483904.0f) & (w < 2147483648.0f);
    float safe = ok ? w : 0.0f;
    int32_t t = (int32_t)safe;
    return ok ? (uint8_t)(uint32_t)t : 0;
}

/* GCC/clang generic vectors (SSE2, NEON, or scalar emulation): the min/max reduction does not
 * auto-vectorize without -ffinite-math-only, which would break the NaN/inf handling. */
typedef float vf4 __attribute__((vector_size(16)));
typedef int32_t vi4 __attribute__((vector_size(16)));

ALWAYS_INLINE vf4 vsel(vi4 mask, vf4 a, vf4 b) { return (vf4)((mask & (vi4)a) | (~mask & (vi4)b)); }
ALWAYS_INLINE vf4 vload(const float *p) { vf4 v; memcpy(&v, p, sizeof v); return v; }

/* min, max over one block; inf compares normally and NaN propagates (torch.amin/amax). */
ALWAYS_INLINE void block_minmax(const float *x, Py_ssize_t m, float *lo, float *hi)
{
    const vf4 pinf = {INFINITY, INFINITY, INFINITY, INFINITY};
    vf4 mn0 = pinf, mn1 = pinf, mx0 = -pinf, mx1 = -pinf;
    vf4 bad0 = {0.0f, 0.0f, 0.0f, 0.0f}, bad1 = bad0;
    Py_ssize_t i = 0;
    for (; i + 8 <= m; i += 8) {
        vf4 v = vload(x + i), w = vload(x + i + 4);
        mn0 = vsel(v < mn0, v, mn0);
        mn1 = vsel(w < mn1, w, mn1);
        mx0 = vsel(v > mx0, v, mx0);
        mx1 = vsel(w > mx1, w, mx1);
        bad0 += v - v; /* 0 for finite values, NaN (sticky) for inf / NaN */
        bad1 += w - w;
    }
    float a = INFINITY, b = -INFINITY, s = 0.0f;
    for (; i < m; i++) {
        float v = x[i];
        a = v < a ? v : a;
        b = v > b ? v : b;
        s += v - v;
    }
    for (int j = 0; j < 4; j++) {
        a = mn0[j] < a ? mn0[j] : a;
        a = mn1[j] < a ? mn1[j] : a;
        b = mx0[j] > b ? mx0[j] : b;
        b = mx1[j] > b ? mx1[j] : b;
        s += bad0[j] + bad1[j];
    }
    if (s != 0.0f) { /* rare: inf or NaN present; any NaN makes lo and hi NaN */
        for (i = 0; i < m; i++) {
            if (x[i] != x[i]) {
                a = b = NAN;
                break;
            }
        }
    }
    *lo = a;
    *hi = b;
}

ALWAYS_INLINE void quantize_all(const float *src, Py_ssize_t n, int levels, Py_ssize_t block,
                                uint8_t *codes, float *lo_out, float *scale_out, int fused)
{
    Py_ssize_t nb = 0;
    for (Py_ssize_t start = 0; start < n; start += block, nb++) {
        Py_ssize_t m = n - start < block ? n - start : block;
        const float *x = src + start;
        uint8_t *c = codes + start;
        float lo, hi;
        block_minmax(x, m, &lo, &hi);
        float scale = (hi - lo) / (float)levels;
        float inv = 1.0f / scale;
        if (!(inv <= FLT_MAX))
            inv = 0.0f; /* nan_to_num: constant block (scale 0) -> codes 0 */
        inv = inv * SHRINK_F;
        float bias = mul_add(-lo, inv, 0.5f, fused);
        float top = (float)levels;
        for (Py_ssize_t i = 0; i < m; i++) {
            float w = mul_add(x[i], inv, bias, fused);
            w = w < 0.0f ? 0.0f : w; /* clamp like torch.clamp_: NaN stays NaN (-> code 0) */
            w = w > top ? top : w;
            c[i] = to_code(w);
        }
        lo_out[nb] = lo;
        scale_out[nb] = scale;
    }
}

ALWAYS_INLINE void dequantize_all(const uint8_t *codes, Py_ssize_t n, Py_ssize_t block,
                                  const float *lo, const float *scale, float *out, int fused)
{
    Py_ssize_t nb = 0;
    for (Py_ssize_t start = 0; start < n; start += block, nb++) {
        Py_ssize_t m = n - start < block ? n - start : block;
        const uint8_t *c = codes + start;
        float *o = out + start;
        float l = lo[nb], s = scale[nb];
        for (Py_ssize_t i = 0; i < m; i++)
            o[i] = mul_add((float)c[i], s, l, fused);
    }
}

typedef void (*quant_fn)(const float *, Py_ssize_t, int, Py_ssize_t, uint8_t *, float *, float *);
typedef void (*dequant_fn)(const uint8_t *, Py_ssize_t, Py_ssize_t, const float *, const float *,
                           float *);

static void q_plain(const float *s, Py_ssize_t n, int lv, Py_ssize_t b, uint8_t *c, float *l,
                    float *sc) { quantize_all(s, n, lv, b, c, l, sc, 0); }
static void q_fma(const float *s, Py_ssize_t n, int lv, Py_ssize_t b, uint8_t *c, float *l,
                  float *sc) { quantize_all(s, n, lv, b, c, l, sc, 1); }
static void d_plain(const uint8_t *c, Py_ssize_t n, Py_ssize_t b, const float *l,
                    const float *s, float *o) { dequantize_all(c, n, b, l, s, o, 0); }
static void d_fma(const uint8_t *c, Py_ssize_t n, Py_ssize_t b, const float *l, const float *s,
                  float *o) { dequantize_all(c, n, b, l, s, o, 1); }

#if defined(__x86_64__) && defined(__GNUC__)
#define HAVE_X86_FMA 1
/* Hardware FMA clones (runtime-selected): without them fmaf is a libm call per element. */
__attribute__((target("avx2,fma"))) static void q_fma_x86(const float *s, Py_ssize_t n, int lv,
    Py_ssize_t b, uint8_t *c, float *l, float *sc) { quantize_all(s, n, lv, b, c, l, sc, 1); }
__attribute__((target("avx2,fma"))) static void d_fma_x86(const uint8_t *c, Py_ssize_t n,
    Py_ssize_t b, const float *l, const float *s, float *o) { dequantize_all(c, n, b, l, s, o, 1); }
__attribute__((target("avx2"))) static void q_plain_x86(const float *s, Py_ssize_t n, int lv,
    Py_ssize_t b, uint8_t *c, float *l, float *sc) { quantize_all(s, n, lv, b, c, l, sc, 0); }
__attribute__((target("avx2"))) static void d_plain_x86(const uint8_t *c, Py_ssize_t n,
    Py_ssize_t b, const float *l, const float *s, float *o) { dequantize_all(c, n, b, l, s, o, 0); }

static int x86_avx2_fma(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}
#else
#define HAVE_X86_FMA 0
#endif

static quant_fn pick_quant(int fused)
{
#if HAVE_X86_FMA
    if (x86_avx2_fma())
        return fused ? q_fma_x86 : q_plain_x86;
#endif
    return fused ? q_fma : q_plain;
}

static dequant_fn pick_dequant(int fused)
{
#if HAVE_X86_FMA
    if (x86_avx2_fma())
        return fused ? d_fma_x86 : d_plain_x86;
#endif
    return fused ? d_fma : d_plain;
}

PyDoc_STRVAR(quantize_doc,
    "quantize(src_addr, n, bits, block, codes_addr, lo_addr, scale_addr, fused=0) -> None\n"
    "Quantize n float32 at src_addr to uint8 codes plus per-block float32 lo/scale.");

static PyObject *py_quantize(PyObject *self, PyObject *args)
{
    unsigned long long src, codes, lo, scale;
    Py_ssize_t n, block;
    int bits, fused = 0;
    if (!PyArg_ParseTuple(args, "KninKKK|p", &src, &n, &bits, &block, &codes, &lo, &scale,
                          &fused))
        return NULL;
    if (n < 0 || block < 1 || bits < 1 || bits > 8) {
        PyErr_Format(PyExc_ValueError, "quantize: need n >= 0, block >= 1, bits in 1..8; got "
                     "n=%zd block=%zd bits=%d", n, block, bits);
        return NULL;
    }
    quant_fn fn = pick_quant(fused);
    Py_BEGIN_ALLOW_THREADS
    fn((const float *)(uintptr_t)src, n, (1 << bits) - 1, block, (uint8_t *)(uintptr_t)codes,
       (float *)(uintptr_t)lo, (float *)(uintptr_t)scale);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

PyDoc_STRVAR(dequantize_doc,
    "dequantize(codes_addr, n, block, lo_addr, scale_addr, out_addr, fused=0) -> None\n"
    "out[i] = lo[i // block] + codes[i] * scale[i // block] as float32.");

static PyObject *py_dequantize(PyObject *self, PyObject *args)
{
    unsigned long long codes, lo, scale, out;
    Py_ssize_t n, block;
    int fused = 0;
    if (!PyArg_ParseTuple(args, "KnnKKK|p", &codes, &n, &block, &lo, &scale, &out, &fused))
        return NULL;
    if (n < 0 || block < 1) {
        PyErr_Format(PyExc_ValueError, "dequantize: need n >= 0 and block >= 1; got n=%zd "
                     "block=%zd", n, block);
        return NULL;
    }
    dequant_fn fn = pick_dequant(fused);
    Py_BEGIN_ALLOW_THREADS
    fn((const uint8_t *)(uintptr_t)codes, n, block, (const float *)(uintptr_t)lo,
       (const float *)(uintptr_t)scale, (float *)(uintptr_t)out);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

PyDoc_STRVAR(variant_doc, "variant() -> str\nWhich compiled kernels run here.");

static PyObject *py_variant(PyObject *self, PyObject *noargs)
{
#if HAVE_X86_FMA
    if (x86_avx2_fma())
        return PyUnicode_FromString("x86-64 avx2+fma clones");
#endif
    return PyUnicode_FromString("portable C");
}

static PyMethodDef methods[] = {
    {"quantize", py_quantize, METH_VARARGS, quantize_doc},
    {"dequantize", py_dequantize, METH_VARARGS, dequantize_doc},
    {"variant", py_variant, METH_NOARGS, variant_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_qnative",
    "Fused single-pass block quantization kernels for gossipml.ops.quantize.", -1, methods,
};

PyMODINIT_FUNC PyInit__qnative(void) { return PyModule_Create(&module); }
